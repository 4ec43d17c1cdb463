#!/usr/bin/env python3
"""Medians and paired ratios from the raw rows `bench/cache-zipf.sh` writes.

    python3 bench/cache-zipf-report.py target/bench-zipf.tsv [candidate]

Per peer: medians over repetitions. Ratios: candidate / peer within each repetition (both saw
the same request sequence), then the median over repetitions.
"""
import csv
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def derived(r):
    req = num(r["requests"])
    cpu = num(r["proxy_cpu_s"])
    dur = num(r["duration_s"])
    sl = num(r["self_lookups"])
    sh = num(r["self_hits"])
    return {
        "rps": num(r["rps"]),
        "p50": num(r["p50_ms"]),
        "p99": num(r["p99_ms"]),
        "origin": num(r["origin_requests"]),
        "hit": num(r["hit_ratio"]),
        "hdr_hit": num(r["header_hits"]) / req if req else None,
        "self_hit": sh / sl if sl else None,
        "cores": cpu / dur if cpu is not None and dur else None,
        "per_cpu": req / cpu if cpu else None,
        "other": num(r["other_cpu_s"]) / dur if dur else None,
        "errors": num(r["errors"]),
        "peak": num(r.get("peak_objects")),
    }


def main():
    path = sys.argv[1]
    cand = sys.argv[2] if len(sys.argv) > 2 else "outpost"
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    by = {}
    for r in rows:
        by.setdefault(r["peer"], {})[r["rep"]] = (derived(r), r)
    print("| target | hit ratio (1 - origin/client) | hit ratio (cache's own) | origin requests "
          "| rps | p50 / p99 ms | proxy cores | req/CPU-s | errors | peak objects held | held at the end (last rep) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for peer, reps in by.items():
        ds = [d for d, _ in reps.values()]
        m = {k: med([d[k] for d in ds]) for k in ds[0]}
        last = reps[max(reps, key=int)][1]["held"]
        own = "%.3f" % m["self_hit"] if m["self_hit"] is not None else "%.3f (X-Cache)" % m["hdr_hit"]
        peak = f"{m['peak']:.0f}" if m["peak"] is not None else "NA"
        print(f"| {peer} | {m['hit']:.3f} | {own} | {m['origin']:.0f} | {m['rps'] / 1000:.1f}k "
              f"| {m['p50']:.2f} / {m['p99']:.2f} | {m['cores']:.2f} | {m['per_cpu'] / 1000:.1f}k "
              f"| {m['errors']:.0f} | {peak} | {last} |")
    others = [d["other"] for reps in by.values() for d, _ in reps.values()]
    print(f"\nOther processes' CPU during measured runs: median {med(others):.2f} cores, "
          f"max {max(others):.2f}.")
    if cand not in by:
        return
    print(f"\nPaired ratios, {cand} / peer (median over repetitions; origin requests and p99: "
          f"<1 is better for {cand}; rps and req/CPU-s: >1 is better):\n")
    print("| peer | origin requests | rps | req/CPU-s | p99 |")
    print("|---|---|---|---|---|")
    for peer, reps in by.items():
        if peer == cand:
            continue
        common = [k for k in reps if k in by[cand]]

        def ratio(key):
            xs = []
            for k in common:
                a, b = by[cand][k][0][key], reps[k][0][key]
                if a is not None and b:
                    xs.append(a / b)
            return med(xs)

        print(f"| {peer} | {ratio('origin'):.2f} | {ratio('rps'):.2f} "
              f"| {ratio('per_cpu'):.2f} | {ratio('p99'):.2f} |")


if __name__ == "__main__":
    main()
