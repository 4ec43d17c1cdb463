use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::upstream::peer::PeerState;

fn peers(spec: &[(u32, bool)]) -> Vec<Peer> {
    spec.iter()
        .enumerate()
        .map(|(i, (w, backup))| Peer {
            addr: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
            name: Arc::from(format!("p{i}")),
            weight: *w,
            backup: *backup,
            state: Arc::new(PeerState::default()),
        })
        .collect()
}

fn counts(
    set: &PeerSet,
    kind: BalancerKind,
    n: usize,
    hash: impl Fn(usize) -> u64,
) -> HashMap<usize, usize> {
    let mut c = HashMap::new();
    let mut rng = 0x9E3779B97F4A7C15u64;
    for i in 0..n {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = set.select(kind, hash(i), &[], 1, rng).unwrap();
        *c.entry(pick.index + if pick.backup { 100 } else { 0 })
            .or_default() += 1;
    }
    c
}

#[test]
fn round_robin_follows_weights_smoothly() {
    let set = PeerSet::new(
        peers(&[(5, false), (1, false), (1, false)]),
        BalancerKind::RoundRobin,
    );
    let seq: Vec<usize> = (0..7)
        .map(|_| {
            set.select(BalancerKind::RoundRobin, 0, &[], 1, 0)
                .unwrap()
                .index
        })
        .collect();
    // nginx's documented sequence for weights 5,1,1: a a b a c a a
    assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn unavailable_and_tried_peers_are_skipped_and_backups_used_last() {
    let ps = peers(&[(1, false), (1, false), (1, true)]);
    ps[0].state.set_healthy(false);
    let set = PeerSet::new(ps, BalancerKind::RoundRobin);
    let tried = [Pick {
        backup: false,
        index: 1,
    }];
    assert_eq!(
        set.select(BalancerKind::RoundRobin, 0, &tried, 1, 0),
        Some(Pick {
            backup: true,
            index: 0
        })
    );
    assert_eq!(
        set.select(BalancerKind::RoundRobin, 0, &[], 1, 0),
        Some(Pick {
            backup: false,
            index: 1
        })
    );
}

#[test]
fn least_conn_prefers_idle_peers() {
    let set = PeerSet::new(
        peers(&[(1, false), (1, false), (1, false)]),
        BalancerKind::LeastConn,
    );
    let _busy: Vec<_> = (0..3)
        .map(|_| set.primary.peers[0].state.begin_request())
        .collect();
    let _one = set.primary.peers[1].state.begin_request();
    let c = counts(&set, BalancerKind::LeastConn, 100, |_| 0);
    assert_eq!(c.get(&2), Some(&100));
}

#[test]
fn least_conn_spreads_ties() {
    let set = PeerSet::new(peers(&[(1, false), (1, false)]), BalancerKind::LeastConn);
    let c = counts(&set, BalancerKind::LeastConn, 1000, |_| 0);
    assert!(c[&0] > 350 && c[&1] > 350, "{c:?}");
}

#[test]
fn consistent_hash_is_stable_and_moves_few_keys_when_a_peer_goes() {
    let ps = peers(&[(1, false), (1, false), (1, false), (1, false)]);
    let set = PeerSet::new(ps.clone(), BalancerKind::ConsistentHash);
    let keys: Vec<u64> = (0..2000)
        .map(|i| hash_bytes(format!("user-{i}").as_bytes()))
        .collect();
    let before: Vec<usize> = keys
        .iter()
        .map(|h| {
            set.select(BalancerKind::ConsistentHash, *h, &[], 1, 7)
                .unwrap()
                .index
        })
        .collect();
    let again: Vec<usize> = keys
        .iter()
        .map(|h| {
            set.select(BalancerKind::ConsistentHash, *h, &[], 1, 99)
                .unwrap()
                .index
        })
        .collect();
    assert_eq!(
        before, again,
        "same key, same peer, whatever the randomness"
    );
    let mut per_peer = [0; 4];
    before.iter().for_each(|i| per_peer[*i] += 1);
    assert!(per_peer.iter().all(|n| *n > 300), "{per_peer:?}");
    // Peer 2 goes down: only its keys move.
    ps[2].state.set_healthy(false);
    let after: Vec<usize> = keys
        .iter()
        .map(|h| {
            set.select(BalancerKind::ConsistentHash, *h, &[], 1, 7)
                .unwrap()
                .index
        })
        .collect();
    for (b, a) in before.iter().zip(&after) {
        if *b != 2 {
            assert_eq!(b, a);
        } else {
            assert_ne!(*a, 2);
        }
    }
}

#[test]
fn peak_ewma_avoids_the_slow_peer() {
    let set = PeerSet::new(
        peers(&[(1, false), (1, false), (1, false)]),
        BalancerKind::PeakEwma,
    );
    set.primary.peers[0].state.observe_latency(50_000.0, 1);
    set.primary.peers[1].state.observe_latency(1_000.0, 1);
    set.primary.peers[2].state.observe_latency(1_200.0, 1);
    let c = counts(&set, BalancerKind::PeakEwma, 3000, |_| 0);
    assert_eq!(c.get(&0), None, "{c:?}");
    assert!(c[&1] > c[&2], "{c:?}");
}

#[test]
fn the_only_peer_of_an_upstream_is_not_taken_out_by_failures_but_is_by_health_checks() {
    let passive = crate::upstream::peer::PassiveParams {
        enabled: true,
        max_fails: 1,
        fail_timeout_ms: 10_000,
    };
    let single = PeerSet::new(peers(&[(1, false)]), BalancerKind::RoundRobin);
    single
        .get(Pick {
            backup: false,
            index: 0,
        })
        .state
        .record_failure(100, &passive);
    assert!(
        single
            .select(BalancerKind::RoundRobin, 0, &[], 200, 0)
            .is_some()
    );
    single
        .get(Pick {
            backup: false,
            index: 0,
        })
        .state
        .set_healthy(false);
    assert!(
        single
            .select(BalancerKind::RoundRobin, 0, &[], 200, 0)
            .is_none()
    );

    // With a backup there are two servers: the failed primary is skipped.
    let two = PeerSet::new(peers(&[(1, false), (1, true)]), BalancerKind::RoundRobin);
    two.get(Pick {
        backup: false,
        index: 0,
    })
    .state
    .record_failure(100, &passive);
    let pick = two
        .select(BalancerKind::RoundRobin, 0, &[], 200, 0)
        .unwrap();
    assert!(pick.backup);
}
