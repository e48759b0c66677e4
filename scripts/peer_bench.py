#!/usr/bin/env python3
"""Time POT and OTT-JAX against optical's CPU Sinkhorn on the same problem, in one run.

Problem (the `sinkhorn` standard problem of `optical bench`): 64 pairs of 128x128 cosine
costs of seeded normal embeddings (d = 64), uniform weights, eps = 0.05, exactly 200
log-domain iterations (no early stop), plan included.

  POT      ot.sinkhorn(method='sinkhorn_log', numItermax=200, stopThr=0), a loop over pairs, f64
  OTT-JAX  jax.jit(jax.vmap(...)) over ott.solvers.linear.sinkhorn.Sinkhorn(lse_mode=True),
           f32, min_iterations = max_iterations = 200, threshold -1 (never stops early)
  optical  `optical ot solve --cost C.npy --max-iterations 200 --threshold 0 --check-every 200`
           (`seconds` of its JSON summary: the solve, not file I/O), cpu and cpu-reference

Each is warmed up once (JIT compile for JAX), then timed `--repeats` times; the median is
reported with G exp/s = 2*b*n*m*iterations / seconds.

Usage: python scripts/peer_bench.py --optical target/release/optical [--out benches/results/...json]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np

# POT warns that 200 iterations did not converge: that is the point (fixed work).
warnings.filterwarnings("ignore", message="Sinkhorn did not converge")

B, N, M, D, EPS, ITERS = 64, 128, 128, 64, 0.05, 200
EXPS = 2 * B * N * M * ITERS


def problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, N, D))
    y = rng.standard_normal((B, M, D))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return 1.0 - np.einsum("bnd,bmd->bnm", x, y)


def timed(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def bench_pot(cost, repeats):
    import ot

    a = np.full(N, 1.0 / N)
    b = np.full(M, 1.0 / M)

    def run():
        for p in range(B):
            ot.sinkhorn(a, b, cost[p], reg=EPS, method="sinkhorn_log", numItermax=ITERS, stopThr=0.0)

    return timed(run, repeats), f"POT {ot.__version__}"


def bench_ott(cost, repeats):
    import jax
    import jax.numpy as jnp
    import ott
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    solver = sinkhorn.Sinkhorn(
        lse_mode=True, threshold=-1.0, max_iterations=ITERS, min_iterations=ITERS, inner_iterations=10
    )

    def one(c):
        geom = geometry.Geometry(cost_matrix=c, epsilon=EPS)
        prob = linear_problem.LinearProblem(geom, jnp.full(N, 1.0 / N), jnp.full(M, 1.0 / M))
        return solver(prob).matrix

    fn = jax.jit(jax.vmap(one))
    c = jnp.asarray(cost, dtype=jnp.float32)

    def run():
        fn(c).block_until_ready()

    return timed(run, repeats), f"OTT-JAX {ott.__version__}, jax {jax.__version__} ({jax.devices()[0].platform})"


def bench_optical(binary, backend, cost_path, repeats):
    def once():
        with tempfile.TemporaryDirectory() as out:
            r = subprocess.run(
                [binary, "ot", "solve", "--cost", cost_path, "--epsilon", str(EPS),
                 "--max-iterations", str(ITERS), "--threshold", "0", "--check-every", str(ITERS),
                 "--backend", backend, "--out", os.path.join(out, "o")],
                check=True, capture_output=True, text=True,
            )
            return json.loads(r.stdout)["seconds"]

    once()
    return statistics.median(once() for _ in range(repeats)), f"optical {backend}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--optical", default="target/release/optical")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cost = problem()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cost_path = os.path.join(tmp, "cost.npy")
        np.save(cost_path, cost)
        for name, fn in [
            ("pot", lambda: bench_pot(cost, 1)),
            ("ott-jax", lambda: bench_ott(cost, args.repeats)),
            ("optical-cpu", lambda: bench_optical(args.optical, "cpu", cost_path, args.repeats)),
            ("optical-cpu-reference", lambda: bench_optical(args.optical, "cpu-reference", cost_path, 1)),
        ]:
            seconds, version = fn()
            rows.append({"solver": name, "version": version, "seconds": seconds, "gexp_per_s": EXPS / seconds / 1e9})
            print(f"{name:<22} {seconds:9.4f} s  {EXPS / seconds / 1e9:7.3f} G exp/s   [{version}]", flush=True)
    by = {r["solver"]: r["seconds"] for r in rows}
    ratios = {
        "optical-cpu vs pot (speed-up)": by["pot"] / by["optical-cpu"],
        "optical-cpu vs ott-jax (speed-up)": by["ott-jax"] / by["optical-cpu"],
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    result = {
        "problem": {"pairs": B, "n": N, "m": M, "d": D, "epsilon": EPS, "iterations": ITERS},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
        "ratios": ratios,
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
