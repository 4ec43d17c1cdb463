//! Node health: the rise/fall state machine (pure), the table the DNS handler reads without a
//! lock, and the probers that feed it, one tokio task per node on its own interval.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::model::Model;

/// How a node is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Tcp,
    Http {
        path: String,
        host: String,
    },
    /// Not probed: always up.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub target: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A node's health: up or down, and how many consecutive results have disagreed with that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub up: bool,
    contrary: u32,
}

impl Streak {
    pub fn new(up: bool) -> Self {
        Streak { up, contrary: 0 }
    }

    /// A result has disagreed with the state, but not enough times yet to flip it.
    pub fn pending(&self) -> bool {
        self.contrary > 0
    }

    /// Records one probe result. Returns the new state when it flips: after `fall`
    /// consecutive failures of an up node, or `rise` consecutive successes of a down one.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.up {
            self.contrary = 0;
            return None;
        }
        self.contrary += 1;
        let needed = if self.up { fall } else { rise }.max(1);
        if self.contrary >= needed {
            self.up = ok;
            self.contrary = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Whether each node is up, by node index; written by the probers, read by every query.
#[derive(Debug)]
pub struct HealthTable {
    up: Vec<AtomicBool>,
    /// Bumped at every change of a node's state: answers made before are stale.
    generation: AtomicU64,
}

impl HealthTable {
    /// New nodes start up (answers go out before the first probe); a node kept across a
    /// reload, same name, keeps its state.
    pub fn new(model: &Model, previous: Option<(&Model, &HealthTable)>) -> Self {
        let up = model
            .nodes
            .iter()
            .map(|n| {
                let was = previous.and_then(|(m, t)| {
                    m.nodes
                        .iter()
                        .position(|o| o.name == n.name)
                        .map(|i| t.is_up(i))
                });
                AtomicBool::new(was.unwrap_or(true))
            })
            .collect();
        HealthTable {
            up,
            generation: AtomicU64::new(0),
        }
    }

    /// Changes with every change of any node's state.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.up.get(node).is_some_and(|u| u.load(Ordering::Relaxed))
    }

    fn set(&self, node: usize, up: bool) {
        if let Some(u) = self.up.get(node)
            && u.swap(up, Ordering::AcqRel) != up
        {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The running probers of one config; dropping this stops them.
pub struct Probers {
    _tasks: JoinSet<()>,
}

/// Starts one prober per node of `model`.
pub fn spawn_probers(model: Arc<Model>, table: Arc<HealthTable>, metrics: Arc<Metrics>) -> Probers {
    let mut tasks = JoinSet::new();
    for (i, node) in model.nodes.iter().enumerate() {
        metrics.set_node_health(&node.name, table.is_up(i));
        if node.probe.kind == ProbeKind::None {
            continue;
        }
        let (model, table, metrics) = (model.clone(), table.clone(), metrics.clone());
        tasks.spawn(async move {
            let node = &model.nodes[i];
            let p = &node.probe;
            let mut streak = Streak::new(table.is_up(i));
            loop {
                let started = tokio::time::Instant::now();
                let ok = probe(p).await;
                if let Some(up) = streak.observe(ok, p.rise, p.fall) {
                    table.set(i, up);
                    metrics.set_node_health(&node.name, up);
                    for &r in &model.records_of_node[i] {
                        metrics.answer_changed(&model.records[r].label);
                    }
                    tracing::info!(node = %node.name, address = %p.target, up, "node health changed");
                }
                // While a change is being confirmed, probe again soon (HAProxy's `fastinter`):
                // `fall` failures then take one interval plus a few short ones, not `fall`
                // intervals.
                let next = if streak.pending() { fast_interval(p.interval) } else { p.interval };
                tokio::time::sleep_until(started + next).await;
            }
        });
    }
    Probers { _tasks: tasks }
}

/// The probe interval while a state change is being confirmed: a fifth of the interval, at
/// least 50 ms.
pub fn fast_interval(interval: Duration) -> Duration {
    (interval / 5).max(Duration::from_millis(50)).min(interval)
}

/// One probe: a TCP connect, or an HTTP/1.1 GET whose status must be 2xx or 3xx, all within
/// the timeout.
pub async fn probe(p: &Probe) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(p.target).await.ok()?;
        let ProbeKind::Http { path, host } = &p.kind else {
            return Some(true);
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: outpost-gslb\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        // The status line is all we need: `HTTP/1.1 200`.
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            let n = stream.read(&mut head[got..]).await.ok()?;
            if n == 0 {
                return None;
            }
            got += n;
        }
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some(head.starts_with(b"HTTP/1.") && (200..400).contains(&status))
    };
    matches!(
        tokio::time::timeout(p.timeout, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_up_node_goes_down_after_fall_consecutive_failures() {
        let mut s = Streak::new(true);
        assert_eq!(s.observe(false, 2, 2), None);
        assert_eq!(s.observe(true, 2, 2), None, "a success resets the count");
        assert_eq!(s.observe(false, 2, 2), None);
        assert_eq!(s.observe(false, 2, 2), Some(false));
        assert!(!s.up);
        assert_eq!(s.observe(false, 2, 2), None);
    }

    #[test]
    fn a_down_node_comes_back_after_rise_consecutive_successes() {
        let mut s = Streak::new(false);
        assert_eq!(s.observe(true, 3, 1), None);
        assert_eq!(s.observe(true, 3, 1), None);
        assert_eq!(s.observe(true, 3, 1), Some(true));
        assert_eq!(s.observe(false, 3, 1), Some(false), "fall 1 flips at once");
    }

    #[test]
    fn a_change_being_confirmed_is_pending_and_probed_sooner() {
        let mut s = Streak::new(true);
        assert!(!s.pending());
        s.observe(false, 2, 2);
        assert!(s.pending(), "one failure of two: confirming");
        s.observe(false, 2, 2);
        assert!(!s.pending(), "flipped: back to the normal interval");
        assert_eq!(
            fast_interval(Duration::from_millis(250)),
            Duration::from_millis(50)
        );
        assert_eq!(
            fast_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            fast_interval(Duration::from_millis(30)),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn zero_counts_mean_one() {
        let mut s = Streak::new(true);
        assert_eq!(s.observe(false, 0, 0), Some(false));
        assert_eq!(s.observe(true, 0, 0), Some(true));
    }

    fn probe_of(target: SocketAddr, kind: ProbeKind) -> Probe {
        Probe {
            kind,
            target,
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        }
    }

    /// An HTTP server on port 0 that answers every request with `status`.
    async fn http_server(status: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_judge_real_listeners() {
        let ok = http_server("200 OK").await;
        let bad = http_server("503 Service Unavailable").await;
        let http = || ProbeKind::Http {
            path: "/".into(),
            host: "x".into(),
        };
        assert!(probe(&probe_of(ok, http())).await);
        assert!(!probe(&probe_of(bad, http())).await);
        assert!(
            probe(&probe_of(bad, ProbeKind::Tcp)).await,
            "TCP only needs a connect"
        );
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(&probe_of(closed, ProbeKind::Tcp)).await);
    }
}
