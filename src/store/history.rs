//! The history cache: vehicles' closed bins as read back from the store for the pages, decoded,
//! within a configured number of bytes (`state.cache_mb`), the least recently read let go
//! first. The engine keeps only what the next record needs (docs/design.md §7); a page of a
//! vehicle whose closed bins left memory reads them here. A commit that writes a vehicle's bins
//! drops its entry, and a read that raced such a commit is not kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::engine::BinMap;
use crate::partition_id::PartitionId;

type Key = (PartitionId, String);

/// What the cache holds and has done, for its metrics and its tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub capacity_bytes: usize,
    pub resident_bytes: usize,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// Closed bins by (partition, vehicle), least recently read first out.
pub struct HistoryCache {
    inner: Mutex<Lru>,
    metrics: Option<crate::metrics::Metrics>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, Entry>,
    /// Read order: tick -> key.
    order: BTreeMap<u64, Key>,
    tick: u64,
    /// Raised by every invalidation: a read that began before one is not kept.
    generation: u64,
    stats: CacheStats,
}

struct Entry {
    bins: Arc<BinMap>,
    bytes: usize,
    tick: u64,
}

/// What an entry costs: its bins, its key, and the bookkeeping around them.
fn entry_bytes(key: &Key, bins: &BinMap) -> usize {
    const OVERHEAD: usize = 128;
    OVERHEAD + key.1.len() + bins.len() * std::mem::size_of::<(i64, crate::engine::BinStats)>()
}

impl HistoryCache {
    pub fn new(capacity_bytes: usize) -> HistoryCache {
        HistoryCache {
            inner: Mutex::new(Lru {
                stats: CacheStats {
                    capacity_bytes,
                    ..CacheStats::default()
                },
                ..Lru::default()
            }),
            metrics: None,
        }
    }

    /// Mirrors what the cache holds and does into `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> HistoryCache {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// The bins of `key`, from the cache or else from `load` (then kept, if they fit and no
    /// commit changed them meanwhile).
    pub fn get_or_load<E>(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        load: impl FnOnce() -> Result<BinMap, E>,
    ) -> Result<Arc<BinMap>, E> {
        let key = (partition, vehicle_id.to_string());
        let generation = {
            let mut lru = self.lock();
            if let Some(bins) = lru.touch(&key) {
                lru.stats.hits += 1;
                self.publish(&lru, Some("hit"));
                return Ok(bins);
            }
            lru.stats.misses += 1;
            self.publish(&lru, Some("miss"));
            lru.generation
        };
        let bins = Arc::new(load()?);
        let mut lru = self.lock();
        if lru.generation == generation {
            let evicted = lru.insert(key, Arc::clone(&bins));
            if let Some(metrics) = &self.metrics {
                metrics.history_cache_evictions.inc_by(evicted);
            }
            self.publish(&lru, None);
        }
        Ok(bins)
    }

    /// Whether it holds any entry (else a write has none to drop).
    pub fn holds_any(&self) -> bool {
        !self.lock().entries.is_empty()
    }

    /// A write reached the store: the entries of the vehicles whose bins it changed go
    /// (`None`: it may have changed any, all go), and reads begun before it are not kept.
    pub fn after_write(&self, changed: Option<&[(PartitionId, String)]>) {
        let mut lru = self.lock();
        lru.generation += 1;
        if lru.entries.is_empty() {
            return;
        }
        match changed {
            Some(changed) => {
                for key in changed {
                    lru.remove(key);
                }
            }
            None => {
                lru.entries.clear();
                lru.order.clear();
                lru.stats.resident_bytes = 0;
                lru.stats.entries = 0;
            }
        }
        self.publish(&lru, None);
    }

    /// The cache's bytes into its metrics, and `read`'s result (hit or miss) if it was one.
    fn publish(&self, lru: &Lru, read: Option<&str>) {
        if let Some(metrics) = &self.metrics {
            metrics
                .history_cache_bytes
                .set(lru.stats.resident_bytes as i64);
            if let Some(read) = read {
                metrics.history_cache_reads.with_label_values(&[read]).inc();
            }
        }
    }
}

impl Lru {
    fn touch(&mut self, key: &Key) -> Option<Arc<BinMap>> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        let key = self
            .order
            .remove(&entry.tick)
            .expect("every entry is in the order");
        entry.tick = tick;
        self.order.insert(tick, key);
        Some(Arc::clone(&entry.bins))
    }

    /// Keeps `bins` under `key`, letting the least recently read go until they fit; returns
    /// how many went. Bins larger than the whole cache are not kept.
    fn insert(&mut self, key: Key, bins: Arc<BinMap>) -> u64 {
        let bytes = entry_bytes(&key, &bins);
        if bytes > self.stats.capacity_bytes {
            return 0;
        }
        self.remove(&key);
        let mut evicted = 0;
        while self.stats.resident_bytes + bytes > self.stats.capacity_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            let entry = self.entries.remove(&oldest).expect("ordered entries exist");
            self.stats.resident_bytes -= entry.bytes;
            evicted += 1;
        }
        self.stats.evictions += evicted;
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                bins,
                bytes,
                tick: self.tick,
            },
        );
        self.stats.resident_bytes += bytes;
        self.stats.entries = self.entries.len();
        evicted
    }

    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.tick);
            self.stats.resident_bytes -= entry.bytes;
            self.stats.entries = self.entries.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BinStats;

    fn bins(n: i64) -> BinMap {
        let mut bins = BinMap::default();
        for b in 0..n {
            bins.insert(
                b,
                BinStats {
                    trips: b as u64,
                    ..BinStats::default()
                },
            );
        }
        bins
    }

    fn load(n: i64) -> impl FnOnce() -> Result<BinMap, ()> {
        move || Ok(bins(n))
    }

    #[test]
    fn it_stays_within_its_bytes_letting_the_least_recently_read_go() {
        let p = PartitionId::Source(0);
        let one = entry_bytes(&(p, "v0".into()), &bins(10));
        let cache = HistoryCache::new(3 * one);
        for v in ["v0", "v1", "v2"] {
            cache.get_or_load(p, v, load(10)).unwrap();
        }
        // v0 read again: v1 is now the least recently read, and goes for v3.
        cache.get_or_load(p, "v0", load(10)).unwrap();
        cache.get_or_load(p, "v3", load(10)).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (3, 1));
        assert!(stats.resident_bytes <= stats.capacity_bytes);
        let mut loaded = false;
        cache
            .get_or_load(p, "v1", || {
                loaded = true;
                Ok::<_, ()>(bins(10))
            })
            .unwrap();
        assert!(loaded, "v1 was let go");
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn a_read_that_a_commit_overtook_is_not_kept() {
        let p = PartitionId::Source(2);
        let cache = HistoryCache::new(1 << 20);
        // The commit lands while the bins are read: what was read may be the older bins.
        let got = cache
            .get_or_load(p, "v", || {
                cache.after_write(Some(&[(p, "v".to_string())]));
                Ok::<_, ()>(bins(3))
            })
            .unwrap();
        assert_eq!(got.len(), 3, "answered");
        assert_eq!(cache.stats().entries, 0, "not kept");
        cache.get_or_load(p, "v", load(3)).unwrap();
        assert_eq!(cache.stats().entries, 1, "a read after the commit is kept");
    }

    #[test]
    fn a_commit_drops_the_entry_and_what_is_larger_than_the_cache_is_not_kept() {
        let p = PartitionId::Source(1);
        let cache = HistoryCache::new(entry_bytes(&(p, "v".into()), &bins(4)));
        cache.get_or_load(p, "v", load(4)).unwrap();
        cache.after_write(Some(&[(p, "v".to_string())]));
        assert_eq!(cache.stats().resident_bytes, 0);
        let got = cache.get_or_load(p, "w", load(40)).unwrap();
        assert_eq!(got.len(), 40, "still answered");
        assert_eq!(cache.stats().entries, 0, "but not kept");
    }
}
