//! Issue 4, "impossible to knock over": the real server binary, started on 127.0.0.1:0, fed random and broken bodies, huge shapes and deep nesting, left idle,
//! abandoned mid-run, loaded from many tasks at once, and shut down while it trains.
//!
//! Tests whose assertions are about time or memory (the server's resident set) take [`harness::exclusive`]; the others take [`harness::shared`], so a timing
//! bound never measures another test's load.

#[path = "support/server.rs"]
mod server;

#[path = "support/timing.rs"]
mod timing;

#[path = "robustness/harness.rs"]
mod harness;

#[path = "robustness/bounds.rs"]
mod bounds;
#[path = "robustness/concurrency.rs"]
mod concurrency;
#[path = "robustness/disconnect.rs"]
mod disconnect;
#[path = "robustness/expiry.rs"]
mod expiry;
#[path = "robustness/memcap.rs"]
mod memcap;
#[path = "robustness/props.rs"]
mod props;
#[path = "robustness/shutdown.rs"]
mod shutdown;
