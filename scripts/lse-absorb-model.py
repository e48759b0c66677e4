#!/usr/bin/env python3
"""How often the on-chip Sinkhorn passes fall back to the online maximum, and how often the
absorbed log-sum-exps re-absorb (docs/PERFORMANCE.md, v4.1 of the fused kernel).

An f64 model of the two policies' decisions only, not of the kernels' arithmetic:
- shifted (OPTICAL_CUDA_LSE=shifted): a pass's sum is shifted by the line's current
  potential, so it leaves [2^-100, 2^100] when a potential moves by more than 100 (log2
  units) in one update;
- absorbed (OPTICAL_CUDA_LSE=absorbed): the shift is the potential at the last absorption,
  and after an iteration in which a pass fell back the current potentials are absorbed.
Each count is per pass of the whole problem (the kernels decide per warp, which can only
make the two policies' counts closer). Plain Python, no dependencies:

    python3 scripts/lse-absorb-model.py [n m d iterations]
"""
import math
import random
import sys

L2E = 1.4426950408889634


def cost_matrix(n, m, d, seed, noise):
    """The cosine cost C of two correlated token sets: each y token is a noisy copy of a
    random x token (run() scales it by -log2(e) / eps)."""
    rng = random.Random(seed)
    x = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(n)]
    y = [[v + noise * rng.gauss(0, 1) for v in x[rng.randrange(n)]] for _ in range(m)]

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    return [[1 - cos(x[i], y[j]) for j in range(m)] for i in range(n)]


def lse2(vals):
    top = max(vals)
    return top + math.log2(sum(2 ** (v - top) for v in vals))


def run(C, eps, iters):
    n, m = len(C), len(C[0])
    K = [[-c * L2E / eps for c in row] for row in C]
    la, lb = math.log2(1 / n), math.log2(1 / m)
    out = {}
    for policy in ("shifted", "absorbed"):
        F, G = [0.0] * n, [0.0] * m
        c, d = [0.0] * n, [0.0] * m
        fallbacks = absorptions = 0
        for _ in range(iters):
            newF = [-lse2([K[i][j] + G[j] + lb for j in range(m)]) for i in range(n)]
            shifts = F if policy == "shifted" else c
            fell_rows = any(abs(s - f) > 100 for s, f in zip(shifts, newF))
            F = newF
            newG = [-lse2([K[i][j] + F[i] + la for i in range(n)]) for j in range(m)]
            shifts = G if policy == "shifted" else d
            fell_cols = any(abs(s - g) > 100 for s, g in zip(shifts, newG))
            G = newG
            fallbacks += fell_rows + fell_cols
            if policy == "absorbed" and (fell_rows or fell_cols):
                absorptions += 1
                c, d = F[:], G[:]
        out[policy] = (fallbacks, absorptions)
    return out


def main():
    n, m, d, iters = (int(a) for a in (sys.argv[1:5] if len(sys.argv) >= 5 else (32, 40, 24, 60)))
    C = cost_matrix(n, m, d, 1, 0.7)
    print(f"{n} x {m} tokens, d = {d}, {iters} iterations: passes that fall back, absorptions")
    for eps in (0.05, 0.01, 0.005, 0.002):
        r = run(C, eps, iters)
        print(f"eps {eps}: shifted {r['shifted'][0]} fallbacks; "
              f"absorbed {r['absorbed'][0]} fallbacks, {r['absorbed'][1]} absorptions")


if __name__ == "__main__":
    main()
