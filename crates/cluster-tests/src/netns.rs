//! The namespace variant: each node in a network namespace of its own, as if on its own
//! machine, with `tc netem` delay on the links between regions.
//!
//! ```text
//!   test thread's private namespace                 one namespace per node
//!   ┌──────────────────────────────┐             ┌──────────────────────────┐
//!   │ bridge ob0  10.77.0.1/24     │──veth vhN───│ eth0 10.77.0.N  (outpost)│
//!   │ (origins, API client, DNS    │             └──────────────────────────┘
//!   │  client run here)            │──veth vhM─── ...
//!   └──────────────────────────────┘
//! ```
//!
//! [`Lab::enter`] first moves the calling thread into a new, private network namespace
//! (`unshare(CLONE_NEWNET)`), so the bridge and every `10.77.0.x` address exist only in
//! namespaces this test made: nothing touches the machine's own network. The tokio runtime must
//! be built after that, so that its threads are in the private namespace too (a scenario using
//! namespaces is a plain `#[test]` that builds its runtime itself). Node namespaces are named
//! `op<pid>l<lab>-<n>` and deleted when the [`Lab`] is dropped.
//!
//! Delay between regions: on the bridge side of each node's veth a `prio` qdisc sends packets
//! coming from nodes of other regions through a `netem delay` band, so traffic between regions
//! is delayed in each direction and traffic within a region is not. The test's own address
//! (the client, origins) is in no region and never delayed.
//!
//! Needs root and iproute2 (`ip`); `tc` and the netem qdisc are optional (without them there is
//! no delay, and the reason is printed).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::network::Host;

const BRIDGE: &str = "ob0";

pub struct Lab {
    prefix: String,
    /// Node namespaces made so far: (namespace name, bridge-side veth, ip, region).
    hosts: Vec<(String, String, Ipv4Addr, String)>,
    /// Delay each way between regions, if `tc netem` works here.
    delay: Option<Duration>,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &str) -> Result<(), String> {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

fn tc(args: &str) -> Result<(), String> {
    run("tc", &args.split_whitespace().collect::<Vec<_>>())
}

impl Lab {
    /// Moves this thread into a private network namespace with a bridge, ready for node
    /// namespaces, and asks for `delay` each way between regions. Err with the reason when
    /// that is not possible here (not root, no `ip`); nothing is changed then.
    pub fn enter(delay: Option<Duration>) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        run("ip", &["-V"]).map_err(|e| format!("iproute2 is needed: {e}"))?;
        // SAFETY: unshare changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        ip("link set lo up")?;
        ip(&format!("link add {BRIDGE} type bridge"))?;
        ip(&format!("addr add 10.77.0.1/24 dev {BRIDGE}"))?;
        ip(&format!("link set {BRIDGE} up"))?;
        let delay = match delay {
            Some(d) => match netem_works(d) {
                Ok(()) => Some(d),
                Err(e) => {
                    eprintln!("cluster-tests: no delay between regions: {e}");
                    None
                }
            },
            None => None,
        };
        static LABS: AtomicU32 = AtomicU32::new(0);
        let lab = LABS.fetch_add(1, Ordering::Relaxed);
        Ok(Lab {
            prefix: format!("op{}l{lab}", std::process::id()),
            hosts: Vec::new(),
            delay,
        })
    }

    /// The test's own address on the bridge (clients and origins).
    pub fn bridge_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))
    }

    /// The delay each way between regions in force (None: none, or `tc` unavailable).
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// A new namespace for node `name`, wired to the bridge.
    pub fn host(&mut self, name: &str, region: &str) -> Host {
        let n = self.hosts.len() + 2;
        assert!(n < 255, "out of 10.77.0.x addresses");
        let ns = format!("{}-{n}", self.prefix);
        let veth = format!("vh{n}");
        let addr = Ipv4Addr::new(10, 77, 0, n as u8);
        let setup = || -> Result<(), String> {
            ip(&format!("netns add {ns}"))?;
            ip(&format!(
                "link add {veth} type veth peer name eth0 netns {ns}"
            ))?;
            ip(&format!("link set {veth} master {BRIDGE} up"))?;
            ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
            ip(&format!("-n {ns} link set eth0 up"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = ip(&format!("netns del {ns}"));
            panic!("namespace for {name}: {e}");
        }
        if let Some(d) = self.delay {
            self.delay_between_regions(&veth, addr, region, d);
        }
        self.hosts
            .push((ns.clone(), veth, addr, region.to_string()));
        let fd: OwnedFd = File::open(format!("/run/netns/{ns}"))
            .unwrap_or_else(|e| panic!("/run/netns/{ns}: {e}"))
            .into();
        Host {
            name: name.to_string(),
            ip: IpAddr::V4(addr),
            netns: Some(Arc::new(fd)),
        }
    }

    /// The namespace and bridge-side veth of the node at `ip`.
    fn node(&self, ip: IpAddr) -> Option<(&str, &str)> {
        self.hosts
            .iter()
            .find(|(_, _, addr, _)| IpAddr::V4(*addr) == ip)
            .map(|(ns, veth, ..)| (ns.as_str(), veth.as_str()))
    }

    /// Cuts (`on`) or restores the link between the nodes at `a` and `b`, both ways, with a
    /// blackhole route to the other in each one's namespace. Their links to everything else
    /// (the test's clients, other nodes) stay up.
    pub fn blackhole(&self, a: IpAddr, b: IpAddr, on: bool) -> Result<(), String> {
        let verb = if on { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let (ns, _) = self
                .node(from)
                .ok_or_else(|| format!("no node at {from}"))?;
            ip(&format!("-n {ns} route {verb} blackhole {to}/32"))?;
        }
        Ok(())
    }

    /// Takes the node at `addr` off the bridge (`up` false) or puts it back: its veth goes
    /// down, so nothing reaches it and nothing it sends gets anywhere, as when a site loses
    /// its uplinks. Its processes keep running.
    pub fn set_link(&self, addr: IpAddr, up: bool) -> Result<(), String> {
        let (_, veth) = self
            .node(addr)
            .ok_or_else(|| format!("no node at {addr}"))?;
        ip(&format!(
            "link set {veth} {}",
            if up { "up" } else { "down" }
        ))
    }

    /// Delays packets between the new host and every host of another region, both ways.
    fn delay_between_regions(&self, veth: &str, addr: Ipv4Addr, region: &str, d: Duration) {
        if region.is_empty() {
            return;
        }
        let ms = d.as_millis();
        let qdisc = |dev: &str| -> Result<(), String> {
            tc(&format!(
                "qdisc add dev {dev} root handle 1: prio bands 4 priomap 0 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2"
            ))?;
            tc(&format!(
                "qdisc add dev {dev} parent 1:4 handle 40: netem delay {ms}ms"
            ))
        };
        let from = |dev: &str, src: Ipv4Addr| -> Result<(), String> {
            tc(&format!(
                "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip src {src}/32 flowid 1:4"
            ))
        };
        let wire = || -> Result<(), String> {
            qdisc(veth)?;
            for (_, other_veth, other_addr, other_region) in &self.hosts {
                if other_region.is_empty() || other_region == region {
                    continue;
                }
                from(veth, *other_addr)?;
                from(other_veth, addr)?;
            }
            Ok(())
        };
        if let Err(e) = wire() {
            panic!("delay between regions for {addr}: {e}");
        }
    }
}

/// Checks that what [`Lab::delay_between_regions`] uses (a `prio` qdisc, a `netem` child, a
/// `u32` filter) can be made here, on the bridge, and removes it again.
fn netem_works(d: Duration) -> Result<(), String> {
    run("tc", &["-V"]).map_err(|e| format!("tc is not installed: {e}"))?;
    let r = (|| {
        tc(&format!(
            "qdisc add dev {BRIDGE} root handle 1: prio bands 4 priomap 0 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2"
        ))?;
        tc(&format!(
            "qdisc add dev {BRIDGE} parent 1:4 handle 40: netem delay {}ms",
            d.as_millis()
        ))?;
        tc(&format!(
            "filter add dev {BRIDGE} parent 1: protocol ip prio 1 u32 match ip src 10.77.0.254/32 flowid 1:4"
        ))
    })();
    let _ = tc(&format!("qdisc del dev {BRIDGE} root"));
    r.map_err(|e| format!("this kernel cannot delay links ({e})"))
}

/// A listening socket on `addr` inside `host`'s namespace (made on a short-lived thread that
/// enters it; a socket stays in the namespace it was made in).
pub fn listen_in(host: &Host, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let Some(fd) = host.netns.clone() else {
        return TcpListener::bind(addr);
    };
    std::thread::spawn(move || {
        // SAFETY: setns moves only this new thread, which ends right after binding.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        TcpListener::bind(addr)
    })
    .join()
    .map_err(|_| std::io::Error::other("the thread binding in the namespace panicked"))?
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (ns, ..) in &self.hosts {
            if let Err(e) = ip(&format!("netns del {ns}")) {
                eprintln!("cluster-tests: {e}");
            }
        }
    }
}

/// Runs `scenario` on a [`Cluster`](crate::Cluster) in namespaces, on a tokio runtime built
/// after this thread entered its private namespace. Returns false, having printed why, when
/// namespaces cannot be made here (not root, no `ip`): the caller's test then checks nothing.
pub fn run_scenario<F, Fut>(delay: Option<Duration>, scenario: F) -> bool
where
    F: FnOnce(crate::Cluster) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let lab = match Lab::enter(delay) {
        Ok(lab) => lab,
        Err(reason) => {
            eprintln!("skipped: the namespace variant cannot run here: {reason}");
            return false;
        }
    };
    // Built after unshare: the runtime's threads inherit the private namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(scenario(crate::Cluster::in_namespaces(lab)));
    true
}
