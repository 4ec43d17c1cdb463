//! Datagrams in batches: `recvmmsg` takes every query waiting (up to [`BATCH`]) in one system
//! call, and `sendmmsg` sends their answers in one. Under load this halves, or better, the
//! system calls per query, which are most of a cached answer's cost.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams taken or sent per system call.
pub const BATCH: usize = 32;

/// The datagrams of one `recvmmsg`.
pub struct Received {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BATCH],
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    addr_lens: [libc::socklen_t; BATCH],
    count: usize,
}

impl Received {
    pub fn new(max_datagram: usize) -> Received {
        Received {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; max_datagram].into_boxed_slice())
                .collect(),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: Box::new(unsafe { zeroed() }),
            addr_lens: [0; BATCH],
            count: 0,
        }
    }

    /// Waits for at least one datagram (or the socket's read timeout), then takes every one
    /// already waiting, up to [`BATCH`]. Returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain old data; zeroes are valid before we fill them.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a buffer, an iovec and an address that live (and are
        // not otherwise borrowed) until the call returns; the lengths are the buffers' own.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = m.msg_len as usize;
            self.addr_lens[i] = m.msg_hdr.msg_namelen;
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` and who sent it (`None` for an address family we do not serve).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let data = self.bufs[i].get(..self.lens[i])?;
        Some((data, to_socket_addr(&self.addrs[i], self.addr_lens[i])?))
    }
}

/// Answers to send, each to the sender of a datagram of a [`Received`].
pub struct Replies {
    bufs: Vec<Vec<u8>>,
    to: [usize; BATCH],
    count: usize,
}

impl Replies {
    pub fn new() -> Replies {
        Replies {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            to: [0; BATCH],
            count: 0,
        }
    }

    /// An empty buffer for the answer to datagram `query` of the batch.
    pub fn next(&mut self, query: usize) -> &mut Vec<u8> {
        let i = self.count.min(BATCH - 1);
        self.count = (self.count + 1).min(BATCH);
        self.to[i] = query;
        let buf = &mut self.bufs[i];
        buf.clear();
        buf
    }

    /// Sends every answer to its query's sender, then empties the batch. Errors are per
    /// datagram and not fatal: the rest are still sent.
    pub fn send(&mut self, fd: RawFd, received: &mut Received) {
        let count = std::mem::take(&mut self.count);
        // SAFETY: as in `Received::recv`: plain old data, filled before use.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..count {
            let q = self.to[i];
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name =
                (&mut received.addrs[q] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = received.addr_lens[q];
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers `sent..count` point at live buffers, iovecs and addresses.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The datagram at `sent` failed (unreachable, say): skip it, send the rest.
                tracing::debug!(error = %e, "UDP send");
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
