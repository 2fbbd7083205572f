//! Issue 13, "slow and idle connections cannot take the server down": the real binary, held
//! to a small open-file limit with prlimit where it matters, against half-open connections,
//! trickling bodies, idle and well-behaved kept-alive clients, and more connections than it
//! may hold.
//!
//! `cargo test --release --test connections -- --nocapture` prints the figures: connections
//! held at once under 1,024 open files, `/healthz` latency during the attack, memory per held
//! connection.

#[path = "support/server.rs"]
mod server;

#[path = "support/timing.rs"]
mod timing;

#[path = "connections/client.rs"]
mod client;

#[path = "connections/attack.rs"]
mod attack;

#[path = "connections/timeouts.rs"]
mod timeouts;

#[path = "connections/limit.rs"]
mod limit;
