//! A session's loss history: one append-only log shared by all the session's snapshots.
//!
//! A snapshot holds the log and the length it committed, so a train appends its new losses
//! instead of copying up to a million old ones, and a snapshot taken before the train still
//! sees exactly its own prefix. The log only grows while the session's writer lock is held;
//! should it already have grown past this snapshot's length (two forks of one snapshot, both
//! trained on), the appender copies its prefix into a log of its own, so no snapshot ever
//! sees another's entries.

use std::sync::{Arc, PoisonError, RwLock};

#[derive(Debug, Clone, Default)]
pub struct History {
    log: Arc<RwLock<Vec<f64>>>,
    len: usize,
    last: Option<f64>,
}

impl History {
    pub fn from_vec(losses: Vec<f64>) -> Self {
        Self {
            len: losses.len(),
            last: losses.last().copied(),
            log: Arc::new(RwLock::new(losses)),
        }
    }

    /// Entries in this snapshot's history.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last entry: the loss after the latest update.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// Runs `f` on this snapshot's entries. Holds the log's read lock meanwhile (an append
    /// waits), so keep `f` short: copy out, don't serialise in it.
    pub fn with<R>(&self, f: impl FnOnce(&[f64]) -> R) -> R {
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner);
        f(&log[..self.len])
    }

    /// Entries `start..end`, clamped to this snapshot's length.
    pub fn page(&self, start: usize, end: usize) -> Vec<f64> {
        let end = end.min(self.len);
        let start = start.min(end);
        self.with(|h| h[start..end].to_vec())
    }

    pub fn to_vec(&self) -> Vec<f64> {
        self.with(<[f64]>::to_vec)
    }

    /// This history with `losses` after it. Shares the log when this snapshot is its newest
    /// state (the normal case: one writer at a time); copies the prefix otherwise.
    pub fn appended(&self, losses: &[f64]) -> Self {
        let Some(&last) = losses.last() else {
            return self.clone();
        };
        let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
        let len = self.len + losses.len();
        let log = if log.len() == self.len {
            log.extend_from_slice(losses);
            self.log.clone()
        } else {
            let mut own = Vec::with_capacity(len);
            own.extend_from_slice(&log[..self.len]);
            own.extend_from_slice(losses);
            Arc::new(RwLock::new(own))
        };
        Self {
            log,
            len,
            last: Some(last),
        }
    }

    /// Whether both snapshots read the same log (for tests of the sharing).
    #[cfg(test)]
    fn shares_log_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.log, &other.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_shares_the_log_and_old_snapshots_keep_their_prefix() {
        let a = History::from_vec(vec![3.0, 2.0]);
        let b = a.appended(&[1.5, 1.0]);
        assert!(b.shares_log_with(&a), "a train must append, not copy");
        assert_eq!(a.to_vec(), vec![3.0, 2.0]);
        assert_eq!(a.last(), Some(2.0));
        assert_eq!(b.to_vec(), vec![3.0, 2.0, 1.5, 1.0]);
        assert_eq!((b.len(), b.last()), (4, Some(1.0)));
        assert_eq!(b.page(1, 3), vec![2.0, 1.5]);
        assert_eq!(b.page(3, 99), vec![1.0]);
        assert_eq!(b.page(7, 99), Vec::<f64>::new());
    }

    #[test]
    fn appending_to_a_snapshot_that_is_not_the_newest_copies_its_prefix() {
        let base = History::from_vec(vec![5.0]);
        let fork = base.clone();
        let trained = base.appended(&[4.0]);
        let fork_trained = fork.appended(&[9.0, 8.0]);
        assert!(!fork_trained.shares_log_with(&trained));
        assert_eq!(trained.to_vec(), vec![5.0, 4.0]);
        assert_eq!(fork_trained.to_vec(), vec![5.0, 9.0, 8.0]);
        assert_eq!(base.to_vec(), vec![5.0]);
        assert_eq!(fork_trained.appended(&[]).to_vec(), vec![5.0, 9.0, 8.0]);
    }
}
