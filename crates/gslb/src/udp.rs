//! Serving DNS over UDP: one thread per core, each with its own `SO_REUSEPORT` socket and its
//! own [`AnswerCache`], blocking on `recv_from` (no task per query). A query whose answer was
//! computed before for the same bytes, model and health is answered from the cache with its
//! ID rewritten; any other goes through the handler. TCP stays on hickory-server.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use crate::answer_cache::{AnswerCache, Epoch};
use crate::handler::Handler;

/// Answers kept per thread.
const CACHE_ENTRIES: usize = 4096;
/// How often a blocked thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Larger datagrams are not DNS queries we answer (EDNS queries are a few hundred bytes).
const MAX_QUERY: usize = 4096;

pub struct UdpWorkers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Serves each socket on its own thread.
    pub fn spawn(sockets: Vec<UdpSocket>, handler: Arc<Handler>) -> std::io::Result<UdpWorkers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_read_timeout(Some(STOP_POLL))?;
            let (handler, stop) = (handler.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gslb-udp-{i}"))
                    .spawn(move || serve(&socket, &handler, &stop))?,
            );
        }
        Ok(UdpWorkers { stop, threads })
    }

    /// Stops the threads (each within [`STOP_POLL`]) and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT` (port 0: the first one's port).
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    let mut out: Vec<UdpSocket> = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_reuse_port(true)?;
        if at.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&at.into())?;
        let s: UdpSocket = s.into();
        at = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

fn serve(socket: &UdpSocket, handler: &Handler, stop: &AtomicBool) {
    let mut cache = AnswerCache::new(CACHE_ENTRIES);
    let mut rng = rand::random::<u64>() | 1;
    let mut buf = vec![0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(1232);
    while !stop.load(Ordering::Acquire) {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        // Shorter than a header, or a response (never answer those: reflection loops).
        if n < 12 || buf[2] & 0x80 != 0 {
            continue;
        }
        rng = xorshift(rng);
        let query = &buf[..n];
        let snapshot = handler.state.load();
        let epoch = Epoch {
            model: snapshot.serial,
            health: snapshot.health.generation(),
        };
        let region = || {
            let ip = src.ip();
            let full = if ip.is_ipv4() { 32 } else { 128 };
            snapshot.model.locate(ip, full).map(|g| g.region)
        };
        if let Some((answer, counter)) = cache.get(&query[2..], epoch, region, rng) {
            out.clear();
            out.extend_from_slice(&query[..2]);
            out.extend_from_slice(answer.get(2..).unwrap_or_default());
            counter.inc();
            send(socket, &out, src);
            continue;
        }
        match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
            Ok(request) => {
                let answer = handler.answer_udp(&snapshot, &request, rng);
                send(socket, &answer.bytes, src);
                cache.put(
                    &query[2..],
                    epoch,
                    answer.depends,
                    &answer.bytes,
                    &answer.counter,
                    rng,
                );
            }
            Err(e) => {
                tracing::debug!(%src, error = %e, "malformed query: FORMERR");
                send(socket, &formerr(query), src);
            }
        }
    }
}

fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to) {
        tracing::debug!(%to, error = %e, "UDP send");
    }
}

/// A header-only FORMERR for a query whose header is readable but whose body is not.
fn formerr(query: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[..2].copy_from_slice(&query[..2]);
    // QR, the query's opcode, RD echoed; RCODE 1.
    h[2] = 0x80 | (query[2] & 0x79);
    h[3] = 1;
    h
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^ (x << 17)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formerr_keeps_the_id_opcode_and_rd() {
        let q = [0xab, 0xcd, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        assert_eq!(formerr(&q), [0xab, 0xcd, 0x81, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
