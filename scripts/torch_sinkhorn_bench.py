#!/usr/bin/env python3
"""PyTorch peers of `optical bench --kernels sinkhorn-fused` on the same problem.

Problem (as in src/bench/mod.rs, `sinkhorn-fused`): b=256 pairs of n=m=128 token embeddings,
d=384, cost C = 1 - cos, uniform weights, eps=0.05, 100 log-domain Sinkhorn iterations
from f = g = 0 (row update, then column update), f32 on the GPU. Timed from embeddings in
device memory to potentials in device memory, like optical's device time:

  torch-eager           the usual batched logsumexp loop
  torch-compile-step    one iteration under torch.compile, the loop in Python
  torch-compile-chunk10 ten iterations unrolled under torch.compile, called iters/10 times
  torch-compile         the whole solve under torch.compile (default mode; the loop
                        unrolled, so compiling takes longest)
  torch-compile-graphs  torch.compile(mode="reduce-overhead"): CUDA graphs, no launch
                        overhead (the strongest peer this script knows)

Also measures the HBM bandwidth of the machine (a 1 GiB device-to-device copy) for the
cosine-cost roofline. Each timing: 3 warm-up calls, then calls until --min-seconds have
passed (at least 5), CUDA events, median. Writes one JSON object to --out (and stdout),
rewritten after each result so that a run stopped during a long compile keeps the rest.
--no-compile runs the eager loop and the bandwidths only; --compile-only then adds the
compiled variants to the same --out file.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="JSON file to write")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--b", type=int, default=256)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--compile-only", action="store_true",
                    help="run only the torch.compile variants, adding them to an existing --out "
                         "(gpu-check runs the fast part first and the compiles last)")
    ap.add_argument("--device", default="cuda",
                    help="cuda (the measurement), or cpu to smoke-test this script on small shapes")
    args = ap.parse_args()

    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"error": "torch has no CUDA device", "torch": torch.__version__}))
        sys.exit(2)
    dev = torch.device(args.device)
    b, n, d, eps, iters = args.b, args.n, args.d, args.epsilon, args.iterations
    gen = torch.Generator(device=dev).manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 cost, as optical computes it
    x = torch.randn(b, n, d, device=dev, generator=gen)
    y = torch.randn(b, n, d, device=dev, generator=gen)

    def step(f, g, c, log_a, log_b):
        """One iteration: the row update, then the column update."""
        f = -eps * torch.logsumexp(log_b[:, None, :] + (g[:, None, :] - c) / eps, dim=2)
        g = -eps * torch.logsumexp(log_a[:, :, None] + (f[:, :, None] - c) / eps, dim=1)
        return f, g

    def solve_with(step_fn, per_call=1):
        """The solve with `step_fn` doing `per_call` iterations per call."""
        def solve(x, y):
            xn = torch.nn.functional.normalize(x, dim=-1)
            yn = torch.nn.functional.normalize(y, dim=-1)
            c = 1.0 - torch.bmm(xn, yn.transpose(1, 2)).clamp(-1.0, 1.0)
            log_a = torch.full((x.shape[0], x.shape[1]), -math.log(x.shape[1]), device=x.device)
            log_b = torch.full((y.shape[0], y.shape[1]), -math.log(y.shape[1]), device=y.device)
            f = torch.zeros_like(log_a)
            g = torch.zeros_like(log_b)
            for _ in range(iters // per_call):
                f, g = step_fn(f, g, c, log_a, log_b)
            return f, g
        return solve

    def steps10(f, g, c, log_a, log_b):
        for _ in range(10):
            f, g = step(f, g, c, log_a, log_b)
        return f, g

    solve = solve_with(step)

    def timed(fn, *inputs):
        for _ in range(3):
            fn(*inputs)
        if not cuda:
            samples, wall = [], time.perf_counter()
            while len(samples) < 5 or time.perf_counter() - wall < args.min_seconds:
                t0 = time.perf_counter()
                fn(*inputs)
                samples.append(time.perf_counter() - t0)
            return statistics.median(samples), len(samples)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples, wall = [], time.perf_counter()
        while len(samples) < 5 or time.perf_counter() - wall < args.min_seconds:
            start.record()
            fn(*inputs)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e-3)
        return statistics.median(samples), len(samples)

    exps = 2.0 * b * n * n * iters
    results = []

    def record(name, fn, *inputs):
        try:
            t0 = time.perf_counter()
            s, calls = timed(fn, *inputs)
            results.append({
                "impl": name,
                "seconds_per_call": s,
                "calls": calls,
                "gexp_per_s": exps / s / 1e9,
                "setup_seconds": time.perf_counter() - t0,
            })
        except Exception as e:  # a peer that fails is reported, not fatal
            results.append({"impl": name, "error": f"{type(e).__name__}: {e}"})
        print(json.dumps(results[-1]), file=sys.stderr)

    props = torch.cuda.get_device_properties(dev) if cuda else None
    out = {
        "gpu": props.name if cuda else "cpu (smoke test)",
        "multiprocessors": props.multi_processor_count if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "problem": {"b": b, "n": n, "m": n, "d": d, "epsilon": eps, "iterations": iters,
                    "exps_per_call": exps},
        "hbm_copy_gb_per_s": None,
        "results": results,
    }

    def flush():
        # Written after every result, so that a run stopped during a long torch.compile
        # keeps what it measured before.
        if args.out:
            with open(args.out + ".tmp", "w") as fh:
                fh.write(json.dumps(out, indent=2) + "\n")
            os.replace(args.out + ".tmp", args.out)

    with torch.no_grad():
        if not args.compile_only:
            record("torch-eager", solve, x, y)
            # HBM bandwidth: read + write of a 1 GiB buffer.
            src = torch.empty((256 if cuda else 16) * 1024 * 1024, dtype=torch.float32, device=dev)
            dst = torch.empty_like(src)
            s, _ = timed(lambda: dst.copy_(src))
            out["hbm_copy_gb_per_s"] = 2.0 * src.numel() * 4 / s / 1e9
            del src, dst
            flush()
            # Host <-> device copies of 256 MiB (wall time, each copy synchronised), from
            # pageable and from page-locked host memory: the ceilings of a backend whose inputs
            # and outputs live on the host.
            if cuda:
                pcie = {}
                dev_buf = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device=dev)
                for how in ("pageable", "pinned"):
                    host = torch.empty(dev_buf.numel(), dtype=torch.float32,
                                       pin_memory=(how == "pinned"))
                    host.fill_(1.0)
                    nbytes = host.numel() * 4

                    def wall(copy):
                        for _ in range(2):
                            copy()
                        torch.cuda.synchronize()
                        samples = []
                        for _ in range(5):
                            t0 = time.perf_counter()
                            copy()
                            torch.cuda.synchronize()
                            samples.append(time.perf_counter() - t0)
                        return statistics.median(samples)

                    pcie[f"host_to_device_{how}"] = nbytes / wall(lambda: dev_buf.copy_(host)) / 1e9
                    pcie[f"device_to_host_{how}"] = nbytes / wall(lambda: host.copy_(dev_buf)) / 1e9
                    del host
                del dev_buf
                out["pcie_gb_per_s"] = pcie
                print(json.dumps({"pcie_gb_per_s": pcie}), file=sys.stderr)
                flush()
        elif args.out and os.path.exists(args.out):
            # The compile variants only: keep what the first pass measured.
            with open(args.out) as fh:
                prev = json.load(fh)
            for key in ("hbm_copy_gb_per_s", "pcie_gb_per_s"):
                if prev.get(key) is not None:
                    out[key] = prev[key]
            results[:0] = [r for r in prev.get("results", []) if not r.get("impl", "").startswith("torch-compile")]
            flush()
        if not args.no_compile:
            # One compiled iteration (two fused reductions), the loop in Python: compiles in
            # seconds; then the whole unrolled solve, with and without CUDA graphs.
            record("torch-compile-step", solve_with(torch.compile(step)), x, y)
            flush()
            # Ten iterations unrolled per compiled call: a tenth of the full unroll's graph,
            # so it compiles quickly, with a tenth of the per-iteration launches.
            if iters % 10 == 0:
                record("torch-compile-chunk10", solve_with(torch.compile(steps10), 10), x, y)
                flush()
            record("torch-compile", torch.compile(solve), x, y)
            flush()
            record("torch-compile-graphs", torch.compile(solve, mode="reduce-overhead"), x, y)
            flush()

    text = json.dumps(out, indent=2)
    print(text)
    flush()

if __name__ == "__main__":
    main()
