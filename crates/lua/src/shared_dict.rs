//! `ngx.shared.DICT`: shared by every worker, fixed capacity in bytes with LRU eviction, TTLs,
//! flags, atomic `incr`/`add`, stale reads, lists. Pure Rust behind a mutex; the Lua binding
//! is in `api/shared.rs`. Time is passed in (milliseconds), so the logic is testable.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

#[derive(Clone, Debug, PartialEq)]
pub enum DictValue {
    Str(Bytes),
    Num(f64),
    Bool(bool),
    List(VecDeque<DictValue>),
}

impl DictValue {
    fn size(&self) -> usize {
        match self {
            DictValue::Str(b) => b.len(),
            DictValue::Num(_) | DictValue::Bool(_) => 8,
            DictValue::List(l) => l.iter().map(|v| v.size() + 16).sum(),
        }
    }
}

struct Entry {
    value: DictValue,
    flags: u32,
    /// ms since the epoch; 0 = never expires.
    expires_ms: u64,
    used: u64,
}

/// Per-entry overhead counted against the capacity (as nginx's slab nodes do).
const OVERHEAD: usize = 64;

/// Keys come from requests (client addresses, tokens): the hasher is seeded per map, as
/// hashbrown's default, and several times cheaper than SipHash on short keys.
type KeyMap = HashMap<Bytes, Entry, foldhash::fast::RandomState>;

struct Inner {
    map: KeyMap,
    /// `used` tick to key: the least recently used first.
    lru: BTreeMap<u64, Bytes>,
    tick: u64,
    bytes: usize,
}

pub struct SharedDict {
    pub name: String,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, PartialEq)]
pub enum SetError {
    Exists,
    NotFound,
    NoMemory,
    NotANumber,
    NotAList,
}

impl SetError {
    pub fn as_str(&self) -> &'static str {
        match self {
            SetError::Exists => "exists",
            SetError::NotFound => "not found",
            SetError::NoMemory => "no memory",
            SetError::NotANumber => "not a number",
            SetError::NotAList => "value not a list",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum SetMode {
    Set,
    SafeSet,
    Add,
    SafeAdd,
    Replace,
}

fn expired(e: &Entry, now_ms: u64) -> bool {
    e.expires_ms != 0 && e.expires_ms <= now_ms
}

fn deadline(ttl_s: f64, now_ms: u64) -> u64 {
    if ttl_s <= 0.0 {
        0
    } else {
        now_ms + (ttl_s * 1000.0).ceil() as u64
    }
}

impl SharedDict {
    pub fn new(name: &str, capacity: usize) -> SharedDict {
        SharedDict {
            name: name.to_string(),
            capacity,
            inner: Mutex::new(Inner {
                map: KeyMap::default(),
                lru: BTreeMap::new(),
                tick: 0,
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn free_space(&self) -> usize {
        self.capacity.saturating_sub(self.lock().bytes)
    }

    /// The value and flags of a live entry.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<(DictValue, u32)> {
        let mut g = self.lock();
        let inner = &mut *g;
        let e = inner.map.get_mut(key)?;
        if expired(e, now_ms) {
            return None;
        }
        inner.tick += 1;
        // The key's copy in the order moves to the new tick: no new copy per touch.
        let k = (inner.lru.remove(&e.used)).unwrap_or_else(|| Bytes::copy_from_slice(key));
        e.used = inner.tick;
        inner.lru.insert(inner.tick, k);
        Some((e.value.clone(), e.flags))
    }

    /// Like `get`, but an expired entry not yet evicted is returned too, with `stale = true`.
    pub fn get_stale(&self, key: &[u8], now_ms: u64) -> Option<(DictValue, u32, bool)> {
        let g = self.lock();
        let e = g.map.get(key)?;
        Some((e.value.clone(), e.flags, expired(e, now_ms)))
    }

    /// Stores a value; returns whether live entries were evicted to make room ("forcible").
    pub fn set(
        &self,
        key: &[u8],
        value: Option<DictValue>,
        ttl_s: f64,
        flags: u32,
        mode: SetMode,
        now_ms: u64,
    ) -> Result<bool, SetError> {
        let mut g = self.lock();
        let live = g.map.get(key).is_some_and(|e| !expired(e, now_ms));
        match mode {
            SetMode::Add | SetMode::SafeAdd if live => return Err(SetError::Exists),
            SetMode::Replace if !live => return Err(SetError::NotFound),
            _ => {}
        }
        let Some(value) = value else {
            remove(&mut g, key);
            return Ok(false);
        };
        let need = key.len() + value.size() + OVERHEAD;
        if need > self.capacity {
            return Err(SetError::NoMemory);
        }
        remove(&mut g, key);
        let mut forcible = false;
        while g.bytes + need > self.capacity {
            let safe = matches!(mode, SetMode::SafeSet | SetMode::SafeAdd);
            // Expired entries go first, then the least recently used.
            if !evict_one(&mut g, now_ms, safe, &mut forcible) {
                return Err(SetError::NoMemory);
            }
        }
        g.tick += 1;
        let tick = g.tick;
        let k = Bytes::copy_from_slice(key);
        g.lru.insert(tick, k.clone());
        g.bytes += need;
        g.map.insert(
            k,
            Entry {
                value,
                flags,
                expires_ms: deadline(ttl_s, now_ms),
                used: tick,
            },
        );
        Ok(forcible)
    }

    /// Adds `by` to a number; with `init`, a missing key starts at `init` (and `init_ttl`).
    pub fn incr(
        &self,
        key: &[u8],
        by: f64,
        init: Option<f64>,
        init_ttl: f64,
        now_ms: u64,
    ) -> Result<(f64, bool), SetError> {
        {
            let mut g = self.lock();
            let inner = &mut *g;
            if let Some(e) = inner.map.get_mut(key)
                && !expired(e, now_ms)
            {
                let DictValue::Num(n) = e.value else {
                    return Err(SetError::NotANumber);
                };
                e.value = DictValue::Num(n + by);
                inner.tick += 1;
                let k = (inner.lru.remove(&e.used)).unwrap_or_else(|| Bytes::copy_from_slice(key));
                e.used = inner.tick;
                inner.lru.insert(inner.tick, k);
                return Ok((n + by, false));
            }
        }
        let Some(init) = init else {
            return Err(SetError::NotFound);
        };
        let forcible = self.set(
            key,
            Some(DictValue::Num(init + by)),
            init_ttl,
            0,
            SetMode::Set,
            now_ms,
        )?;
        Ok((init + by, forcible))
    }

    pub fn delete(&self, key: &[u8]) {
        remove(&mut self.lock(), key);
    }

    /// Remaining TTL in seconds (0 = never expires), or `None` when absent.
    pub fn ttl(&self, key: &[u8], now_ms: u64) -> Option<f64> {
        let g = self.lock();
        let e = g.map.get(key).filter(|e| !expired(e, now_ms))?;
        Some(if e.expires_ms == 0 {
            0.0
        } else {
            (e.expires_ms - now_ms) as f64 / 1000.0
        })
    }

    pub fn expire(&self, key: &[u8], ttl_s: f64, now_ms: u64) -> bool {
        let mut g = self.lock();
        match g.map.get_mut(key).filter(|e| !expired(e, now_ms)) {
            Some(e) => {
                e.expires_ms = deadline(ttl_s, now_ms);
                true
            }
            None => false,
        }
    }

    /// Marks everything expired, then frees the three least recently used entries, as
    /// lua-nginx-module's `flush_all` (its `shdict_expire(ctx, 0)`); the rest wait for reuse.
    pub fn flush_all(&self) {
        let mut g = self.lock();
        for e in g.map.values_mut() {
            e.expires_ms = 1;
        }
        for _ in 0..3 {
            let Some(k) = g.lru.values().next().cloned() else {
                break;
            };
            remove(&mut g, &k);
        }
    }

    /// Frees expired entries (at most `max`, 0 = all); returns how many.
    pub fn flush_expired(&self, max: usize, now_ms: u64) -> usize {
        let mut g = self.lock();
        let victims: Vec<Bytes> = g
            .map
            .iter()
            .filter(|(_, e)| expired(e, now_ms))
            .map(|(k, _)| k.clone())
            .take(if max == 0 { usize::MAX } else { max })
            .collect();
        for k in &victims {
            remove(&mut g, k);
        }
        victims.len()
    }

    /// Live keys, at most `max` (0 = all).
    pub fn keys(&self, max: usize, now_ms: u64) -> Vec<Bytes> {
        let g = self.lock();
        g.map
            .iter()
            .filter(|(_, e)| !expired(e, now_ms))
            .map(|(k, _)| k.clone())
            .take(if max == 0 { usize::MAX } else { max })
            .collect()
    }

    /// Pushes onto a list (creating it); returns the new length.
    pub fn push(
        &self,
        key: &[u8],
        v: DictValue,
        left: bool,
        now_ms: u64,
    ) -> Result<usize, SetError> {
        let mut list = match self.get(key, now_ms) {
            Some((DictValue::List(l), _)) => l,
            Some(_) => return Err(SetError::NotAList),
            None => VecDeque::new(),
        };
        if left {
            list.push_front(v);
        } else {
            list.push_back(v);
        }
        let len = list.len();
        let ttl = self.ttl(key, now_ms).unwrap_or(0.0);
        self.set(
            key,
            Some(DictValue::List(list)),
            ttl,
            0,
            SetMode::Set,
            now_ms,
        )?;
        Ok(len)
    }

    pub fn pop(&self, key: &[u8], left: bool, now_ms: u64) -> Result<Option<DictValue>, SetError> {
        let mut list = match self.get(key, now_ms) {
            Some((DictValue::List(l), _)) => l,
            Some(_) => return Err(SetError::NotAList),
            None => return Ok(None),
        };
        let v = if left {
            list.pop_front()
        } else {
            list.pop_back()
        };
        if list.is_empty() {
            self.delete(key);
        } else {
            let ttl = self.ttl(key, now_ms).unwrap_or(0.0);
            self.set(
                key,
                Some(DictValue::List(list)),
                ttl,
                0,
                SetMode::Set,
                now_ms,
            )?;
        }
        Ok(v)
    }

    pub fn llen(&self, key: &[u8], now_ms: u64) -> Result<usize, SetError> {
        match self.get(key, now_ms) {
            Some((DictValue::List(l), _)) => Ok(l.len()),
            Some(_) => Err(SetError::NotAList),
            None => Ok(0),
        }
    }
}

fn remove(g: &mut Inner, key: &[u8]) {
    if let Some(e) = g.map.remove(key) {
        g.lru.remove(&e.used);
        g.bytes -= key.len() + e.value.size() + OVERHEAD;
    }
}

/// Evicts one entry: an expired one if any near the LRU end, else (unless `safe`) the least
/// recently used live one.
fn evict_one(g: &mut Inner, now_ms: u64, safe: bool, forcible: &mut bool) -> bool {
    let expired_key = g
        .lru
        .values()
        .take(32)
        .find(|k| g.map.get(*k).is_some_and(|e| expired(e, now_ms)))
        .cloned();
    if let Some(k) = expired_key {
        remove(g, &k);
        return true;
    }
    if safe {
        return false;
    }
    let Some(k) = g.lru.values().next().cloned() else {
        return false;
    };
    remove(g, &k);
    *forcible = true;
    true
}

/// Every dict of a node, by name, shared by all workers; kept across reloads by name.
#[derive(Default)]
pub struct SharedDicts {
    dicts: Mutex<HashMap<String, Arc<SharedDict>>>,
}

impl SharedDicts {
    /// Makes the set of dicts match `wanted` (name, capacity): existing ones with the same
    /// capacity keep their contents.
    pub fn configure(&self, wanted: &[(String, usize)]) {
        let mut d = self.dicts.lock().unwrap_or_else(|e| e.into_inner());
        d.retain(|name, dict| wanted.iter().any(|(n, c)| n == name && *c == dict.capacity));
        for (name, capacity) in wanted {
            d.entry(name.clone())
                .or_insert_with(|| Arc::new(SharedDict::new(name, *capacity)));
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<SharedDict>> {
        self.dicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<DictValue> {
        Some(DictValue::Str(Bytes::from(v.to_string())))
    }

    #[test]
    fn add_replace_incr_and_ttl_behave_as_openresty() {
        let d = SharedDict::new("d", 1 << 20);
        assert_eq!(d.set(b"a", s("1"), 0.0, 7, SetMode::Add, 0), Ok(false));
        assert_eq!(
            d.set(b"a", s("2"), 0.0, 0, SetMode::Add, 0),
            Err(SetError::Exists)
        );
        assert_eq!(
            d.set(b"b", s("2"), 0.0, 0, SetMode::Replace, 0),
            Err(SetError::NotFound)
        );
        assert_eq!(d.get(b"a", 0), Some((DictValue::Str(Bytes::from("1")), 7)));
        assert_eq!(d.incr(b"a", 1.0, None, 0.0, 0), Err(SetError::NotANumber));
        assert_eq!(d.incr(b"n", 1.0, None, 0.0, 0), Err(SetError::NotFound));
        assert_eq!(d.incr(b"n", 2.0, Some(10.0), 0.0, 0), Ok((12.0, false)));
        assert_eq!(d.incr(b"n", -2.0, Some(0.0), 0.0, 0), Ok((10.0, false)));
        d.set(b"t", s("x"), 1.5, 0, SetMode::Set, 1000).unwrap();
        assert_eq!(d.ttl(b"t", 1500), Some(1.0));
        assert!(d.get(b"t", 2500).is_none());
        assert_eq!(d.get_stale(b"t", 2500).map(|x| x.2), Some(true));
    }

    #[test]
    fn a_full_dict_evicts_the_least_recently_used_and_safe_set_refuses() {
        let d = SharedDict::new("d", 3 * (OVERHEAD + 2 + 10));
        for k in ["k1", "k2", "k3"] {
            d.set(k.as_bytes(), s("0123456789"), 0.0, 0, SetMode::Set, 0)
                .unwrap();
        }
        assert!(d.get(b"k1", 0).is_some());
        assert_eq!(
            d.set(b"k4", s("0123456789"), 0.0, 0, SetMode::SafeSet, 0),
            Err(SetError::NoMemory)
        );
        assert_eq!(
            d.set(b"k4", s("0123456789"), 0.0, 0, SetMode::Set, 0),
            Ok(true)
        );
        assert!(d.get(b"k2", 0).is_none(), "k2 was the least recently used");
        assert!(d.get(b"k1", 0).is_some());
    }

    #[test]
    fn lists_push_pop_and_refuse_other_types() {
        let d = SharedDict::new("d", 1 << 20);
        assert_eq!(d.push(b"l", DictValue::Num(1.0), true, 0), Ok(1));
        assert_eq!(d.push(b"l", DictValue::Num(2.0), false, 0), Ok(2));
        assert_eq!(d.pop(b"l", true, 0), Ok(Some(DictValue::Num(1.0))));
        assert_eq!(d.llen(b"l", 0), Ok(1));
        d.set(b"s", s("x"), 0.0, 0, SetMode::Set, 0).unwrap();
        assert_eq!(
            d.push(b"s", DictValue::Num(1.0), true, 0),
            Err(SetError::NotAList)
        );
    }
}
