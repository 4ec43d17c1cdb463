//! Choosing a peer: smooth weighted round-robin (nginx's), least connections, a ketama ring
//! for consistent hashing, and peak-EWMA with two random choices. Primary peers first; backup
//! peers only when no primary is available. Each algorithm is a function over the peers, with
//! availability, time and randomness passed in.

use std::sync::Mutex;

use super::peer::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    RoundRobin,
    LeastConn,
    ConsistentHash,
    PeakEwma,
}

/// The peers of an upstream at one moment (static, or the last DNS answer).
#[derive(Debug)]
pub struct PeerSet {
    pub primary: Group,
    pub backup: Group,
}

#[derive(Debug)]
pub struct Group {
    pub peers: Vec<Peer>,
    rr_current: Mutex<Vec<i64>>,
    ring: Vec<(u64, usize)>,
}

/// Which peer was picked: its group and index, stable for the life of the `PeerSet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub backup: bool,
    pub index: usize,
}

impl PeerSet {
    pub fn new(peers: Vec<Peer>, kind: BalancerKind) -> PeerSet {
        let (backup, primary): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| p.backup);
        PeerSet {
            primary: Group::new(primary, kind),
            backup: Group::new(backup, kind),
        }
    }

    pub fn get(&self, pick: Pick) -> &Peer {
        let g = if pick.backup {
            &self.backup
        } else {
            &self.primary
        };
        &g.peers[pick.index]
    }

    pub fn len(&self) -> usize {
        self.primary.peers.len() + self.backup.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> impl Iterator<Item = &Peer> {
        self.primary.peers.iter().chain(self.backup.peers.iter())
    }

    /// Picks a peer that is available and not in `tried`. `hash` is the request's key hash for
    /// consistent hashing; `random` a fresh random number.
    pub fn select(
        &self,
        kind: BalancerKind,
        hash: u64,
        tried: &[Pick],
        now_ms: u64,
        random: u64,
    ) -> Option<Pick> {
        // As nginx: the only server of an upstream is never taken out by its failures
        // (`max_fails` is ignored); being down for a few seconds would only turn the next
        // requests into 502s. An active health check still takes it out.
        let single = self.len() == 1;
        for (backup, group) in [(false, &self.primary), (true, &self.backup)] {
            let eligible = |i: usize| {
                let state = &group.peers[i].state;
                !tried.contains(&Pick { backup, index: i })
                    && if single {
                        state.is_healthy()
                    } else {
                        state.is_available(now_ms)
                    }
            };
            let index = match kind {
                // One peer: nothing to balance, and no shared state to touch.
                _ if group.peers.len() == 1 => eligible(0).then_some(0),
                BalancerKind::RoundRobin => group.round_robin(eligible),
                BalancerKind::LeastConn => least_conn(&group.peers, eligible, random),
                BalancerKind::ConsistentHash => ring_lookup(&group.ring, hash, eligible),
                BalancerKind::PeakEwma => peak_ewma(&group.peers, eligible, random),
            };
            if let Some(index) = index {
                return Some(Pick { backup, index });
            }
        }
        None
    }
}

impl Group {
    fn new(peers: Vec<Peer>, kind: BalancerKind) -> Group {
        let ring = if kind == BalancerKind::ConsistentHash {
            build_ring(&peers)
        } else {
            Vec::new()
        };
        Group {
            rr_current: Mutex::new(vec![0; peers.len()]),
            peers,
            ring,
        }
    }

    /// nginx's smooth weighted round-robin: every eligible peer gains its weight, the largest
    /// wins and pays back the total.
    fn round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.rr_current.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, p) in self.peers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = p.weight.max(1) as i64;
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

/// Fewest requests in flight relative to weight; ties broken at random.
fn least_conn(peers: &[Peer], eligible: impl Fn(usize) -> bool, random: u64) -> Option<usize> {
    let mut best: Vec<usize> = Vec::new();
    let mut best_score = f64::INFINITY;
    for (i, p) in peers.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let score = p.state.active() as f64 / p.weight.max(1) as f64;
        if score < best_score {
            best_score = score;
            best.clear();
        }
        if score == best_score {
            best.push(i);
        }
    }
    (!best.is_empty()).then(|| best[(random % best.len() as u64) as usize])
}

/// Power of two choices over the peak-EWMA cost.
fn peak_ewma(peers: &[Peer], eligible: impl Fn(usize) -> bool, random: u64) -> Option<usize> {
    let candidates: Vec<usize> = (0..peers.len()).filter(|i| eligible(*i)).collect();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = candidates[(random % n as u64) as usize];
            let mut b = candidates[((random >> 32) % (n as u64 - 1)) as usize];
            if b == a {
                b = candidates[n - 1];
            }
            let cost = |i: usize| peers[i].state.ewma_cost(peers[i].weight);
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

/// Points per unit of weight on the ring (as ketama's 160).
const RING_POINTS: u32 = 160;

fn build_ring(peers: &[Peer]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        for n in 0..RING_POINTS * p.weight.max(1) {
            ring.push((hash_bytes(format!("{}-{n}", p.addr).as_bytes()), i));
        }
    }
    ring.sort_unstable();
    ring
}

/// The first point at or after the hash (wrapping) whose peer is eligible.
fn ring_lookup(
    ring: &[(u64, usize)],
    hash: u64,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    if ring.is_empty() {
        return None;
    }
    let start = ring.partition_point(|(h, _)| *h < hash);
    (0..ring.len())
        .map(|k| ring[(start + k) % ring.len()].1)
        .find(|i| eligible(*i))
}

/// FNV-1a with a final avalanche: stable across processes and versions, so every edge node
/// maps a key to the same peer.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests;
