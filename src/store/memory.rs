//! The in-process map of sessions (and, for `--database memory`, of keys).
//!
//! With `memory` this is the whole truth; with a database it is a cache of the sessions
//! requests have named, in front of it. Its mutexes are held only for a lookup, an insert,
//! a removal or a listing, never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Entry, KeyRecord, Owner, Quota, StoreError, StoreResult};

#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Arc<Entry>>>,
    /// Creation order for `memory` (the database numbers its own).
    next_seq: AtomicI64,
    /// Deletes begun so far: a session read from the database while one ran is not cached,
    /// since that delete may have removed it after it was read.
    deletes: AtomicU64,
    /// Bytes the entries in the map hold (each counted in on insertion, out on removal).
    held: AtomicU64,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.map().get(id).cloned()
    }

    /// The bytes the entries in the map hold.
    pub fn held(&self) -> &AtomicU64 {
        &self.held
    }

    fn added(&self, entry: &Arc<Entry>) -> Arc<Entry> {
        entry.count_in(&self.held);
        entry.clone()
    }

    fn removed(&self, entry: Arc<Entry>) -> Arc<Entry> {
        entry.count_out(&self.held);
        entry
    }

    /// Removes entries nothing but the map holds (no request, no change), least recently
    /// touched first, until `bytes` are freed; returns what was freed.
    pub fn shed(&self, bytes: u64) -> u64 {
        let mut map = self.map();
        let mut idle: Vec<(i64, String)> = map
            .values()
            .filter(|e| Arc::strong_count(e) == 1 && !e.is_changing())
            .map(|e| (e.touched(), e.id.clone()))
            .collect();
        idle.sort_unstable();
        let mut freed = 0;
        for (_, id) in idle {
            if freed >= bytes {
                break;
            }
            if let Some(e) = map.remove(&id) {
                freed += e.bytes();
                self.removed(e);
            }
        }
        freed
    }

    /// For `memory`: adds the entry `make(seq)` unless the server or the owner holds its
    /// limit, deciding under one guard so concurrent creates cannot pass it together.
    pub fn insert_capped(
        &self,
        max: usize,
        owner: Option<Owner<'_>>,
        make: impl FnOnce(i64) -> Entry,
    ) -> StoreResult<Arc<Entry>> {
        let mut map = self.map();
        if map.len() >= max {
            return Err(StoreError::TooManySessions {
                limit: max,
                quota: Quota::Server,
            });
        }
        if let Some(o) = owner.filter(|o| o.max_sessions != usize::MAX) {
            let held = map
                .values()
                .filter(|e| e.owner.as_deref() == o.name)
                .count();
            if held >= o.max_sessions {
                return Err(StoreError::TooManySessions {
                    limit: o.max_sessions,
                    quota: Quota::Key(o.name.map(str::to_owned)),
                });
            }
        }
        let entry = Arc::new(make(self.next_seq.fetch_add(1, Ordering::Relaxed)));
        map.insert(entry.id.clone(), self.added(&entry));
        Ok(entry)
    }

    /// Caches `entry` unless one for its id is there already; returns the cached one.
    pub fn insert_if_absent(&self, entry: Arc<Entry>) -> Arc<Entry> {
        let mut map = self.map();
        map.entry(entry.id.clone())
            .or_insert_with(|| self.added(&entry))
            .clone()
    }

    /// Caches an entry read from the database when no delete began since `deletes` was
    /// read (else it is returned uncached: the next request reads the database again).
    pub fn cache_unless_deleted(&self, entry: Arc<Entry>, deletes: u64) -> Arc<Entry> {
        let mut map = self.map();
        if self.deletes.load(Ordering::SeqCst) != deletes {
            return map.get(&entry.id).cloned().unwrap_or(entry);
        }
        map.entry(entry.id.clone())
            .or_insert_with(|| self.added(&entry))
            .clone()
    }

    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::SeqCst)
    }

    /// Called before a delete reaches the database.
    pub fn note_delete(&self) {
        self.deletes.fetch_add(1, Ordering::SeqCst);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Entry>> {
        let gone = self.map().remove(id);
        gone.map(|e| self.removed(e))
    }

    /// A page of sessions, newest first, and the total count (only `owner`'s, if given).
    pub fn page(
        &self,
        offset: usize,
        limit: usize,
        owner: Option<&str>,
    ) -> (Vec<Arc<Entry>>, usize) {
        let mut all: Vec<Arc<Entry>> = self
            .map()
            .values()
            .filter(|e| owner.is_none() || e.owner.as_deref() == owner)
            .cloned()
            .collect();
        let total = all.len();
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        (all.into_iter().skip(offset).take(limit).collect(), total)
    }

    pub fn count(&self, owner: Option<&str>) -> usize {
        let map = self.map();
        match owner {
            None => map.len(),
            Some(o) => map
                .values()
                .filter(|e| e.owner.as_deref() == Some(o))
                .count(),
        }
    }

    /// Keeps the entries `keep` says to; returns how many went.
    pub fn retain(&self, keep: impl Fn(&Entry) -> bool) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| {
            let kept = keep(e);
            if !kept {
                e.count_out(&self.held);
            }
            kept
        });
        before - map.len()
    }
}

/// Keys for `--database memory`, and the copy a sole writer (SQLite) keeps of its keys.
#[derive(Default)]
pub(super) struct Keys(Mutex<HashMap<String, KeyRecord>>);

impl Keys {
    fn map(&self) -> MutexGuard<'_, HashMap<String, KeyRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn create(&self, key: KeyRecord) -> StoreResult<KeyRecord> {
        let mut map = self.map();
        if map.contains_key(&key.name) {
            return Err(StoreError::KeyExists(key.name));
        }
        map.insert(key.name.clone(), key.clone());
        Ok(key)
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = self.map().values().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }

    pub fn delete(&self, name: &str) -> bool {
        self.map().remove(name).is_some()
    }

    pub fn by_hash(&self, hash: &str) -> Option<KeyRecord> {
        self.map().values().find(|k| k.hash == hash).cloned()
    }
}
