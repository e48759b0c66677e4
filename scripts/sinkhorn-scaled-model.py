#!/usr/bin/env python3
"""The scaled Sinkhorn passes (OPTICAL_CUDA_LSE=scaled, docs/PERFORMANCE.md): how often they
rebuild the on-chip matrix, and how far their potentials land from the log-domain ones.

The passes keep Q_ij = 2^(K_ij + c_i + d_j) on chip (c, d: shifts absorbed at the last
rebuild; entries under 2^-126 flush to 0, as ex2.approx.ftz does) and the vectors
u_i = 2^(F_i + log2 a_i - c_i), v_j = 2^(G_j + log2 b_j - d_j). A row update is then
F_i = c_i - log2(sum_j Q_ij v_j) with no exponential per element; a column update likewise.
A pass any of whose sums leaves [2^-20, 2^20] is redone after rebuilding Q from K with shifts
taken from the line maxima (row pass: d_j = G_j + log2 b_j, c_i = -max_j (K_ij + d_j); column
pass the same with rows and columns swapped), so that every sum of the redone pass lies in
[1, lines]. An accepted pass writes vector entries log2 w - log2(sum), within 20 + |log2 w| of
0, so a flushed entry weighs at most 2^(-126 + 28) against a sum of at least 2^-20 (the
asserts below check that bound).

This is an f64 model of the policy (its decisions and its flushing), not of the kernel's f32
arithmetic; the PTX interpreter and the CUDA parity tests check the kernel's. Plain Python,
no dependencies:

    python3 scripts/sinkhorn-scaled-model.py [n m d iterations]
"""
import importlib.util
import math
import pathlib
import sys

# The cost matrix, the log-sum-exp and log2(e) of the absorbed policy's model.
_spec = importlib.util.spec_from_file_location(
    "lse_absorb_model", pathlib.Path(__file__).with_name("lse-absorb-model.py"))
_absorb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_absorb)
L2E, cost_matrix, lse2 = _absorb.L2E, _absorb.cost_matrix, _absorb.lse2
SUM_LO, SUM_HI = 2.0**-20, 2.0**20


def ex2_ftz(e):
    return 0.0 if e < -126 else 2.0**e


def reference(K, la, lb, iters):
    n, m = len(K), len(K[0])
    F, G = [0.0] * n, [0.0] * m
    for _ in range(iters):
        F = [-lse2([K[i][j] + G[j] + lb for j in range(m)]) for i in range(n)]
        G = [-lse2([K[i][j] + F[i] + la for i in range(n)]) for j in range(m)]
    return F, G


def scaled(K, la, lb, iters):
    n, m = len(K), len(K[0])
    F, G = [0.0] * n, [0.0] * m
    c, d = [0.0] * n, [0.0] * m
    Q = None
    rebuilds = 0

    def rebuild_rows():
        nonlocal Q, c, d
        d = [G[j] + lb for j in range(m)]
        c = [-max(K[i][j] + d[j] for j in range(m)) for i in range(n)]
        Q = [[ex2_ftz(K[i][j] + c[i] + d[j]) for j in range(m)] for i in range(n)]

    def rebuild_cols():
        nonlocal Q, c, d
        c = [F[i] + la for i in range(n)]
        d = [-max(K[i][j] + c[i] for i in range(n)) for j in range(m)]
        Q = [[ex2_ftz(K[i][j] + c[i] + d[j]) for j in range(m)] for i in range(n)]

    def row_pass():
        if Q is None:
            return None
        V = [G[j] + lb - d[j] for j in range(m)]
        v = [2.0**x for x in V]
        sums = [sum(Q[i][j] * v[j] for j in range(m)) for i in range(n)]
        if any(not SUM_LO <= s <= SUM_HI for s in sums):
            return None
        return [c[i] - math.log2(sums[i]) for i in range(n)]

    def col_pass():
        U = [F[i] + la - c[i] for i in range(n)]
        u = [2.0**x for x in U]
        sums = [sum(Q[i][j] * u[i] for i in range(n)) for j in range(m)]
        if any(not SUM_LO <= s <= SUM_HI for s in sums):
            return None
        return [d[j] - math.log2(sums[j]) for j in range(m)]

    for _ in range(iters):
        new = row_pass()
        if new is None:
            rebuilds += 1
            rebuild_rows()
            new = row_pass()
        assert all(abs(f + la - ci) <= 20 + abs(la) for f, ci in zip(new, c))
        F = new
        new = col_pass()
        if new is None:
            rebuilds += 1
            rebuild_cols()
            new = col_pass()
        assert all(abs(g + lb - dj) <= 20 + abs(lb) for g, dj in zip(new, d))
        G = new
    return F, G, rebuilds


def main():
    n, m, d, iters = (int(a) for a in (sys.argv[1:5] if len(sys.argv) >= 5 else (48, 56, 24, 60)))
    C = cost_matrix(n, m, d, 1, 0.7)
    la, lb = math.log2(1 / n), math.log2(1 / m)
    print(f"{n} x {m} tokens, d = {d}, {iters} iterations, from F = G = 0")
    print("eps     rebuilds  max |F - F_ref|  max |G - G_ref|  (log2 units)")
    for eps in (0.05, 0.01, 0.005, 0.002):
        K = [[-v * L2E / eps for v in row] for row in C]
        Fr, Gr = reference(K, la, lb, iters)
        F, G, rebuilds = scaled(K, la, lb, iters)
        ef = max(abs(a - b) for a, b in zip(F, Fr))
        eg = max(abs(a - b) for a, b in zip(G, Gr))
        print(f"{eps:<7} {rebuilds:>8}  {ef:15.3e}  {eg:15.3e}")


if __name__ == "__main__":
    main()
