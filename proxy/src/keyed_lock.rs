//! Async locks by key, for "one at a time per repository" or "one fetch
//! per manifest": the first holder does the work, the others wait and then
//! find its result.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A set of async mutexes created on demand and dropped when unused.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: DashMap<String, Arc<Mutex<()>>>,
}

/// Holds one key's lock; dropping it releases the lock and, when nobody
/// else wants the key, forgets it so the map does not grow without bound.
pub struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let mutex = self.locks.entry(key.to_owned()).or_default().clone();
        let guard = mutex.lock_owned().await;
        KeyedGuard {
            owner: self,
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    /// Keys currently held or awaited.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no key is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Only the map's own reference left: nobody holds or waits for it.
        self.owner
            .locks
            .remove_if(&self.key, |_, mutex| Arc::strong_count(mutex) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time_and_nothing_left_behind() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = locks.lock("k").await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}
