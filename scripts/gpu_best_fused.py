#!/usr/bin/env python3
"""The fastest measured combination of the fused kernel's settings, for gpu-check.

    gpu_best_fused.py LOGS

gpu-check times each setting of the fused solve (`sinkhorn-fused`, the issue's problem) on
its own axis: the cost phase (bench-cuda: serial, the default; -fusedpipe: producer warps;
-fusedgiven[-wgmma|-wgmmars|-wgmma3]: a standalone cost kernel first) with the shifted
log-sum-exps, and the log-sum-exps (-absorbed, -scaled against bench-cuda; -fusedgiven-abs,
-fusedgiven-scaled against -fusedgiven). No step runs the best of both axes together, so
this picks it from the logs: the fastest cost phase (the default's unless another is more
than 3 % faster), and the log-sum-exps whose speed-up over the shifted ones is the larger
(more than 3 %) for a cost phase of the same kind (inline or given; the other kind's when
that one was not timed). It prints the environment of that combination, one NAME=value per
line, for the bench-cuda-combined step; nothing when a step already timed it (the defaults,
or one setting changed on one axis: that step's own timing and goal rows stand). Exit
status 1 when bench-cuda has no sinkhorn-fused record (nothing to pick from).
"""
import json
import os
import sys

# Variant (gpu-check step without "bench-") -> the environment of its cost phase.
STANDALONE = {"OPTICAL_CUDA_FUSED_COST": "standalone"}
COST_PHASES = {
    "cuda": {},
    "cuda-fusedpipe": {"OPTICAL_CUDA_FUSED_COST": "pipelined"},
    "cuda-fusedgiven": STANDALONE,
    "cuda-fusedgiven-wgmma": {**STANDALONE, "OPTICAL_CUDA_COST_KERNEL": "wgmma"},
    "cuda-fusedgiven-wgmmars": {**STANDALONE, "OPTICAL_CUDA_COST_KERNEL": "wgmma-rs"},
    "cuda-fusedgiven-wgmma3": {**STANDALONE, "OPTICAL_CUDA_COST_KERNEL": "wgmma",
                               "OPTICAL_CUDA_WGMMA_STAGES": "3"},
}
INLINE = ("cuda", "cuda-fusedpipe")
# OPTICAL_CUDA_LSE value -> (the shifted variant, its variant with that setting), inline
# cost phase first, then the cost given.
LSE = {
    "absorbed": [("cuda", "cuda-absorbed"), ("cuda-fusedgiven", "cuda-fusedgiven-abs")],
    "scaled": [("cuda", "cuda-scaled"), ("cuda-fusedgiven", "cuda-fusedgiven-scaled")],
}
MARGIN = 0.03  # as gpu_report.py's decisions


def device_time(logs, variant, kernel="sinkhorn-fused"):
    path = os.path.join(logs, f"bench-{variant}.log")
    if not os.path.exists(path):
        return None
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kernel") == kernel and rec.get("device_seconds_per_call"):
            return rec["device_seconds_per_call"]
    return None


def best_combination(logs):
    """(environment, why) of the fastest combination; None when bench-cuda has no record."""
    times = {v: device_time(logs, v) for v in COST_PHASES}
    if not times["cuda"]:
        return None
    cost = min((t, v) for v, t in times.items() if t)[1]
    # Within the margin the default cost phase stays, as in the report's decisions.
    if times["cuda"] / times[cost] <= 1.0 + MARGIN:
        cost = "cuda"
    inline = cost in INLINE
    lse, lse_speedup = None, 1.0 + MARGIN
    for value, pairs in LSE.items():
        # The pair of the same kind as the chosen cost phase first.
        for base, cand in sorted(pairs, key=lambda p: (p[0] == "cuda") != inline):
            b, c = device_time(logs, base), device_time(logs, cand)
            if b and c:
                if b / c > lse_speedup:
                    lse, lse_speedup = value, b / c
                break
    env = dict(COST_PHASES[cost])
    if lse:
        env["OPTICAL_CUDA_LSE"] = lse
    why = f"cost phase of {cost} ({times[cost] * 1e6:.1f} us)" + (
        f", log-sum-exps {lse} ({lse_speedup:.3f}x)" if lse else ", shifted log-sum-exps")
    # A combination a step already timed (its log holds the record) needs no step of its own.
    settings = dict(COST_PHASES)
    for value, pairs in LSE.items():
        for base, cand in pairs:
            settings[cand] = {**COST_PHASES[base], "OPTICAL_CUDA_LSE": value}
    already = next((v for v, e in settings.items() if e == env and device_time(logs, v)), None)
    if already:
        return {}, f"{why}: timed already by bench-{already}"
    return env, why


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gpu_best_fused.py LOGS")
    picked = best_combination(sys.argv[1])
    if picked is None:
        print("gpu_best_fused: bench-cuda has no sinkhorn-fused record", file=sys.stderr)
        sys.exit(1)
    env, why = picked
    print(f"gpu_best_fused: {why}", file=sys.stderr)
    for name, value in env.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
