//! Listening sockets: one per worker per address, with `SO_REUSEPORT`, so the kernel spreads
//! connections over workers and no accept lock is shared (as nginx's `reuseport`).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds `count` sockets on `addr`. Port 0 is resolved once, by the first socket, and the
/// others share the port it got. Returns the address actually bound.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count.max(1) {
        all.push(bind_one(bound)?);
    }
    Ok((bound, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_shared_by_every_socket() {
        let (bound, socks) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(socks.len(), 3);
        for s in &socks {
            assert_eq!(s.local_addr().unwrap(), bound);
        }
    }
}
