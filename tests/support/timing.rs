//! What the test binaries that start servers share about timing: a lock that ordinary tests
//! hold shared and the ones that measure time or memory hold alone, and the base settings.

use backprop_server::Config;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Held shared by ordinary tests and exclusively by those that measure time or memory.
/// tokio's lock is fair, so a waiting exclusive test is not starved by readers.
static TIMING: RwLock<()> = RwLock::const_new(());

pub async fn shared() -> RwLockReadGuard<'static, ()> {
    TIMING.read().await
}

pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().await
}

/// Two workers (the machine has two cores) and no idle expiry; the timeouts and the rest
/// are each test's own.
pub fn config() -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    }
}
