//! The open-file limit: raised to its hard limit at start, and most of it given to connections.
//!
//! Every connection is a file descriptor. The soft limit is often 1,024 while the hard limit
//! (what an unprivileged process may raise it to) is far higher, so the server raises it
//! first; then `--max-connections` defaults to that limit less a reserve for what the server
//! itself opens (its database and its files, the listener, the runtime's own descriptors).

/// A server that cannot raise its limit still runs, with what it has; this is what it
/// assumes when it cannot even read it (Linux's usual default).
const ASSUMED_LIMIT: u64 = 1024;

/// The reserve is this fraction of the limit...
const RESERVE_DIVISOR: u64 = 8;
/// ...and at least this many descriptors.
const RESERVE_MIN: u64 = 64;

/// The soft open-file limit before and after [`raise_open_file_limit`], and the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub was: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit and logs both.
pub fn raise_open_file_limit() -> OpenFileLimit {
    let Ok((was, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        tracing::warn!(
            assumed = ASSUMED_LIMIT,
            "cannot read the open-file limit; assuming the usual default"
        );
        return OpenFileLimit {
            was: ASSUMED_LIMIT,
            now: ASSUMED_LIMIT,
            hard: ASSUMED_LIMIT,
        };
    };
    let now = match rlimit::increase_nofile_limit(hard) {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(soft = was, hard, error = %e, "cannot raise the open-file limit");
            was
        }
    };
    tracing::info!(soft_was = was, soft = now, hard, "open-file limit");
    OpenFileLimit { was, now, hard }
}

/// The default `--max-connections` for an open-file limit of `limit`: the limit less a
/// reserve of an eighth of it, at least 64 (1,024 gives 896; 20,000 gives 17,500).
pub fn default_max_connections(limit: u64) -> u64 {
    let reserve = (limit / RESERVE_DIVISOR).max(RESERVE_MIN);
    limit.saturating_sub(reserve).max(1)
}

/// The reserve [`default_max_connections`] keeps out of `limit`.
pub fn reserve(limit: u64) -> u64 {
    limit - default_max_connections(limit).min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keeps_an_eighth_of_the_limit_and_at_least_64() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(20_000), 17_500);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(100), 36);
        assert_eq!(default_max_connections(10), 1);
        assert_eq!(reserve(1024), 128);
        assert_eq!(reserve(100), 64);
    }
}
