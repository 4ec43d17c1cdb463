//! Each worker's spare header maps.
//!
//! A `HeaderMap` is two heap allocations, and a request made two of them (its own fields and
//! its response's) and freed both. The maps a worker is done with come back here cleared,
//! with their room kept, and the next request's maps are taken from here: the same few maps,
//! still in the core's cache, serve request after request. Nothing but room carries over:
//! `clear` drops every field.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per worker: more than the requests one worker has in flight at a time, on
/// this path, in the benchmarks; beyond it a map given back is freed.
const MAX_SPARE: usize = 256;
/// A map with room for more fields than this (a rare, large request) is not kept.
const MAX_KEPT_FIELDS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields.
pub fn take(fields: usize) -> HeaderMap {
    let spare = SPARE.with(|s| s.borrow_mut().pop());
    match spare {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives back a map the worker is done with; its fields are dropped now.
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_KEPT_FIELDS {
        return;
    }
    map.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < MAX_SPARE {
            s.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(8);
        map.insert("x-one", HeaderValue::from_static("1"));
        map.append("x-one", HeaderValue::from_static("2"));
        let room = map.capacity();
        give(map);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.keys_len(), 0);
        assert_eq!(again.capacity(), room, "the same map, its room kept");
    }

    #[test]
    fn a_large_map_is_not_kept() {
        let mut big = HeaderMap::with_capacity(MAX_KEPT_FIELDS * 2);
        big.insert("x-big", HeaderValue::from_static("1"));
        give(big);
        assert!(take(1).capacity() <= MAX_KEPT_FIELDS);
    }
}
