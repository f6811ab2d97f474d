//! A byte-bounded LRU of decoded data (HDF5 chunks), shared by every dataset of a source and
//! by the read-ahead workers. A value being loaded is marked in flight, so that a reader
//! wanting it waits for the one decode instead of starting a second.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex};

/// A cached value in its own anonymous mapping. Long-lived values kept apart from the heap
/// leave malloc's arenas to short-lived buffers; mixed together, a churning cache leaves
/// freed memory resident and RSS grows well past the cache size. Dropping a value unmaps it.
pub enum CachedBytes {
    Mapped(memmap2::MmapMut),
    /// Small values, or when no mapping could be had.
    Heap(Box<[u8]>),
}

/// Values smaller than this stay on the heap: a mapping per small value would cost more
/// (a system call and a page fault each) than the fragmentation it avoids.
const MAP_FROM_BYTES: usize = 64 << 10;

impl CachedBytes {
    fn copy_of(bytes: Vec<u8>) -> Self {
        if bytes.len() < MAP_FROM_BYTES {
            return CachedBytes::Heap(bytes.into());
        }
        match memmap2::MmapMut::map_anon(bytes.len()) {
            Ok(mut map) => {
                map.copy_from_slice(&bytes);
                CachedBytes::Mapped(map)
            }
            Err(_) => CachedBytes::Heap(bytes.into()),
        }
    }
}

impl Deref for CachedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            CachedBytes::Mapped(map) => map,
            CachedBytes::Heap(bytes) => bytes,
        }
    }
}

/// What a cached value costs beyond its bytes (map entries, order entry, allocation): counted
/// too, so that a cache of many tiny chunks stays within its capacity in memory, not only
/// in payload.
const ENTRY_OVERHEAD: usize = 128;

fn charge(value: &CachedBytes) -> usize {
    value.len() + ENTRY_OVERHEAD
}

/// LRU by bytes: the least recently used values go first once `capacity` is exceeded. A value
/// larger than the whole capacity is never kept.
struct Lru<K> {
    capacity: usize,
    used: usize,
    tick: u64,
    values: HashMap<K, (Arc<CachedBytes>, u64)>,
    /// Last-use tick -> key, oldest first.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone> Lru<K> {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            used: 0,
            tick: 0,
            values: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn get(&mut self, key: &K) -> Option<Arc<CachedBytes>> {
        self.tick += 1;
        let (value, last_use) = self.values.get_mut(key)?;
        self.order.remove(last_use);
        *last_use = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    fn insert(&mut self, key: K, value: Arc<CachedBytes>) {
        if charge(&value) > self.capacity || self.values.contains_key(&key) {
            return;
        }
        while self.used + charge(&value) > self.capacity {
            self.evict_oldest();
        }
        self.tick += 1;
        self.used += charge(&value);
        self.order.insert(self.tick, key.clone());
        self.values.insert(key, (value, self.tick));
    }

    fn evict_oldest(&mut self) {
        let Some((_, key)) = self.order.pop_first() else {
            return;
        };
        if let Some((value, _)) = self.values.remove(&key) {
            self.used -= charge(&value);
        }
    }
}

struct State<K> {
    lru: Lru<K>,
    in_flight: HashSet<K>,
}

/// The shared cache of decoded chunks.
pub struct ChunkCache<K> {
    state: Mutex<State<K>>,
    loaded: Condvar,
}

impl<K: Hash + Eq + Clone> ChunkCache<K> {
    pub fn new(capacity_bytes: usize) -> Self {
        ChunkCache {
            state: Mutex::new(State {
                lru: Lru::new(capacity_bytes),
                in_flight: HashSet::new(),
            }),
            loaded: Condvar::new(),
        }
    }

    /// Whether `key` is cached or being loaded (read-ahead skips those).
    pub fn has_or_loading(&self, key: &K) -> bool {
        let state = self.state.lock().unwrap();
        state.in_flight.contains(key) || state.lru.values.contains_key(key)
    }

    /// The cached value of `key`, else the one `load` returns (cached for the next reader).
    /// While another thread loads `key`, waits for it rather than loading it twice.
    pub fn get_or_load<E>(
        &self,
        key: &K,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<CachedBytes>, E> {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(value) = state.lru.get(key) {
                return Ok(value);
            }
            if !state.in_flight.contains(key) {
                break;
            }
            state = self.loaded.wait(state).unwrap();
        }
        state.in_flight.insert(key.clone());
        drop(state);
        let loaded = load().map(|bytes| Arc::new(CachedBytes::copy_of(bytes)));
        let mut state = self.state.lock().unwrap();
        state.in_flight.remove(key);
        if let Ok(value) = &loaded {
            state.lru.insert(key.clone(), value.clone());
        }
        drop(state);
        self.loaded.notify_all();
        loaded
    }

    /// Drops `key`'s value, if cached (a value being loaded is left alone).
    pub fn remove(&self, key: &K) {
        let mut state = self.state.lock().unwrap();
        let lru = &mut state.lru;
        if let Some((value, last_use)) = lru.values.remove(key) {
            lru.order.remove(&last_use);
            lru.used -= charge(&value);
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.state.lock().unwrap().lru.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(n: usize) -> impl FnOnce() -> Result<Vec<u8>, ()> {
        move || Ok(vec![0; n])
    }

    #[test]
    fn removed_values_free_their_bytes() {
        let cache = ChunkCache::new(1000);
        cache.get_or_load(&1, load(40)).unwrap();
        cache.get_or_load(&2, load(30)).unwrap();
        cache.remove(&1);
        cache.remove(&7);
        assert_eq!(cache.used(), 30 + ENTRY_OVERHEAD);
        assert!(!cache.has_or_loading(&1) && cache.has_or_loading(&2));
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_bounded() {
        // Room for two values of 40 bytes, each charged its overhead too.
        let cache = ChunkCache::new(2 * (40 + ENTRY_OVERHEAD) + 39);
        cache.get_or_load(&1, load(40)).unwrap();
        cache.get_or_load(&2, load(40)).unwrap();
        cache.get_or_load(&1, load(40)).unwrap(); // 1 is now the most recent
        cache.get_or_load(&3, load(40)).unwrap(); // evicts 2
        assert!(cache.has_or_loading(&1) && cache.has_or_loading(&3));
        assert!(!cache.has_or_loading(&2));
        assert_eq!(cache.used(), 2 * (40 + ENTRY_OVERHEAD));
    }

    #[test]
    fn values_larger_than_the_cache_are_served_but_not_kept() {
        let cache = ChunkCache::new(10 + ENTRY_OVERHEAD);
        assert_eq!(cache.get_or_load(&1, load(11)).unwrap().len(), 11);
        assert_eq!(cache.used(), 0);
    }

    #[test]
    fn failed_loads_are_not_cached_and_release_waiters() {
        let cache = ChunkCache::<u8>::new(10);
        assert!(cache.get_or_load(&1, || Err::<Vec<u8>, _>("bad")).is_err());
        assert!(!cache.has_or_loading(&1));
        assert!(cache.get_or_load(&1, load(3)).is_ok());
    }

    #[test]
    fn concurrent_readers_of_one_key_load_it_once() {
        let cache = Arc::new(ChunkCache::new(1000));
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                std::thread::spawn(move || {
                    cache.get_or_load(&7, || {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>(vec![1; 10])
                    })
                })
            })
            .collect();
        for t in threads {
            let value = t.join().unwrap().unwrap();
            assert_eq!(&value[..], &[1; 10][..]);
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
