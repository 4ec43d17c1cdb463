#!/usr/bin/env python3
"""Reference hit ratios for `bench/cache-zipf.sh`: replays the exact request sequences that
`zipf_load` draws for one repetition (same splitmix64 generator, same CDF search) through two
model caches holding K objects: an exact LRU, and an oracle that keeps the K most popular
objects once they have been seen (an upper bound for any admission policy of that size).

    python3 bench/cache-zipf-model.py [rep] [K ...]     # defaults: rep 1, K = 16384 18300 19022 25800

Assumes the script's defaults (OBJECTS=50000, ZIPF_S=1.0, SEED=1, 200000 + 200000 requests).
"""
import bisect
import sys
from collections import OrderedDict

M64 = (1 << 64) - 1


def sequence(n, s, seed, length):
    cdf, total = [], 0.0
    for k in range(1, n + 1):
        total += 1.0 / k**s
        cdf.append(total)
    state, out = seed, []
    for _ in range(length):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        u = (z >> 11) / float(1 << 53) * total
        out.append(min(bisect.bisect_left(cdf, u), n - 1))
    return out


def lru(warm, meas, k):
    cache, misses = OrderedDict(), 0
    for measuring, seq in ((False, warm), (True, meas)):
        for x in seq:
            if x in cache:
                cache.move_to_end(x)
                continue
            misses += measuring
            cache[x] = True
            if len(cache) > k:
                cache.popitem(last=False)
    return 1 - misses / len(meas)


def oracle(warm, meas, k):
    seen, misses = set(warm), 0
    for x in meas:
        if not (x < k and x in seen):
            misses += 1
        seen.add(x)
    return 1 - misses / len(meas)


def main():
    rep = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    sizes = [int(a) for a in sys.argv[2:]] or [16384, 18300, 19022, 25800]
    n, s, seed = 50000, 1.0, 1
    warm = sequence(n, s, seed * 1000 + rep * 2, 200000)
    meas = sequence(n, s, seed * 1000 + rep * 2 + 1, 200000)
    for k in sizes:
        print(f"K={k}: LRU {lru(warm, meas, k):.3f}, top-K oracle {oracle(warm, meas, k):.3f}")


if __name__ == "__main__":
    main()
