//! Where each node runs and which addresses it gets.
//!
//! - **Loopback** (the default, no privileges): every node gets its own `127.0.0.x`, x from 2
//!   up (Linux routes all of 127/8 to `lo`), and ports the kernel reports free on that address.
//!   All processes share the test's network namespace.
//! - **Loopback in a private namespace** ([`crate::partition`], root only): the same, but in a
//!   network namespace of the test's own, where routing rules can cut the links between two
//!   nodes' addresses.
//! - **Namespaces** ([`crate::netns`], root only): every node gets a network namespace of its
//!   own, joined to a bridge by a veth pair, with a `10.77.0.x` address and the well-known
//!   ports; links between regions can be given a `tc netem` delay.
//!
//! One thing differs for the sites that edges serve. A release is one config for every edge,
//! so every edge listens on the same listener address. In namespaces that is `0.0.0.0:80` in
//! each edge's own namespace, and a client reaches each edge at its own address. On loopback
//! the edges bind the same shared address: they listen with `SO_REUSEPORT`, so the kernel
//! spreads connections over all of them, and a client tells which edge answered by the
//! `x-edge-pid` header the harness's applications add (see [`crate::config`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::netns::Lab;

/// A place a node runs: its address, and the network namespace to enter (None: the test's).
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub ip: IpAddr,
    pub netns: Option<Arc<OwnedFd>>,
}

pub enum Network {
    /// `private`: in a network namespace of the test's own, where links can be cut.
    Loopback {
        next: u8,
        private: bool,
    },
    Namespaces(Lab),
}

/// Well-known ports, used as they are inside namespaces (each host has every port to itself).
pub mod ports {
    pub const CP_API: u16 = 9400;
    pub const CP_GRPC: u16 = 9401;
    pub const EDGE_ADMIN: u16 = 9145;
    pub const SITE: u16 = 8080;
    pub const DNS: u16 = 53;
    pub const GSLB_ADMIN: u16 = 9153;
}

impl Network {
    pub fn loopback() -> Network {
        Network::Loopback {
            next: 2,
            private: false,
        }
    }

    /// Loopback in the private network namespace the calling thread has entered (see
    /// [`crate::partition::run_on_private_loopback`]).
    pub(crate) fn private_loopback() -> Network {
        Network::Loopback {
            next: 2,
            private: true,
        }
    }

    pub fn is_loopback(&self) -> bool {
        matches!(self, Network::Loopback { .. })
    }

    /// A new host for a node called `name`, in `region` (regions matter only in namespaces,
    /// where links between regions can be slowed down).
    pub fn host(&mut self, name: &str, region: &str) -> Host {
        match self {
            Network::Loopback { next, .. } => {
                assert!(*next < 255, "out of 127.0.0.x addresses");
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, *next));
                *next += 1;
                Host {
                    name: name.to_string(),
                    ip,
                    netns: None,
                }
            }
            Network::Namespaces(lab) => lab.host(name, region),
        }
    }

    /// A TCP port for a listener on `host`: `well_known` in a namespace, else one the kernel
    /// reports free on the host's address.
    pub fn tcp_port(&self, host: &Host, well_known: u16) -> u16 {
        if host.netns.is_some() {
            return well_known;
        }
        free_tcp_port(host.ip)
    }

    /// A port free for both UDP and TCP on `host` (DNS listens on both).
    pub fn dns_port(&self, host: &Host) -> u16 {
        if host.netns.is_some() {
            return ports::DNS;
        }
        for _ in 0..50 {
            let udp = UdpSocket::bind(SocketAddr::new(host.ip, 0)).expect("a UDP port");
            let port = udp.local_addr().expect("bound").port();
            if TcpListener::bind(SocketAddr::new(host.ip, port)).is_ok() {
                return port;
            }
        }
        panic!("no port free for both UDP and TCP on {}", host.ip);
    }

    /// The address the test process itself listens on for its origins: its own loopback
    /// address, or the bridge's address in namespaces.
    pub fn test_ip(&mut self) -> IpAddr {
        match self {
            Network::Loopback { .. } => self.host("test", "").ip,
            Network::Namespaces(lab) => lab.bridge_ip(),
        }
    }

    /// The address the test's own clients (DNS queries, the API client) send from:
    /// `127.0.0.1` on loopback, the bridge's address in namespaces.
    pub fn client_ip(&self) -> IpAddr {
        match self {
            Network::Loopback { .. } => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Network::Namespaces(lab) => lab.bridge_ip(),
        }
    }
}

/// A port the kernel reports free on `ip` at this moment.
pub fn free_tcp_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
        .port()
}
