//! Active health checks: every interval, an HTTP GET to each peer; `fall` consecutive failures
//! mark it down, `rise` consecutive successes mark it up again. The verdict lives in the peer's
//! shared state, so every worker sees it at once. Runs on the control runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{HealthCheckParams, Upstream};

/// The transition a run of results causes, if any (pure: counters in, verdict out).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub successes: u32,
    pub failures: u32,
}

impl Streak {
    /// Records one probe; returns `Some(healthy)` when the peer's state must change.
    pub fn record(
        &mut self,
        ok: bool,
        currently_healthy: bool,
        rise: u32,
        fall: u32,
    ) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            (!currently_healthy && self.successes >= rise).then_some(true)
        } else {
            self.failures += 1;
            self.successes = 0;
            (currently_healthy && self.failures >= fall).then_some(false)
        }
    }
}

/// Probes the upstream's peers until the upstream is retired or dropped.
pub async fn run(upstream: Weak<Upstream>) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    loop {
        let Some(u) = upstream.upgrade() else { return };
        if u.is_retired() {
            return;
        }
        let Some(params) = u.health.clone() else {
            return;
        };
        let peers = u.peers.load_full();
        let probes = peers.all().map(|p| {
            let (addr, name, tls) = (p.addr, p.name.clone(), u.tls.clone());
            let params = params.clone();
            async move { (addr, probe(addr, &name, tls.as_ref(), &params).await) }
        });
        let results = futures_util::future::join_all(probes).await;
        for (addr, result) in results {
            let Some(peer) = peers.all().find(|p| p.addr == addr) else {
                continue;
            };
            let streak = streaks.entry(addr).or_default();
            let ok = result.is_ok();
            if let Some(healthy) =
                streak.record(ok, peer.state.is_healthy(), params.rise, params.fall)
            {
                peer.state.set_healthy(healthy);
                u.metrics.set_peer_up(&peer.name, addr, healthy);
                match result {
                    Ok(()) => {
                        tracing::info!(upstream = %u.name, peer = %addr, "peer is up (active check)")
                    }
                    Err(reason) => {
                        tracing::warn!(upstream = %u.name, peer = %addr, %reason, "peer is down (active check)")
                    }
                }
            }
        }
        let interval = params.interval;
        drop(u);
        tokio::time::sleep(interval).await;
    }
}

/// One probe: connect, GET the path, compare the status.
async fn probe(
    addr: SocketAddr,
    peer_name: &str,
    tls: Option<&super::UpstreamTls>,
    p: &HealthCheckParams,
) -> Result<(), String> {
    let host = p.host.clone().unwrap_or_else(|| peer_name.to_string());
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let status = match tls {
            None => get(tcp, &host, &p.path).await?,
            Some(t) => {
                let name = t.server_name(peer_name);
                let sn = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
                let s = t
                    .connector
                    .connect(sn, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                get(s, &host, &p.path).await?
            }
        };
        let ok = if p.expected.is_empty() {
            (200..400).contains(&status)
        } else {
            p.expected.contains(&status)
        };
        if ok {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    tokio::time::timeout(p.timeout, work)
        .await
        .map_err(|_| "timeout".to_string())?
}

async fn get<T>(io: T, host: &str, path: &str) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "outpost-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// Starts the health-check task of an upstream on the current (control) runtime.
pub fn spawn(upstream: &Arc<Upstream>) {
    if upstream.health.is_some() {
        tokio::spawn(run(Arc::downgrade(upstream)));
    }
}

#[cfg(test)]
mod tests {
    use super::Streak;

    #[test]
    fn fall_failures_take_a_peer_down_and_rise_successes_bring_it_back() {
        let mut s = Streak::default();
        assert_eq!(s.record(false, true, 2, 3), None);
        assert_eq!(s.record(false, true, 2, 3), None);
        assert_eq!(s.record(false, true, 2, 3), Some(false));
        assert_eq!(s.record(true, false, 2, 3), None);
        assert_eq!(
            s.record(false, false, 2, 3),
            None,
            "a failure resets the rise count"
        );
        assert_eq!(s.record(true, false, 2, 3), None);
        assert_eq!(s.record(true, false, 2, 3), Some(true));
    }
}
