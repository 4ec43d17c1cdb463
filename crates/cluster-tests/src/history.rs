//! Concurrent clients that use the admin API as a set of registers and record what they saw,
//! for the [linearizability checker](crate::linearizability).
//!
//! Key `kN` is the shared dict `kN` of the working config: a write is
//! `PUT /api/v1/config/shared_dicts/kN {"capacityBytes": V}` with a value `V` no other write
//! uses, a read is a (linearizable) `GET` of the same path, whose `capacityBytes` is the value
//! (a 404: the key does not exist yet). Each client runs one operation at a time, picks keys
//! and reads or writes from a fixed seed, and sends each request to the next control-plane node
//! in turn. It records the invocation and completion times (one monotonic clock), the operation
//! and its outcome. A 503, a 409, or no answer at all makes a write's outcome indeterminate
//! (it may or may not have taken effect) and tells nothing about a read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::api::{AdminApi, Reply};
use crate::linearizability::{Entry, Op, Outcome};
use crate::wait::wait_until;

/// Pause between two operations of one client.
const PACE: Duration = Duration::from_millis(15);

/// The first value written: a shared dict holds at least 8192 bytes.
const FIRST_VALUE: u64 = 8192;

/// How many clients, on how many keys, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clients: usize,
    pub keys: usize,
    /// The most operations one client runs, however long it is left running.
    pub max_ops_per_client: usize,
    pub limit: Duration,
    pub seed: u64,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Recorded {
    pub history: Vec<Entry>,
    /// Operations whose outcome is indeterminate, by reason (`503 no leader is reachable`,
    /// `409`, `no answer`, ...).
    pub indeterminate: BTreeMap<String, usize>,
    /// Answers that should not happen (a 500, a 400, a body without a value): `status body`.
    pub unexpected: Vec<String>,
}

impl Recorded {
    /// Writes acknowledged, reads with a value, and operations whose outcome is unknown.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in &self.history {
            match e.outcome {
                Outcome::Written => c.0 += 1,
                Outcome::Returned(_) => c.1 += 1,
                Outcome::Indeterminate => c.2 += 1,
            }
        }
        c
    }
}

pub struct RegisterClients {
    stop: Arc<AtomicBool>,
    /// Operations with a known outcome so far, over every client.
    known: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Recorded>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RegisterClients {
    /// Starts `plan.clients` clients against the admin APIs at `urls`.
    pub fn start(api: AdminApi, urls: Vec<String>, plan: Plan) -> RegisterClients {
        assert!(!urls.is_empty() && plan.clients > 0 && plan.keys > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let known = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let next_value = Arc::new(AtomicU64::new(FIRST_VALUE));
        let start = Instant::now();
        let tasks = (0..plan.clients)
            .map(|client| {
                let ctx = Client {
                    id: client,
                    api: api.clone(),
                    urls: urls.clone(),
                    plan,
                    start,
                    stop: stop.clone(),
                    known: known.clone(),
                    recorded: recorded.clone(),
                    next_value: next_value.clone(),
                };
                tokio::spawn(ctx.run())
            })
            .collect();
        RegisterClients {
            stop,
            known,
            recorded,
            tasks,
        }
    }

    /// Operations with a known outcome so far.
    pub fn known(&self) -> usize {
        self.known.load(Ordering::Relaxed)
    }

    /// Waits until `n` more operations than now have a known outcome (panics after `limit`).
    pub async fn wait_progress(&self, n: usize, limit: Duration) {
        let target = self.known() + n;
        let what = format!("{n} more register operations complete");
        wait_until(&what, limit, || {
            let done = self.known() >= target;
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Stops every client (each finishes the operation it is in) and returns the history,
    /// sorted by invocation.
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a register client does not panic");
        }
        let mut r = std::mem::take(&mut *self.recorded.lock().expect("history lock"));
        r.history.sort_by_key(|e| e.invoked);
        r
    }
}

struct Client {
    id: usize,
    api: AdminApi,
    urls: Vec<String>,
    plan: Plan,
    start: Instant,
    stop: Arc<AtomicBool>,
    known: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Recorded>>,
    next_value: Arc<AtomicU64>,
}

impl Client {
    async fn run(self) {
        let mut rng = SplitMix(self.plan.seed ^ (self.id as u64).wrapping_mul(0x9E37_79B9));
        let deadline = self.start + self.plan.limit;
        for n in 0..self.plan.max_ops_per_client {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                break;
            }
            let url = &self.urls[(self.id + n) % self.urls.len()];
            let key = format!("k{}", rng.below(self.plan.keys as u64));
            let path = format!("/config/shared_dicts/{key}");
            let op = if rng.below(2) == 0 {
                Op::Write(self.next_value.fetch_add(1, Ordering::Relaxed))
            } else {
                Op::Read
            };
            let invoked = self.start.elapsed();
            let reply = match op {
                Op::Write(v) => {
                    self.api
                        .put(url, &path, &json!({ "capacityBytes": v }))
                        .await
                }
                Op::Read => self.api.get(url, &path).await,
            };
            let completed = self.start.elapsed();
            let (outcome, problem) = classify(op, reply);
            {
                let mut r = self.recorded.lock().expect("history lock");
                match problem {
                    Some(Problem::Unknown(reason)) => {
                        *r.indeterminate.entry(reason).or_default() += 1;
                    }
                    Some(Problem::Unexpected(what)) => {
                        *r.indeterminate.entry("unexpected".into()).or_default() += 1;
                        r.unexpected.push(format!("{url}{path}: {what}"));
                    }
                    None => {}
                }
                r.history.push(Entry {
                    client: self.id,
                    key,
                    op,
                    outcome,
                    invoked,
                    completed,
                });
            }
            if outcome != Outcome::Indeterminate {
                self.known.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

enum Problem {
    /// An outage: the operation may or may not have taken effect.
    Unknown(String),
    /// An answer that should not happen.
    Unexpected(String),
}

/// The outcome of `op` from the API's answer.
fn classify(op: Op, reply: Result<Reply, crate::api::NoAnswer>) -> (Outcome, Option<Problem>) {
    let r = match reply {
        Ok(r) => r,
        Err(_) => {
            return (
                Outcome::Indeterminate,
                Some(Problem::Unknown("no answer".into())),
            );
        }
    };
    match (op, r.status) {
        (Op::Write(_), s) if (200..300).contains(&s) => (Outcome::Written, None),
        (Op::Read, 200) => match value_of(&r) {
            Some(v) => (Outcome::Returned(Some(v)), None),
            None => (
                Outcome::Indeterminate,
                Some(Problem::Unexpected(format!(
                    "200 without a value: {}",
                    r.text
                ))),
            ),
        },
        (Op::Read, 404) => (Outcome::Returned(None), None),
        (_, 503) => {
            // "no leader is reachable: ..." or "the outcome is unknown: ...".
            let message = r.json()["error"].as_str().unwrap_or("").to_string();
            let reason = message.split(':').next().unwrap_or("").to_string();
            (
                Outcome::Indeterminate,
                Some(Problem::Unknown(format!("503 {reason}"))),
            )
        }
        // The edit kept colliding with edits through other nodes: not applied, but counted
        // as indeterminate like every other failure (the checker is then less strict).
        (Op::Write(_), 409) => (
            Outcome::Indeterminate,
            Some(Problem::Unknown("409 conflict".into())),
        ),
        (_, s) => (
            Outcome::Indeterminate,
            Some(Problem::Unexpected(format!("{s} {}", r.text))),
        ),
    }
}

/// `capacityBytes` of a shared dict (a string in proto3 JSON, as every 64-bit integer).
fn value_of(r: &Reply) -> Option<u64> {
    let v = &r.json()["capacityBytes"];
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// splitmix64: a small deterministic generator, so a run's choices follow from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}
