//! A linearizability checker for registers, one register per key.
//!
//! A history is what concurrent clients saw: each operation's invocation and completion time
//! (one monotonic clock), what it did (write a value, or read) and how it ended (acknowledged,
//! the value read, or **indeterminate**: no answer, a timeout or a 503, so that it may or may
//! not have taken effect). It is linearizable when every operation can be given a single
//! instant between its invocation and its completion such that, taken in the order of those
//! instants, the operations behave as a plain register does: each read returns the last value
//! written before it (nothing, if no write came before). Keys are independent registers, and a
//! history is linearizable exactly when each key's sub-history is (linearizability is local), so
//! each key is checked on its own.
//!
//! The search is the one of Wing & Gong, with Lowe's memoization of configurations already
//! tried (the set of operations linearized so far and the register's value): from a
//! configuration, an operation may go next if no other operation still to place completed
//! before it was invoked. Three things keep it small:
//!
//! - an indeterminate read constrains nothing and is dropped;
//! - an indeterminate write is given an infinite completion time (it may take effect at any
//!   moment after its invocation, or never: placing it after everything else is the same as
//!   never), and is dropped altogether when no read returned its value;
//! - a read that may go next and returns the register's current value is placed at once,
//!   without trying alternatives: placing a read earlier never removes an option.
//!
//! Values are expected to be unique per key (each write writes a value of its own), which is
//! what makes a failure easy to read; the checker is correct without that.
//!
//! A check explores at most [`MAX_CONFIGURATIONS`] configurations and says so when it gives
//! up, rather than running for hours on an unlucky history.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

/// The most configurations one key's check explores before giving up.
pub const MAX_CONFIGURATIONS: usize = 2_000_000;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write(u64),
    Read,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A write that was acknowledged.
    Written,
    /// A read that returned this value (None: the key did not exist).
    Returned(Option<u64>),
    /// No answer, a timeout, a 503: the operation may or may not have taken effect.
    Indeterminate,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub client: usize,
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    /// When it was invoked and when its outcome was known, from one monotonic clock.
    pub invoked: Duration,
    pub completed: Duration,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.op, self.outcome) {
            (Op::Write(v), Outcome::Indeterminate) => format!("write {v} (indeterminate)"),
            (Op::Write(v), _) => format!("write {v}"),
            (Op::Read, Outcome::Returned(Some(v))) => format!("read -> {v}"),
            (Op::Read, Outcome::Returned(None)) => "read -> (absent)".to_string(),
            (Op::Read, _) => "read (indeterminate)".to_string(),
        };
        write!(
            f,
            "[{:>9.3} ms .. {:>9.3} ms] client {} {}: {op}",
            self.invoked.as_secs_f64() * 1e3,
            self.completed.as_secs_f64() * 1e3,
            self.client,
            self.key
        )
    }
}

/// Why a key's history is not (known to be) linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read returned a value no write (acknowledged or not) ever wrote.
    NeverWritten { read: Entry },
    /// No order fits. `placed` is the longest prefix of a linearization found, and `stuck` the
    /// operations that could have come next there but did not fit.
    NoOrder {
        key: String,
        placed: Vec<Entry>,
        stuck: Vec<Entry>,
    },
    /// The search gave up after [`MAX_CONFIGURATIONS`]: undecided.
    TooLarge { key: String, ops: usize },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NeverWritten { read } => {
                write!(f, "a read returned a value never written: {read}")
            }
            Violation::NoOrder { key, placed, stuck } => {
                writeln!(
                    f,
                    "{key}: not linearizable; the longest order found places {} operations:",
                    placed.len()
                )?;
                // The end of the order is where it went wrong.
                for e in placed.iter().skip(placed.len().saturating_sub(12)) {
                    writeln!(f, "    {e}")?;
                }
                writeln!(f, "  and then none of these fits:")?;
                for e in stuck {
                    writeln!(f, "    {e}")?;
                }
                Ok(())
            }
            Violation::TooLarge { key, ops } => write!(
                f,
                "{key}: undecided, {ops} operations need more than {MAX_CONFIGURATIONS} \
                 configurations"
            ),
        }
    }
}

/// Checks every key's sub-history, each as a register that starts absent. Returns the
/// violations (empty: linearizable).
pub fn check(history: &[Entry]) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for e in history {
        by_key.entry(&e.key).or_default().push(e.clone());
    }
    by_key
        .into_values()
        .filter_map(|ops| check_register(&ops).err())
        .collect()
}

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Call {
    invoked: Duration,
    /// None: it may take effect at any time after `invoked` (an indeterminate write).
    completed: Option<Duration>,
    kind: Kind,
    /// Index into the entries given.
    entry: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write(u64),
    Read(Option<u64>),
}

/// Checks one register's history (every entry of one key), starting absent.
pub fn check_register(entries: &[Entry]) -> Result<(), Violation> {
    let key = entries.first().map(|e| e.key.clone()).unwrap_or_default();
    let read_values: HashSet<u64> = entries
        .iter()
        .filter_map(|e| match e.outcome {
            Outcome::Returned(v) => v,
            _ => None,
        })
        .collect();
    let written: HashSet<u64> = entries
        .iter()
        .filter_map(|e| match e.op {
            Op::Write(v) => Some(v),
            Op::Read => None,
        })
        .collect();
    let mut calls = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let call = match (e.op, e.outcome) {
            (Op::Read, Outcome::Returned(v)) => {
                if let Some(v) = v
                    && !written.contains(&v)
                {
                    return Err(Violation::NeverWritten { read: e.clone() });
                }
                Call {
                    invoked: e.invoked,
                    completed: Some(e.completed),
                    kind: Kind::Read(v),
                    entry: i,
                }
            }
            // Constrains nothing.
            (Op::Read, _) => continue,
            (Op::Write(v), Outcome::Indeterminate) => {
                if !read_values.contains(&v) {
                    // Never seen: placing it last, after everything, is always possible.
                    continue;
                }
                Call {
                    invoked: e.invoked,
                    completed: None,
                    kind: Kind::Write(v),
                    entry: i,
                }
            }
            (Op::Write(v), _) => Call {
                invoked: e.invoked,
                completed: Some(e.completed),
                kind: Kind::Write(v),
                entry: i,
            },
        };
        calls.push(call);
    }
    calls.sort_by_key(|c| (c.invoked, c.entry));
    match search(&calls) {
        Search::Found => Ok(()),
        Search::TooLarge => Err(Violation::TooLarge {
            key,
            ops: calls.len(),
        }),
        Search::Stuck { placed, stuck } => Err(Violation::NoOrder {
            key,
            placed: placed
                .iter()
                .map(|&c| entries[calls[c].entry].clone())
                .collect(),
            stuck: stuck
                .iter()
                .map(|&c| entries[calls[c].entry].clone())
                .collect(),
        }),
    }
}

enum Search {
    Found,
    TooLarge,
    /// The deepest partial order (indices into the calls) and what could not follow it.
    Stuck {
        placed: Vec<usize>,
        stuck: Vec<usize>,
    },
}

/// Operations placed so far, as a bit set over the calls.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Placed(Vec<u64>);

impl Placed {
    fn new(n: usize) -> Placed {
        Placed(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// Calls that may go next once `placed` are placed: not placed, and invoked no later than the
/// earliest completion among the calls not placed (nothing still to place finished before
/// them). Calls are sorted by invocation, so the scan stops at the first one invoked later.
fn candidates(calls: &[Call], placed: &Placed) -> Vec<usize> {
    let earliest_completion = calls
        .iter()
        .enumerate()
        .filter(|(i, _)| !placed.has(*i))
        .filter_map(|(_, c)| c.completed)
        .min();
    calls
        .iter()
        .enumerate()
        .take_while(|(_, c)| earliest_completion.is_none_or(|t| c.invoked <= t))
        .filter(|(i, _)| !placed.has(*i))
        .map(|(i, _)| i)
        .collect()
}

/// Depth-first search over configurations, iteratively (a history can be long).
fn search(calls: &[Call]) -> Search {
    struct Frame {
        placed: Placed,
        value: Option<u64>,
        /// The calls to try from here, and how many have been tried.
        options: Vec<usize>,
        next: usize,
        /// The call placed to reach this frame (None for the root).
        via: Option<usize>,
    }

    let n = calls.len();
    let mut seen: HashSet<(Placed, Option<u64>)> = HashSet::new();
    let mut explored = 0usize;
    let mut deepest: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut depth_placed: Vec<usize> = Vec::new();

    // Expands a configuration into a frame: places every read that fits the current value at
    // once, then lists what may go next.
    let expand = |mut placed: Placed,
                  value: Option<u64>,
                  via: Option<usize>,
                  order: &mut Vec<usize>|
     -> (Frame, usize) {
        let mut greedy = 0;
        loop {
            let fits = candidates(calls, &placed)
                .into_iter()
                .find(|&i| calls[i].kind == Kind::Read(value));
            match fits {
                Some(i) => {
                    placed.set(i);
                    order.push(i);
                    greedy += 1;
                }
                None => break,
            }
        }
        let options = candidates(calls, &placed);
        (
            Frame {
                placed,
                value,
                options,
                next: 0,
                via,
            },
            greedy,
        )
    };

    let (root, greedy) = expand(Placed::new(n), None, None, &mut depth_placed);
    // How many calls each frame placed greedily, to undo them when it is popped.
    let mut stack = vec![(root, greedy)];
    loop {
        let Some((frame, _)) = stack.last_mut() else {
            let (placed, stuck) = deepest;
            return Search::Stuck { placed, stuck };
        };
        if depth_placed.len() == n {
            return Search::Found;
        }
        if depth_placed.len() >= deepest.0.len() && frame.next == 0 {
            deepest = (depth_placed.clone(), frame.options.clone());
        }
        if frame.next == frame.options.len() {
            let (frame, greedy) = stack.pop().expect("a frame");
            for _ in 0..greedy {
                depth_placed.pop();
            }
            if frame.via.is_some() {
                depth_placed.pop();
            }
            continue;
        }
        let i = frame.options[frame.next];
        frame.next += 1;
        let value = match calls[i].kind {
            Kind::Write(v) => Some(v),
            Kind::Read(v) if v == frame.value => v,
            Kind::Read(_) => continue,
        };
        let mut placed = frame.placed.clone();
        placed.set(i);
        if !seen.insert((placed.clone(), value)) {
            continue;
        }
        explored += 1;
        if explored > MAX_CONFIGURATIONS {
            return Search::TooLarge;
        }
        depth_placed.push(i);
        let (child, greedy) = expand(placed, value, Some(i), &mut depth_placed);
        stack.push((child, greedy));
    }
}

#[cfg(test)]
mod tests;
