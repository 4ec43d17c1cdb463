//! Network partitions: cutting the links between nodes and restoring them, while every process
//! keeps running.
//!
//! - **In namespaces** ([`crate::netns`]) each node has its own routing table: a cut adds a
//!   blackhole route to the other node in each of the two namespaces. A node can also be
//!   taken off the network whole ([`Cluster::take_offline`]: its veth goes down).
//! - **On loopback** every node shares one routing table, so links are cut with routing rules
//!   that match both addresses (`ip rule add from A to B blackhole`), which only works in a
//!   namespace of the test's own: [`run_on_private_loopback`] moves the test thread into a new
//!   network namespace first, with the rule that delivers local traffic moved behind the cuts
//!   (as `crates/control-plane/tests/partition.rs` does in-process). Each control-plane node
//!   sends its Raft and forwarded requests from the address it listens on, so a rule on the
//!   two addresses cuts exactly the link between two nodes; the test's own clients send from
//!   `127.0.0.1` and still reach every node.
//!
//! Both need root; a scenario without it is skipped with the reason printed.

use std::net::IpAddr;
use std::process::Command;

use crate::Cluster;
use crate::network::Network;

fn ip(args: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves this thread into a new network namespace with `lo` up, where rules at preference 10
/// come before local delivery (moved from 0 to 100). Err with the reason when not possible.
fn enter_private_loopback() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("a private network namespace needs root".into());
    }
    ip("-V").map_err(|e| format!("iproute2 is needed: {e}"))?;
    // SAFETY: unshare changes only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    ip("link set lo up")?;
    ip("rule add pref 100 lookup local")?;
    ip("rule del pref 0")?;
    Ok(())
}

/// Runs `scenario` on a loopback [`Cluster`] in a private network namespace (so that links
/// can be cut with [`Cluster::set_cut`] and [`Cluster::isolate_cp`]), on a tokio runtime built after this thread entered it.
/// Returns false, having printed why, when that is not possible here (not root, no `ip`).
pub fn run_on_private_loopback<F, Fut>(scenario: F) -> bool
where
    F: FnOnce(Cluster) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Err(reason) = enter_private_loopback() {
        eprintln!("skipped: the partitioned loopback variant cannot run here: {reason}");
        return false;
    }
    // Built after unshare: the runtime's threads inherit the private namespace, and so do the
    // processes this thread starts.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(scenario(Cluster::on(Network::private_loopback())));
    true
}

impl Cluster {
    /// Cuts (`on`) or restores the link between the hosts at `a` and `b`, both ways. Panics
    /// when links cannot be cut on this network (plain loopback).
    pub fn set_cut(&self, a: IpAddr, b: IpAddr, on: bool) {
        let r = match &self.net {
            Network::Loopback { private: true, .. } => {
                let verb = if on { "add" } else { "del" };
                [(a, b), (b, a)].iter().try_for_each(|(x, y)| {
                    ip(&format!("rule {verb} pref 10 from {x} to {y} blackhole"))
                })
            }
            Network::Loopback { private: false, .. } => Err(
                "links cannot be cut on the shared loopback: use run_on_private_loopback".into(),
            ),
            Network::Namespaces(lab) => lab.blackhole(a, b, on),
        };
        if let Err(e) = r {
            panic!(
                "{} the link between {a} and {b}: {e}",
                if on { "cutting" } else { "restoring" }
            );
        }
    }

    /// Cuts control-plane node `id` off from every other control-plane node. Clients still
    /// reach it, and it still reaches edges.
    pub fn isolate_cp(&self, id: u64) {
        self.set_cp_links(id, false);
    }

    /// Restores what [`Cluster::isolate_cp`] cut.
    pub fn reconnect_cp(&self, id: u64) {
        self.set_cp_links(id, true);
    }

    fn set_cp_links(&self, id: u64, up: bool) {
        let me = self.cp(id).host.ip;
        for other in self.cps.iter().filter(|n| n.id != id) {
            self.set_cut(me, other.host.ip, !up);
        }
        eprintln!(
            "cluster-tests: cp{id} {} the other control-plane nodes",
            if up { "reconnected to" } else { "cut off from" }
        );
    }

    /// In namespaces, takes edge `i`'s host off the network (its link goes down; the process
    /// keeps running), or puts it back with `online` true.
    pub fn set_edge_online(&self, i: usize, online: bool) {
        let Network::Namespaces(lab) = &self.net else {
            panic!("taking a host offline needs the namespace variant");
        };
        let edge = &self.edges[i];
        lab.set_link(edge.host.ip, online)
            .unwrap_or_else(|e| panic!("{}: {e}", edge.name));
    }

    /// [`Cluster::set_edge_online`] with `false`.
    pub fn take_offline(&self, i: usize) {
        self.set_edge_online(i, false);
    }
}
