//! Encoded UDP answers kept for reuse, keyed by the query's bytes after its ID (name with its
//! case, type, class, EDNS payload size and options, ECS included). One per UDP worker thread:
//! no locks.
//!
//! An answer is reused only while nothing it depends on changed: the model (a new config) and
//! every node's health (an epoch covers both). Answers that depend on the client's own address
//! are keyed by the client's region too (GEO and CLOSEST without ECS), or not kept at all
//! (stable-per-subnet hashing without ECS). Answers with a random part (a weighted draw, the
//! order of equal nodes) are kept as several independent draws, one served at random, each
//! slot drawn afresh after a few reuses: the answers served keep the policy's distribution.

use std::collections::HashMap;

use prometheus_client::metrics::counter::Counter;

use crate::handler::Depends;

/// Independent draws kept for an answer with a random part.
const RANDOM_SLOTS: usize = 8;
/// A random answer is drawn afresh once every this many reuses.
const REDRAW_EVERY: u32 = 8;
/// Longer queries are not kept (they are rare: big EDNS options).
const MAX_KEY_BYTES: usize = 512;

/// What the answers of one epoch were computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Changes with every new model.
    pub model: u64,
    /// Changes with every node health change.
    pub health: u64,
}

pub struct AnswerCache {
    map: HashMap<Box<[u8]>, Entry>,
    capacity: usize,
}

struct Entry {
    epoch: Epoch,
    /// Answers differ by the client's region (else one variant, keyed `None`).
    by_region: bool,
    variants: Vec<(Option<usize>, Slots)>,
    counter: Counter,
}

struct Slots {
    random: bool,
    answers: Vec<Box<[u8]>>,
    uses: u32,
}

impl AnswerCache {
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            map: HashMap::new(),
            capacity,
        }
    }

    /// A kept answer for `key`, and the query counter to count it with. `client_region` is
    /// called only for answers keyed by region. `None`: compute it (and [`AnswerCache::put`]).
    pub fn get(
        &mut self,
        key: &[u8],
        epoch: Epoch,
        client_region: impl FnOnce() -> Option<usize>,
        random: u64,
    ) -> Option<(&[u8], &Counter)> {
        let entry = self.map.get_mut(key)?;
        if entry.epoch != epoch {
            return None;
        }
        let region = if entry.by_region {
            client_region()
        } else {
            None
        };
        let slots = &mut entry.variants.iter_mut().find(|(r, _)| *r == region)?.1;
        if slots.random {
            slots.uses = slots.uses.wrapping_add(1);
            if slots.answers.len() < RANDOM_SLOTS || slots.uses.is_multiple_of(REDRAW_EVERY) {
                return None;
            }
        }
        let i = (random % slots.answers.len().max(1) as u64) as usize;
        let answer = slots.answers.get(i)?;
        Some((answer, &entry.counter))
    }

    /// Keeps a computed answer, if it may be reused.
    pub fn put(
        &mut self,
        key: &[u8],
        epoch: Epoch,
        depends: Depends,
        answer: &[u8],
        counter: &Counter,
        random: u64,
    ) {
        if depends.client_address || key.len() > MAX_KEY_BYTES {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(key) {
            // Simple and bounded: a full cache starts over.
            self.map.clear();
        }
        let by_region = depends.client_region.is_some();
        let region = depends.client_region.flatten();
        let entry = self.map.entry(Box::from(key)).or_insert_with(|| Entry {
            epoch,
            by_region,
            variants: Vec::new(),
            counter: counter.clone(),
        });
        if entry.epoch != epoch || entry.by_region != by_region {
            *entry = Entry {
                epoch,
                by_region,
                variants: Vec::new(),
                counter: counter.clone(),
            };
        }
        let slots = match entry.variants.iter().position(|(r, _)| *r == region) {
            Some(i) => &mut entry.variants[i].1,
            None => {
                entry.variants.push((
                    region,
                    Slots {
                        random: depends.random,
                        answers: Vec::new(),
                        uses: 0,
                    },
                ));
                let last = entry.variants.len() - 1;
                &mut entry.variants[last].1
            }
        };
        if !slots.random {
            slots.answers = vec![Box::from(answer)];
        } else if slots.answers.len() < RANDOM_SLOTS {
            slots.answers.push(Box::from(answer));
        } else {
            slots.answers[(random % RANDOM_SLOTS as u64) as usize] = Box::from(answer);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: Epoch = Epoch {
        model: 1,
        health: 0,
    };

    fn fixed() -> Depends {
        Depends::default()
    }

    #[test]
    fn a_fixed_answer_is_reused_until_the_epoch_changes() {
        let mut c = AnswerCache::new(16);
        let counter = Counter::default();
        assert!(c.get(b"q", E1, || None, 0).is_none());
        c.put(b"q", E1, fixed(), b"answer", &counter, 0);
        for r in 0..20 {
            assert_eq!(c.get(b"q", E1, || None, r).unwrap().0, b"answer");
        }
        let e2 = Epoch { health: 1, ..E1 };
        assert!(
            c.get(b"q", e2, || None, 0).is_none(),
            "a node changed health"
        );
        c.put(b"q", e2, fixed(), b"new", &counter, 0);
        assert_eq!(c.get(b"q", e2, || None, 0).unwrap().0, b"new");
        assert!(c.get(b"other", e2, || None, 0).is_none());
    }

    #[test]
    fn answers_by_region_are_kept_per_region() {
        let mut c = AnswerCache::new(16);
        let counter = Counter::default();
        let geo = |r| Depends {
            client_region: Some(r),
            ..Depends::default()
        };
        c.put(b"q", E1, geo(Some(0)), b"eu", &counter, 0);
        c.put(b"q", E1, geo(None), b"default", &counter, 0);
        assert_eq!(c.get(b"q", E1, || Some(0), 0).unwrap().0, b"eu");
        assert_eq!(c.get(b"q", E1, || None, 0).unwrap().0, b"default");
        assert!(c.get(b"q", E1, || Some(1), 0).is_none(), "not seen yet");
    }

    #[test]
    fn answers_tied_to_the_client_address_are_not_kept() {
        let mut c = AnswerCache::new(16);
        let d = Depends {
            client_address: true,
            ..Depends::default()
        };
        c.put(b"q", E1, d, b"x", &Counter::default(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn random_answers_are_several_draws_each_redrawn_after_some_reuses() {
        let mut c = AnswerCache::new(16);
        let counter = Counter::default();
        let d = Depends {
            random: true,
            ..Depends::default()
        };
        // Until every slot holds a draw, nothing is reused.
        for i in 0..RANDOM_SLOTS as u64 {
            assert!(c.get(b"q", E1, || None, i).is_none());
            c.put(b"q", E1, d, format!("draw{i}").as_bytes(), &counter, i);
        }
        // Then reuses pick among the draws, and one in REDRAW_EVERY asks for a fresh one.
        let mut misses = 0;
        let mut seen = std::collections::HashSet::new();
        for r in 0..800u64 {
            match c.get(b"q", E1, || None, r) {
                Some((a, _)) => {
                    seen.insert(a.to_vec());
                }
                None => {
                    misses += 1;
                    c.put(b"q", E1, d, b"fresh", &counter, r);
                }
            }
        }
        assert_eq!(misses, 800 / REDRAW_EVERY as usize);
        assert!(seen.len() > 2, "several draws served: {}", seen.len());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut c = AnswerCache::new(2);
        let counter = Counter::default();
        c.put(b"a", E1, fixed(), b"1", &counter, 0);
        c.put(b"b", E1, fixed(), b"2", &counter, 0);
        c.put(b"c", E1, fixed(), b"3", &counter, 0);
        assert_eq!(c.len(), 1);
        assert!(c.get(b"c", E1, || None, 0).is_some());
    }
}
