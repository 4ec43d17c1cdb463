//! Serving DNS over UDP: one thread per core, all reading the same socket (the kernel hands
//! each datagram to one waiting thread, so the load spreads evenly whatever the clients' ports;
//! with a socket per thread and `SO_REUSEPORT`, a few busy clients can hash onto one thread),
//! each with its own [`AnswerCache`], blocking in `recvmmsg` (no task per query; queries and
//! answers in batches, see [`batch`]). A query whose answer was
//! computed before for the same bytes, model and health is answered from the cache with its
//! ID rewritten; any other goes through the handler. TCP stays on hickory-server.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use crate::answer_cache::{AnswerCache, Epoch};
use crate::handler::Handler;

mod batch;

use batch::{Received, Replies};

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
    /// Serves the sockets with `threads` threads, spread over them in turn.
    pub fn spawn(
        sockets: &[UdpSocket],
        threads: usize,
        handler: Arc<Handler>,
    ) -> std::io::Result<UdpWorkers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for i in 0..threads.max(1) {
            let Some(shared) = sockets.get(i % sockets.len().max(1)) else {
                break;
            };
            let socket = shared.try_clone()?;
            socket.set_read_timeout(Some(STOP_POLL))?;
            let (handler, stop) = (handler.clone(), stop.clone());
            running.push(
                std::thread::Builder::new()
                    .name(format!("gslb-udp-{i}"))
                    .spawn(move || serve(&socket, &handler, &stop))?,
            );
        }
        Ok(UdpWorkers {
            stop,
            threads: running,
        })
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
        s.bind(&at.into())?;
        let s: UdpSocket = s.into();
        at = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

fn serve(socket: &UdpSocket, handler: &Handler, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut cache = AnswerCache::new(CACHE_ENTRIES);
    let mut rng = rand::random::<u64>() | 1;
    let mut received = Received::new(MAX_QUERY);
    let mut replies = Replies::new();
    while !stop.load(Ordering::Acquire) {
        let n = match received.recv(fd) {
            Ok(n) => n,
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
        let snapshot = handler.state.load();
        let epoch = Epoch {
            model: snapshot.serial,
            health: snapshot.health.generation(),
        };
        for i in 0..n {
            let Some((query, src)) = received.get(i) else {
                continue;
            };
            // Shorter than a header, or a response (never answer those: reflection loops).
            if query.len() < 12 || query[2] & 0x80 != 0 {
                continue;
            }
            rng = xorshift(rng);
            let region = || {
                let ip = src.ip();
                let full = if ip.is_ipv4() { 32 } else { 128 };
                snapshot.model.locate(ip, full).map(|g| g.region)
            };
            if let Some((answer, counter)) = cache.get(&query[2..], epoch, region, rng) {
                let out = replies.next(i);
                out.extend_from_slice(&query[..2]);
                out.extend_from_slice(answer.get(2..).unwrap_or_default());
                counter.inc();
                continue;
            }
            match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
                Ok(request) => {
                    let answer = handler.answer_udp(&snapshot, &request, rng);
                    replies.next(i).extend_from_slice(&answer.bytes);
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
                    replies.next(i).extend_from_slice(&formerr(query));
                }
            }
        }
        replies.send(fd, &mut received);
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
