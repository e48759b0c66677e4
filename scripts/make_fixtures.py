#!/usr/bin/env python3
"""Generate the committed Sinkhorn / cosine fixtures with POT (and numpy).

Every case is a seeded problem solved by POT's log-domain Sinkhorn in float64 to a tight
threshold, so its plan is the entropic OT solution to ~1e-12. Padded cases are solved by POT
on the *unpadded* problem and scattered back, so the fixture checks that padding leaves the
solution unchanged.

Layout: tests/fixtures/sinkhorn/<case>/{cost,a,b,plan,f,g,transport}.npy + meta.json
(embedding cases also have x, y, x_lengths, y_lengths). Potentials follow optical's
convention P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps) and are 0 on padding; they are
defined up to f + c, g - c.

Run: make fixtures   (or: python scripts/make_fixtures.py [--out DIR])
"""

import argparse
import json
import os
import shutil

import numpy as np
import ot

EPS_STOP = 1e-13


def pot_solve(a, b, cost, eps):
    plan, log = ot.sinkhorn(
        a, b, cost, reg=eps, method="sinkhorn_log", numItermax=200000, stopThr=EPS_STOP, log=True
    )
    f = eps * (log["log_u"] - np.log(a))
    g = eps * (log["log_v"] - np.log(b))
    # Normalise the free constant like optical's tests do: mean of f is 0.
    c = f.mean()
    return plan, f - c, g + c


def solve_batch(cost, a, b, eps):
    """Solve every pair on its support; scatter back with zeros on padding."""
    bsz, n, m = cost.shape
    plan = np.zeros_like(cost)
    f = np.zeros((bsz, n))
    g = np.zeros((bsz, m))
    for p in range(bsz):
        rows = np.nonzero(a[p] > 0)[0]
        cols = np.nonzero(b[p] > 0)[0]
        ap = a[p, rows] / a[p, rows].sum()
        bp = b[p, cols] / b[p, cols].sum()
        sub = cost[p][np.ix_(rows, cols)]
        pl, fp, gp = pot_solve(ap, bp, sub, eps)
        plan[p][np.ix_(rows, cols)] = pl
        f[p, rows] = fp
        g[p, cols] = gp
    return plan, f, g


def cosine_cost(x, y, xl, yl):
    bsz, n, _ = x.shape
    m = y.shape[1]
    c = np.zeros((bsz, n, m))
    for p in range(bsz):
        xs = x[p, : xl[p]].astype(np.float64)
        ys = y[p, : yl[p]].astype(np.float64)
        nx = np.linalg.norm(xs, axis=1)
        ny = np.linalg.norm(ys, axis=1)
        dots = xs @ ys.T
        denom = np.outer(nx, ny)
        cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
        c[p, : xl[p], : yl[p]] = 1.0 - cos
    return c


def write_case(root, name, eps, cost, a, b, description, extra=None):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    plan, f, g = solve_batch(cost, a, b, eps)
    np.save(os.path.join(d, "cost.npy"), cost)
    np.save(os.path.join(d, "a.npy"), a)
    np.save(os.path.join(d, "b.npy"), b)
    np.save(os.path.join(d, "plan.npy"), plan)
    np.save(os.path.join(d, "f.npy"), f)
    np.save(os.path.join(d, "g.npy"), g)
    np.save(os.path.join(d, "transport.npy"), (plan * cost).sum(axis=(1, 2)))
    for k, v in (extra or {}).items():
        np.save(os.path.join(d, f"{k}.npy"), v)
    meta = {
        "epsilon": eps,
        "description": description,
        "shape": list(cost.shape),
        "generator": f"POT {ot.__version__} ot.sinkhorn(method='sinkhorn_log', stopThr={EPS_STOP})",
    }
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    print(f"{name}: {cost.shape} eps={eps}")


def uniform(bsz, n):
    return np.full((bsz, n), 1.0 / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/sinkhorn")
    args = ap.parse_args()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    rng = np.random.default_rng(20231)

    # Square, uniform, moderate epsilon.
    c = rng.uniform(0, 2, (2, 8, 8))
    write_case(args.out, "square_8x8", 0.1, c, uniform(2, 8), uniform(2, 8), "square, uniform")

    # Non-square with non-uniform weights.
    c = rng.uniform(0, 2, (2, 17, 29))
    a = rng.uniform(0.1, 1.0, (2, 17))
    b = rng.uniform(0.1, 1.0, (2, 29))
    write_case(args.out, "rect_17x29", 0.05, c, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True),
               "17x29, non-uniform weights")

    # Larger, smallest epsilon of the accuracy bar.
    c = rng.uniform(0, 2, (1, 113, 203))
    write_case(args.out, "rect_113x203_eps0.01", 0.01, c, uniform(1, 113), uniform(1, 203),
               "113x203, eps = 0.01")

    # Large epsilon.
    c = rng.uniform(0, 2, (1, 31, 17))
    write_case(args.out, "rect_31x17_eps1", 1.0, c, uniform(1, 31), uniform(1, 17), "31x17, eps = 1")

    # Padding: trailing padding and zero weights in the middle; unpadded solution scattered.
    n, m = 12, 10
    c = rng.uniform(0, 2, (3, n, m))
    a = np.ones((3, n))
    b = np.ones((3, m))
    a[0, 9:] = 0
    b[0, 7:] = 0  # trailing padding
    a[1, [2, 5]] = 0
    b[1, [0, 4, 9]] = 0  # interior zeros
    a[2, 1:] = 0  # one real row
    write_case(args.out, "padded_12x10", 0.05, c, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True),
               "zero weights: trailing, interior, a single real row")

    # Outliers: a few huge costs, and a row whose costs are all large.
    c = rng.uniform(0, 2, (1, 20, 24))
    c[0, 3, 5] = 50.0
    c[0, 11, :] += 40.0
    c[0, :, 17] = 75.0
    write_case(args.out, "outliers_20x24", 0.05, c, uniform(1, 20), uniform(1, 24),
               "outlier entries, a row of large costs, a column of huge costs")

    # Degenerate sizes.
    c = rng.uniform(0, 2, (2, 1, 5))
    write_case(args.out, "one_row_1x5", 0.1, c, uniform(2, 1), uniform(2, 5), "a single row")
    c = rng.uniform(0, 2, (1, 1, 1))
    write_case(args.out, "single_1x1", 0.1, c, uniform(1, 1), uniform(1, 1), "1x1")

    # From embeddings with ragged lengths (cosine cost computed in float64 by numpy).
    bsz, n, m, d = 2, 17, 29, 24
    x = rng.standard_normal((bsz, n, d)).astype(np.float32)
    y = rng.standard_normal((bsz, m, d)).astype(np.float32)
    x[1, 3] = 0.0  # a zero vector: cost 1 against everything
    xl = np.array([17, 12], dtype=np.int64)
    yl = np.array([29, 20], dtype=np.int64)
    c = cosine_cost(x, y, xl, yl)
    a = (np.arange(n)[None, :] < xl[:, None]).astype(np.float64)
    b = (np.arange(m)[None, :] < yl[:, None]).astype(np.float64)
    write_case(args.out, "embeddings_17x29", 0.05, c, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True),
               "cosine cost of ragged embeddings (one zero vector)",
               extra={"x": x, "y": y, "x_lengths": xl, "y_lengths": yl})


if __name__ == "__main__":
    main()
