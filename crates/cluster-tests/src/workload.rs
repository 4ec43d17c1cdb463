//! Clients that keep working while a scenario breaks the cluster, each in a task of its own,
//! bounded in time and in requests, and reporting what they saw when stopped.
//!
//! - [`ApiLoad`]: a client of the admin API writing (a new shared dict per request) or reading
//!   (a linearizable `GET`), round-robin over the control-plane nodes it was given, going on to
//!   the next node at once after a failure (no answer, or `503` while there is no leader). It
//!   records which writes were acknowledged (2xx) and the longest time without a success.
//! - [`EdgeLoad`]: a client of the edges' site, asking every edge in turn.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::api::AdminApi;
use crate::config;
use crate::edge::EdgeTarget;

/// The most requests one load task sends, whatever its time limit.
pub const MAX_REQUESTS: usize = 20_000;

/// Pause between two requests of one client.
const PACE: Duration = Duration::from_millis(20);

/// What an [`ApiLoad`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `PUT /api/v1/config/shared_dicts/{prefix}{n}`, a new name every time.
    Write,
    /// `GET /api/v1/config/shared_dicts` (linearizable).
    Read,
}

#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub successes: usize,
    /// Names of the shared dicts whose write got a 2xx.
    pub acknowledged: Vec<String>,
    /// Answers `503` (no leader, or an outcome that cannot be known).
    pub unavailable: usize,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    pub unanswered: usize,
    /// Any other answer: `status body` (none is expected).
    pub unexpected: Vec<String>,
    /// The longest time without a success, from the start to the first success, between two
    /// successes, or from the last success to the stop.
    pub longest_gap: Duration,
}

pub struct ApiLoad {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicUsize>,
    task: JoinHandle<LoadReport>,
}

impl ApiLoad {
    /// Starts a client doing `op` against the admin APIs at `urls` (round-robin) until
    /// stopped, for at most `limit`. Written names start with `prefix`.
    pub fn start(
        op: Op,
        api: AdminApi,
        urls: Vec<String>,
        prefix: &str,
        limit: Duration,
    ) -> ApiLoad {
        assert!(!urls.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicUsize::new(0));
        let (stop2, successes2, prefix) = (stop.clone(), successes.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            let mut report = LoadReport::default();
            let start = Instant::now();
            let deadline = start + limit;
            let mut last_success = start;
            let body = config::shared_dict();
            for n in 0..MAX_REQUESTS {
                if stop2.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let url = &urls[n % urls.len()];
                let name = format!("{prefix}{n}");
                let reply = match op {
                    Op::Write => {
                        api.put(url, &format!("/config/shared_dicts/{name}"), &body)
                            .await
                    }
                    Op::Read => api.get(url, "/config/shared_dicts").await,
                };
                report.requests += 1;
                match reply {
                    Ok(r) if r.ok() => {
                        let now = Instant::now();
                        report.longest_gap = report.longest_gap.max(now - last_success);
                        last_success = now;
                        report.successes += 1;
                        successes2.fetch_add(1, Ordering::Relaxed);
                        if op == Op::Write {
                            report.acknowledged.push(name);
                        }
                    }
                    Ok(r) if r.status == 503 => report.unavailable += 1,
                    Ok(r) => report
                        .unexpected
                        .push(format!("{url}: {} {}", r.status, r.text)),
                    Err(_) => report.unanswered += 1,
                }
                tokio::time::sleep(PACE).await;
            }
            report.longest_gap = report.longest_gap.max(last_success.elapsed());
            report
        });
        ApiLoad {
            stop,
            successes,
            task,
        }
    }

    /// Successes so far.
    pub fn successes(&self) -> usize {
        self.successes.load(Ordering::Relaxed)
    }

    /// Stops the client and returns what it saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the load task does not panic")
    }
}

#[derive(Debug, Default, Clone)]
pub struct EdgeLoadReport {
    pub requests: usize,
    /// Answers `200` with an accepted body, per edge (in the order given).
    pub served: Vec<usize>,
    /// Everything else, `edge: what` (the first 20).
    pub failures: Vec<String>,
    pub failure_count: usize,
}

pub struct EdgeLoad {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<EdgeLoadReport>>,
    task: JoinHandle<()>,
}

impl EdgeLoad {
    /// Asks every edge in `targets` for `/` in turn until stopped, for at most `limit`; an
    /// answer counts as served when it is `200` with one of the `accept`ed bodies.
    pub fn start(targets: Vec<EdgeTarget>, accept: &[&str], limit: Duration) -> EdgeLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(EdgeLoadReport {
            served: vec![0; targets.len()],
            ..Default::default()
        }));
        let accept: Vec<String> = accept.iter().map(|s| s.to_string()).collect();
        let (stop2, report2) = (stop.clone(), report.clone());
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + limit;
            for n in 0..MAX_REQUESTS {
                if stop2.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let i = n % targets.len();
                let t = &targets[i];
                let outcome = match t.get("/").await {
                    Ok(r) if r.status == 200 && accept.contains(&r.body) => Ok(()),
                    Ok(r) => Err(format!("{} {:?}", r.status, r.body)),
                    Err(e) => Err(e),
                };
                {
                    let mut rep = report2.lock().expect("report lock");
                    rep.requests += 1;
                    match outcome {
                        Ok(()) => rep.served[i] += 1,
                        Err(e) => {
                            rep.failure_count += 1;
                            if rep.failures.len() < 20 {
                                rep.failures.push(format!("{}: {e}", t.name));
                            }
                        }
                    }
                }
                tokio::time::sleep(PACE).await;
            }
        });
        EdgeLoad { stop, report, task }
    }

    /// What it saw so far.
    pub fn report(&self) -> EdgeLoadReport {
        self.report.lock().expect("report lock").clone()
    }

    /// Waits until every edge has served `n` requests (panics after `limit`).
    pub async fn wait_served(&self, n: usize, limit: Duration) {
        let what = format!("every edge serves {n} requests");
        crate::wait::wait_until(&what, limit, || {
            let served = self.report().served;
            async move { served.iter().all(|s| *s >= n).then_some(()) }
        })
        .await;
    }

    /// Stops the client and returns what it saw.
    pub async fn stop(self) -> EdgeLoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.report.lock().expect("report lock").clone()
    }
}
