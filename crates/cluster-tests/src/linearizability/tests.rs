use super::*;

/// `client`'s operation on key `k`, from `a` to `b` milliseconds.
fn op(client: usize, k: &str, a: u64, b: u64, op: Op, outcome: Outcome) -> Entry {
    Entry {
        client,
        key: k.to_string(),
        op,
        outcome,
        invoked: Duration::from_millis(a),
        completed: Duration::from_millis(b),
    }
}

fn write(client: usize, a: u64, b: u64, v: u64) -> Entry {
    op(client, "k", a, b, Op::Write(v), Outcome::Written)
}

/// A write that got no answer (or a 503): its completion time is when the client gave up.
fn lost_write(client: usize, a: u64, b: u64, v: u64) -> Entry {
    op(client, "k", a, b, Op::Write(v), Outcome::Indeterminate)
}

fn read(client: usize, a: u64, b: u64, v: Option<u64>) -> Entry {
    op(client, "k", a, b, Op::Read, Outcome::Returned(v))
}

fn linearizable(h: &[Entry]) -> bool {
    let violations = check(h);
    for v in &violations {
        eprintln!("{v}");
    }
    violations.is_empty()
}

#[test]
fn accepts_an_empty_history_and_a_sequential_one() {
    assert!(linearizable(&[]));
    assert!(linearizable(&[
        read(0, 0, 1, None),
        write(0, 2, 3, 1),
        read(1, 4, 5, Some(1)),
        write(1, 6, 7, 2),
        read(0, 8, 9, Some(2)),
    ]));
}

#[test]
fn rejects_a_stale_read_after_a_completed_write() {
    let h = [
        write(0, 0, 10, 1),
        write(0, 20, 30, 2),
        read(1, 40, 50, Some(1)),
    ];
    assert!(!linearizable(&h));
    match &check(&h)[0] {
        Violation::NoOrder { placed, stuck, .. } => {
            assert_eq!(placed.len(), 2, "both writes fit, the read does not");
            assert_eq!(stuck, &vec![h[2].clone()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_reading_nothing_after_a_completed_write() {
    assert!(!linearizable(&[write(0, 0, 10, 1), read(1, 20, 30, None)]));
}

#[test]
fn rejects_a_read_of_a_value_never_written() {
    let h = [write(0, 0, 10, 1), read(1, 20, 30, Some(7))];
    assert!(matches!(
        check(&h).as_slice(),
        [Violation::NeverWritten { read }] if *read == h[1]
    ));
    // Not even an indeterminate write of another value makes it possible.
    assert!(!linearizable(&[
        lost_write(0, 0, 10, 8),
        read(1, 20, 30, Some(7))
    ]));
}

#[test]
fn accepts_reads_overlapping_a_write_seeing_either_side() {
    assert!(linearizable(&[
        write(0, 0, 100, 1),
        read(1, 10, 20, None),
        read(2, 15, 30, Some(1)),
        read(1, 40, 50, Some(1)),
    ]));
}

#[test]
fn rejects_a_read_going_back_to_the_old_value_once_the_new_one_was_seen() {
    // Both reads overlap the write, but once one saw 2 a later read cannot see 1 again.
    assert!(!linearizable(&[
        write(0, 0, 10, 1),
        write(0, 20, 100, 2),
        read(1, 30, 40, Some(2)),
        read(2, 50, 60, Some(1)),
    ]));
}

#[test]
fn concurrent_writes_may_land_in_either_order_but_only_one() {
    assert!(linearizable(&[
        write(0, 0, 100, 1),
        write(1, 0, 100, 2),
        read(2, 10, 20, Some(2)),
        read(2, 30, 40, Some(1)),
    ]));
    assert!(!linearizable(&[
        write(0, 0, 100, 1),
        write(1, 0, 100, 2),
        read(2, 10, 20, Some(1)),
        read(2, 30, 40, Some(2)),
        read(2, 50, 60, Some(1)),
    ]));
}

#[test]
fn an_indeterminate_write_may_take_effect_late_or_never() {
    // Written at some point after its invocation, even long after the client gave up.
    assert!(linearizable(&[
        write(0, 0, 10, 1),
        lost_write(1, 20, 30, 2),
        read(2, 40, 50, Some(1)),
        read(2, 60, 70, Some(2)),
        read(0, 80, 90, Some(2)),
    ]));
    // Never written.
    assert!(linearizable(&[
        write(0, 0, 10, 1),
        lost_write(1, 20, 30, 2),
        read(2, 40, 50, Some(1)),
        write(0, 60, 70, 3),
        read(2, 80, 90, Some(3)),
    ]));
    // But not before it was invoked.
    assert!(!linearizable(&[
        write(0, 0, 10, 1),
        read(2, 20, 30, Some(2)),
        lost_write(1, 40, 50, 2),
    ]));
}

#[test]
fn rejects_the_old_value_coming_back_after_an_indeterminate_write_was_seen() {
    assert!(!linearizable(&[
        write(0, 0, 10, 1),
        lost_write(1, 20, 30, 2),
        read(2, 40, 50, Some(2)),
        read(2, 60, 70, Some(1)),
    ]));
}

#[test]
fn indeterminate_reads_constrain_nothing() {
    assert!(linearizable(&[
        write(0, 0, 10, 1),
        op(1, "k", 20, 30, Op::Read, Outcome::Indeterminate),
        read(1, 40, 50, Some(1)),
    ]));
}

#[test]
fn keys_are_separate_registers() {
    let w = |k: &str, a, b, v| op(0, k, a, b, Op::Write(v), Outcome::Written);
    let r = |k: &str, a, b, v| op(1, k, a, b, Op::Read, Outcome::Returned(v));
    assert!(linearizable(&[
        w("a", 0, 10, 1),
        r("b", 20, 30, None),
        w("b", 40, 50, 2),
        r("a", 60, 70, Some(1)),
    ]));
    let bad = [w("a", 0, 10, 1), r("a", 20, 30, None), r("b", 20, 30, None)];
    let violations = check(&bad);
    assert_eq!(violations.len(), 1);
    assert!(matches!(&violations[0], Violation::NoOrder { key, .. } if key == "a"));
}

/// A tiny deterministic generator (splitmix64), so these tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history of a real register: `clients` clients, each running operations one after the
/// other; each operation takes effect at an instant inside its interval, and reads return
/// what the register held at theirs. Some writes are marked indeterminate, and a few of
/// those never take effect.
fn simulated(seed: u64, clients: usize, per_client: usize) -> Vec<Entry> {
    let mut rng = Rng(seed);
    // (effect instant, client, invoked, completed, op, indeterminate, takes effect)
    let mut planned = Vec::new();
    let mut value = 100;
    for c in 0..clients {
        let mut t = rng.below(10);
        for _ in 0..per_client {
            let len = 1 + rng.below(40);
            let effect = t + rng.below(len + 1);
            let op = if rng.below(2) == 0 {
                value += 1;
                Op::Write(value)
            } else {
                Op::Read
            };
            let lost = matches!(op, Op::Write(_)) && rng.below(8) == 0;
            let happens = !lost || rng.below(3) != 0;
            planned.push((effect, c, t, t + len, op, lost, happens));
            t += len + rng.below(5);
        }
    }
    planned.sort_by_key(|p| (p.0, p.1));
    let mut register = None;
    planned
        .into_iter()
        .map(|(_, client, a, b, op, lost, happens)| {
            let outcome = match op {
                Op::Write(v) => {
                    if happens {
                        register = Some(v);
                    }
                    if lost {
                        Outcome::Indeterminate
                    } else {
                        Outcome::Written
                    }
                }
                Op::Read => Outcome::Returned(register),
            };
            Entry {
                client,
                key: "k".into(),
                op,
                outcome,
                invoked: Duration::from_millis(a),
                completed: Duration::from_millis(b),
            }
        })
        .collect()
}

#[test]
fn accepts_every_history_a_real_register_produces() {
    for seed in 0..200 {
        let h = simulated(seed, 4, 40);
        assert!(linearizable(&h), "seed {seed}");
    }
}

#[test]
fn checks_a_long_concurrent_history_quickly() {
    let h = simulated(7, 6, 100);
    let started = std::time::Instant::now();
    assert!(linearizable(&h));
    eprintln!("600 operations checked in {:?}", started.elapsed());
}

#[test]
fn rejects_a_real_register_history_with_one_read_made_stale() {
    // Take a history from a real register and make one read return the value before the
    // last write that completed before the read began: that is never linearizable when that
    // write and the one before it were both acknowledged and did not overlap the read.
    let mut found = 0;
    for seed in 0..200 {
        let mut h = simulated(seed, 3, 30);
        let Some(r) = h.iter().position(|e| {
            let Outcome::Returned(Some(v)) = e.outcome else {
                return false;
            };
            // The write of v, and one acknowledged write before it, both completed before the
            // read was invoked, and no other write overlaps the read.
            h.iter().any(|w| {
                w.op == Op::Write(v) && w.outcome == Outcome::Written && w.completed < e.invoked
            }) && h
                .iter()
                .filter(|w| matches!(w.op, Op::Write(_)))
                .all(|w| w.completed < e.invoked || w.invoked > e.completed)
        }) else {
            continue;
        };
        let Outcome::Returned(Some(v)) = h[r].outcome else {
            unreachable!()
        };
        // Acknowledged writes only: an indeterminate one may take effect at any time.
        let writes: Vec<&Entry> = h
            .iter()
            .filter(|w| w.outcome == Outcome::Written && w.completed < h[r].invoked)
            .collect();
        let Some(older) = writes.iter().find(|w| {
            w.op != Op::Write(v)
                && writes
                    .iter()
                    .any(|x| x.op == Op::Write(v) && w.completed < x.invoked)
        }) else {
            continue;
        };
        let Op::Write(old) = older.op else {
            unreachable!()
        };
        h[r].outcome = Outcome::Returned(Some(old));
        assert!(
            !linearizable(&h),
            "seed {seed}: read {r} made to return {old}"
        );
        found += 1;
    }
    assert!(
        found > 20,
        "only {found} histories had a read to make stale"
    );
}
