#!/usr/bin/env python3
"""Combine the logs of scripts/gpu-check.sh into benches/results/<date>-<gpu>.json and .md.

    gpu_report.py OUT LOGS GPU_NAME STATUS_JSON SM_CLOCK_MHZ
"""
import json, sys, os, re

out, logs, gpu, status = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sm_clock_ghz = float(sys.argv[5] or 0) / 1000.0

def jsonl(name):
    path = os.path.join(logs, name + ".log")
    recs = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    return recs

info = jsonl("info")
# Seconds each step ran (gpu-check writes them; absent from older logs).
took_path = os.path.join(logs, "step-seconds.json")
took = json.load(open(took_path)) if os.path.exists(took_path) else {}
torch = json.load(open(os.path.join(logs, "torch.json"))) if os.path.exists(os.path.join(logs, "torch.json")) else None
# One entry per bench step of gpu-check (bench-<backend>[-<variant>].log): "cuda" (the
# defaults), "cuda-fp32", "cuda-wgmma", ..., "wgpu", "cpu".
bench_steps = sorted(n[len("bench-"):-len(".log")] for n in os.listdir(logs)
                     if n.startswith("bench-") and n.endswith(".log")) if os.path.isdir(logs) else []
bench = {be: jsonl("bench-" + be) for be in bench_steps}
# The kernel variants; "cuda-pageable" runs the default kernels with another host copy path,
# so it has wall-time ratios below and no goals of its own.
cuda_runs = [be for be in bench if be == "cuda" or (be.startswith("cuda-") and be != "cuda-pageable")]
tests = ""
p = os.path.join(logs, "cuda-tests.log")
if os.path.exists(p):
    tests = "".join(l for l in open(p) if re.search(r"cuda max abs|test result|SKIPPED|panicked|^=== FAILED", l))

source = os.environ.get("OPTICAL_GPU_CHECK_SOURCE", "")
result = {"gpu": gpu, "source": source, "status": status, "step_seconds": took,
          "info": info[0] if info else None, "bench": bench,
          "torch": torch}

# Ratios on the problem (device times; see docs/PERFORMANCE.md, CUDA section), for
# the fused kernel of every CUDA run that benched it ("cuda": the defaults, tensor cores in
# 3xTF32 and 512 threads per pair; "cuda-fp32": FP32 FMA; "cuda-fused256": 256 threads).
def variant(be):
    return "" if be == "cuda" else f" ({be})"

ratios = {}
fused_runs = {}
# The ex2 rate measured on this GPU (`optical bench --kernels exp2-peak`: chains of ex2 and
# nothing else, every SM full), beside the nominal 16 per clock and SM the floor assumes.
def exp2_peak(be):
    r = next((r for r in bench.get(be, []) if r.get("kernel") == "exp2-peak"), None)
    return r.get("device_rate") if r else None
cuda_peak = exp2_peak("cuda")
if cuda_peak:
    ratios["cuda exp2-peak G exp/s (device, measured)"] = cuda_peak
    sms = (torch or {}).get("multiprocessors")
    if sms and sm_clock_ghz:
        ratios[f"cuda exp2-peak / nominal exp floor ({sms} SMs x 16/clk x {sm_clock_ghz:.2f} GHz)"] = \
            cuda_peak / (sms * 16 * sm_clock_ghz)
    if exp2_peak("wgpu"):
        ratios["wgpu exp2-peak (device) / cuda exp2-peak (device)"] = exp2_peak("wgpu") / cuda_peak
# The floor each fused run's goal is judged on: the nominal one, or the measured ex2 rate
# where that is higher (a faster SFU than documented lowers the floor's time).
goal_floor = {}
for be in cuda_runs:
    fused = next((r for r in bench[be] if r.get("kernel") == "sinkhorn-fused"), None)
    if not (fused and fused.get("device_seconds_per_call")):
        continue
    fused_runs[be] = fused
    if not torch:
        continue
    t = fused["device_seconds_per_call"]
    for r in torch.get("results", []):
        if "seconds_per_call" in r:
            ratios[f"{r['impl']} / optical fused{variant(be)}"] = r["seconds_per_call"] / t
    sms = torch.get("multiprocessors")
    if sms and sm_clock_ghz:
        floor = sms * 16 * sm_clock_ghz  # G ex2/s: 16 MUFU.EX2 per clock per SM
        ratios[f"exp floor G exp/s ({sms} SMs x 16/clk x {sm_clock_ghz:.2f} GHz)"] = floor
        ratios[f"optical fused{variant(be)} G exp/s (device)"] = fused.get("device_rate")
        ratios[f"optical fused{variant(be)} time / exp floor time"] = floor / fused["device_rate"]
        goal_floor[be] = ("nominal", floor / fused["device_rate"])
        if cuda_peak:
            ratios[f"optical fused{variant(be)} time / measured exp floor time"] = \
                cuda_peak / fused["device_rate"]
            if cuda_peak > floor:
                goal_floor[be] = ("measured", cuda_peak / fused["device_rate"])
        # The same solve with 1 iteration (the cost phase, one iteration and the check): what
        # the 99 other iterations add, against their own floor.
        one = next((r for r in bench[be] if r.get("kernel") == "sinkhorn-fused-1"), None)
        if one and one.get("device_seconds_per_call") and fused.get("device_rate"):
            exps = fused["device_rate"] * 1e9 * t
            ratios[f"optical fused{variant(be)}, 1 iteration / 100 iterations (device)"] = \
                one["device_seconds_per_call"] / t
            ratios[f"optical fused{variant(be)}, 99 iterations' time / their exp floor time"] = \
                (t - one["device_seconds_per_call"]) / (exps * 0.99 / (floor * 1e9))
            if cuda_peak:
                ratios[f"optical fused{variant(be)}, 99 iterations' time / their measured exp floor time"] = \
                    (t - one["device_seconds_per_call"]) / (exps * 0.99 / (cuda_peak * 1e9))
# Cosine cost against the measured HBM bandwidth, for each CUDA run that benched a cost
# kernel: the L2-busting problem when it ran (repeated calls of the small one can be served
# from L2).
for be in cuda_runs:
    cost = next((r for r in bench[be] if r.get("kernel") == "cosine-cost-hbm"), None) or \
        next((r for r in bench[be] if r.get("kernel") == "cosine-cost"), None)
    if cost and cost.get("device_rate") and torch and torch.get("hbm_copy_gb_per_s"):
        ratios[f"{be} {cost['kernel']} device GB/s / measured HBM GB/s"] = \
            cost["device_rate"] / torch["hbm_copy_gb_per_s"]
# The same problems through WGSL on the same GPU (Vulkan driver, pass timestamps): the
# default (register-blocked kernels) and "wgpu-rows" (OPTICAL_WGPU_SINKHORN=rows: one
# invocation per row; for the fused problem the tile kernel where the tile fits the driver's
# workgroup memory, else the materialised path).
def field(be, kernel, key):
    r = next((r for r in bench.get(be, []) if r.get("kernel") == kernel), None)
    return r.get(key) if r else None
def device_time(be, kernel):
    return field(be, kernel, "device_seconds_per_call")
def add_ratio(name, num, den):
    if num and den:
        ratios[name] = num / den
wgpu_fused = device_time("wgpu", "sinkhorn-fused")
if "cuda" in fused_runs:
    add_ratio("wgpu fused (device) / cuda fused (device)", wgpu_fused,
              fused_runs["cuda"]["device_seconds_per_call"])
for kernel in ("sinkhorn", "sinkhorn-512", "sinkhorn-fused"):
    add_ratio(f"wgpu-rows {kernel} (device) / wgpu {kernel} (device)",
              device_time("wgpu-rows", kernel), device_time("wgpu", kernel))
# The large-pair problems with one CTA per pair ("cuda-nosplit":
# OPTICAL_CUDA_SINKHORN_SPLIT=off) against the default split half-iterations.
for kernel in ("sinkhorn-512", "sinkhorn-2048"):
    add_ratio(f"cuda-nosplit {kernel} (device) / cuda {kernel} (device)",
              device_time("cuda-nosplit", kernel), device_time("cuda", kernel))
# MaxSim through maxsim_f32 ("cuda-maxsim-direct": OPTICAL_CUDA_MAXSIM=direct) against the
# default cost kernel + maxsim_reduce_f32; runs before the tiled default had the opposite
# step ("cuda-maxsim-tiled").
add_ratio("cuda-maxsim-direct maxsim (device) / cuda maxsim (device)",
          device_time("cuda-maxsim-direct", "maxsim"), device_time("cuda", "maxsim"))
add_ratio("cuda maxsim (device) / cuda-maxsim-tiled maxsim (device)",
          device_time("cuda", "maxsim"), device_time("cuda-maxsim-tiled", "maxsim"))
# The cost problems on the 64 x 64 3xTF32 kernel ("cuda-tf32x3") against the default choice
# (wgmma on compute capability 9.0 for the large problem), and on the WGSL 16 x 16 kernel
# ("wgpu-costtile": OPTICAL_WGPU_COST=tile) against the register-blocked default.
for kernel in ("cosine-cost", "cosine-cost-hbm"):
    add_ratio(f"cuda-tf32x3 {kernel} (device) / cuda {kernel} (device)",
              device_time("cuda-tf32x3", kernel), device_time("cuda", kernel))
    add_ratio(f"wgpu-costtile {kernel} (device) / wgpu {kernel} (device)",
              device_time("wgpu-costtile", kernel), device_time("wgpu", kernel))
# WGSL MaxSim with the register-blocked kernel ("wgpu-maxsimblocked") against the default
# (the 16 x 16 kernel on a GPU adapter).
add_ratio("wgpu-maxsimblocked maxsim (device) / wgpu maxsim (device)",
          device_time("wgpu-maxsimblocked", "maxsim"), device_time("wgpu", "maxsim"))
# Host <-> device copies: the wall time of the problems that move the most bytes with the
# driver's pageable path ("cuda-pageable": OPTICAL_CUDA_STAGING=pageable) against the
# default page-locked staging; and the end-to-end rate of the largest copy problem against
# the PCIe rates PyTorch measured (pinned and pageable, host to device).
for kernel in ("sinkhorn-fused", "cosine-cost-hbm"):
    add_ratio(f"cuda-pageable {kernel} (wall) / cuda {kernel} (wall)",
              field("cuda-pageable", kernel, "seconds_per_call"),
              field("cuda", kernel, "seconds_per_call"))
pcie = (torch or {}).get("pcie_gb_per_s") or {}
for how in ("pinned", "pageable"):
    add_ratio(f"cuda cosine-cost-hbm wall GB/s / torch {how} host-to-device GB/s",
              field("cuda", "cosine-cost-hbm", "gb_per_s"), pcie.get(f"host_to_device_{how}"))
result["ratios"] = ratios

# The performance goals (issue 4), each met or not on this run's numbers.
def torch_time(name):
    r = next((r for r in (torch or {}).get("results", []) if r.get("impl") == name), None)
    return r.get("seconds_per_call") if r else None

goals = []
for be, fused in fused_runs.items():
    t = fused["device_seconds_per_call"]
    for name, want in (("torch-eager", 15.0), ("torch-compile-step", 3.0), ("torch-compile-chunk10", 3.0),
                       ("torch-compile", 3.0), ("torch-compile-graphs", 3.0)):
        peer = torch_time(name)
        if peer:
            goals.append({"goal": f"fused sinkhorn{variant(be)} >= {want:g}x faster than {name}",
                          "value": peer / t, "target": want, "met": peer / t >= want})
    if be in goal_floor:
        which, floor_ratio = goal_floor[be]
        goals.append({"goal": f"fused sinkhorn{variant(be)} within 2x of the exp-throughput floor "
                              f"(time / floor time; {which} ex2 rate)",
                      "value": floor_ratio, "target": 2.0, "met": floor_ratio <= 2.0})
for bw_key in [k for k in ratios if k.endswith("device GB/s / measured HBM GB/s")]:
    bw = ratios[bw_key]
    label = " ".join(bw_key.split()[:2])
    goals.append({"goal": f"cosine cost >= 75% of measured HBM bandwidth ({label})", "value": bw,
                  "target": 0.75, "met": bw >= 0.75})
result["goals"] = goals

# The defaults this run decides (docs/PERFORMANCE.md, CUDA status, "What the next run
# decides"): each compares the device time of a candidate variant with the default's on one
# problem. A candidate more than DECISION_MARGIN faster wins; within it, the default stays
# (two runs of one build on one GPU differ by a few per cent).
DECISION_MARGIN = 0.03
def wall_time(variant, kernel):
    return field(variant, kernel, "seconds_per_call")
def best_of(variants, kernel, timing):
    timed = [(timing(v, kernel), v) for v in variants if timing(v, kernel)]
    return min(timed) if timed else (None, None)
# A faster candidate is only a change when it is also shown correct: its own step passed
# (a step that failed after timing a kernel may have failed on that kernel's results), and
# for the CUDA kernels the parity tests passed on this GPU (a wrong kernel can be fast). For
# the WGSL kernels the parity tests on lavapipe in CI stand in when wgpu-tests was left out
# of the run, but not when it failed.
def unproven(variant):
    own = status.get(f"bench-{variant}")
    if own not in (None, "pass"):
        return f"its step bench-{variant} did not pass ({own})"
    if variant.startswith("cuda") and status.get("cuda-tests") != "pass":
        return f"cuda-tests did not pass ({status.get('cuda-tests', 'not run')})"
    # all-tests: the whole suite, in a run that built here (no --prebuilt).
    for step in (("wgpu-tests", "wgpu-checks-test", "all-tests") if variant.startswith("wgpu")
                 else ("all-tests",)):
        if status.get(step) == "FAIL":
            return f"{step} failed"
    return None
def decide(question, change, kernel, default_variants, candidate_variants, timing=device_time):
    base_t, base_v = best_of(default_variants, kernel, timing)
    cand_t, cand_v = best_of(candidate_variants, kernel, timing)
    if not base_t or not cand_t:
        return None
    speedup = base_t / cand_t
    verdict = "change" if speedup > 1.0 + DECISION_MARGIN else "keep"
    why = unproven(cand_v) if verdict == "change" else None
    if why:
        verdict = f"undecided: faster, but {why}"
    d = {"question": question, "kernel": kernel,
         "default": base_v, "default_seconds": base_t,
         "candidate": cand_v, "candidate_seconds": cand_t,
         "speedup": speedup, "change": change, "verdict": verdict}
    decisions.append(d)
    return d
# The default the absorbed row leaves: its candidate when it changes the default, else the
# shifted log-sum-exps. The scaled passes are judged against that default, and when both
# rows change it, the scaled passes win (they beat the absorbed ones): the absorbed row
# says it is superseded.
def after(absorbed, shifted, absorbed_variant):
    return [absorbed_variant] if absorbed and absorbed["verdict"] == "change" else [shifted]
def supersede(absorbed, scaled):
    if absorbed and scaled and absorbed["verdict"] == "change" and scaled["verdict"] == "change":
        absorbed["verdict"] = "keep"
        absorbed["change"] += " (superseded: the scaled passes win over it)"
decisions = []
decide("three wgmma stages beat two", "WgmmaStages::Three becomes the default",
       "cosine-cost-hbm", ["cuda-wgmma"], ["cuda-wgmma3"])
decide("wgmma-rs beats wgmma (two or three stages)", "auto takes wgmma-rs for large problems",
       "cosine-cost-hbm", ["cuda-wgmma", "cuda-wgmma3"], ["cuda-wgmmars"])
decide("another fused cost phase beats the default (inline)",
       "the fastest candidate's FusedCost becomes the default",
       "sinkhorn-fused", ["cuda"],
       ["cuda-fusedpipe", "cuda-fusedgiven", "cuda-fusedgiven-wgmma", "cuda-fusedgiven-wgmmars",
        "cuda-fusedgiven-wgmma3"])
decide("the standalone cost phase is faster on wgmma than on auto's 64 x 64 tiles at 256 pairs",
       "WGMMA_TILES_PER_SM drops below 2 (auto takes wgmma there)",
       "sinkhorn-fused", ["cuda-fusedgiven"],
       ["cuda-fusedgiven-wgmma", "cuda-fusedgiven-wgmma3"])
# The absorbed log-sum-exps (one addition per element fewer in the on-chip passes) against
# the shifted ones: the fused kernel with the default cost phase and with the cost given, and
# sinkhorn_iterate_f32.
absorbed_inline = decide(
    "the absorbed log-sum-exps beat the shifted ones (fused, inline cost phase)",
    "SinkhornLse::Absorbed becomes the default", "sinkhorn-fused", ["cuda"], ["cuda-absorbed"])
absorbed_given = decide(
    "the absorbed log-sum-exps beat the shifted ones (fused, cost given)",
    "SinkhornLse::Absorbed becomes the default", "sinkhorn-fused", ["cuda-fusedgiven"],
    ["cuda-fusedgiven-abs"])
absorbed_iterate = decide(
    "the absorbed log-sum-exps beat the shifted ones (sinkhorn_iterate_f32)",
    "SinkhornLse::Absorbed becomes the default", "sinkhorn", ["cuda"], ["cuda-absorbed"])
# The scaled passes (Q = 2^K'' on chip: a product per element, no ex2) against the shifted
# log-sum-exps: the fused kernel with the default cost phase and with the cost given, and a
# solve from a cost (the fused kernel continuing from K in place of sinkhorn_iterate_f32).
supersede(absorbed_inline, decide(
    "the scaled passes beat the default the absorbed row leaves (fused, inline cost phase)",
    "SinkhornLse::Scaled becomes the fused kernel's default", "sinkhorn-fused",
    after(absorbed_inline, "cuda", "cuda-absorbed"), ["cuda-scaled"]))
supersede(absorbed_given, decide(
    "the scaled passes beat the default the absorbed row leaves (fused, cost given)",
    "SinkhornLse::Scaled becomes the fused kernel's default", "sinkhorn-fused",
    after(absorbed_given, "cuda-fusedgiven", "cuda-fusedgiven-abs"), ["cuda-fusedgiven-scaled"]))
supersede(absorbed_iterate, decide(
    "the scaled passes continuing from K beat sinkhorn_iterate_f32 as the absorbed row leaves it",
    "SinkhornLse::Scaled becomes the default for solves from a cost", "sinkhorn",
    after(absorbed_iterate, "cuda", "cuda-absorbed"), ["cuda-scaled"]))
for kernel in ("sinkhorn", "sinkhorn-fused"):
    decide("the blocked WGSL kernels' log-sum-exps shifted by the potentials beat the maxima",
           "BlockedLse::Shifted becomes the default on GPU adapters", kernel, ["wgpu"],
           ["wgpu-shifted"])
# What the device-side checks save is host time (read-backs), so wall time decides.
# The fastest cost phase with the fastest log-sum-exps, timed together (bench-cuda-combined,
# its settings in combined-env.txt) against the defaults.
combined_path = os.path.join(logs, "combined-env.txt")
combined_env = " ".join(open(combined_path).read().split()) if os.path.exists(combined_path) else ""
decide("the fastest measured combination of the fused settings beats the defaults",
       f"its settings ({combined_env or 'see combined-env.txt'}) become the defaults",
       "sinkhorn-fused", ["cuda"], ["cuda-combined"])
decide("checking on the host beats the stopping rule on the device (wall time)",
       "SolverChecks::Auto takes Host on GPU adapters too",
       "sinkhorn-checks", ["wgpu"], ["wgpu-hostchecks"], timing=wall_time)
decide("checking on the host beats the stopping rule on the device (CUDA, wall time)",
       "SolverChecks::Host becomes the CUDA default",
       "sinkhorn-checks", ["cuda"], ["cuda-hostchecks"], timing=wall_time)
result["decisions"] = decisions

md = [f"# GPU check: {gpu}", "", "Produced by `scripts/gpu-check.sh`; raw logs in `" + os.path.basename(logs) + "/`.", ""]
if source:
    md += [f"Code: {source}.", ""]
md += [
      "## Steps", "", "| step | status | seconds |", "|---|---|---:|"]
md += [f"| {k} | {v} | {took.get(k, '-')} |" for k, v in sorted(status.items())]
# The kernel settings the steps that set none ran with (`optical info --json`): each
# variant step sets its own on top of these.
settings = (info[0].get("settings") if info else None) or []
if settings:
    md += ["", "## Settings in effect where a step sets none (`optical info`)", "",
           "| variable | choice | every choice (the default first) |", "|---|---|---|"]
    md += [f"| `{s['variable']}` | "
           + (f"{s['value']}{' (set)' if s.get('set') else ''}" if s.get("value") is not None
              else f"INVALID: {s.get('error', '')}")
           + f" | {', '.join(s.get('choices', []))} |" for s in settings]
md += ["", "## optical bench", "", "| backend | kernel | shape | wall s/call | wall rate | device s/call | device rate |",
       "|---|---|---|---:|---:|---:|---:|"]
for be, recs in bench.items():
    for r in recs:
        if "kernel" not in r:
            continue
        rate = r.get("gexp_per_s") or r.get("gb_per_s") or 0.0
        unit = "G exp/s" if r.get("gexp_per_s") else "GB/s"
        dev = r.get("device_seconds_per_call")
        md.append(f"| {be} | {r['kernel']} | {r['shape']} | {r['seconds_per_call']:.6f} | {rate:.2f} {unit} | "
                  + (f"{dev:.6f} | {r['device_rate']:.2f} {unit} |" if dev else "- | - |"))
# Where the wall time of each call goes on the host (optical bench --phases; the phases
# nest, see src/phases.rs).
phase_rows = [(be, r) for be, recs in bench.items() for r in recs if r.get("host_phases")]
if phase_rows:
    md += ["", "## Host phases per call (ms; nested: copies and waits sit inside the solver's steps)", "",
           "| backend | kernel | wall | phases |", "|---|---|---:|---|"]
    for be, r in phase_rows:
        phases = ", ".join(f"{p['phase']} {p['seconds_per_call'] * 1e3:.3f}" for p in r["host_phases"])
        md.append(f"| {be} | {r['kernel']} | {r['seconds_per_call'] * 1e3:.3f} | {phases} |")
if torch:
    md += ["", f"## PyTorch {torch.get('torch')} (CUDA {torch.get('cuda')}), same problem", "",
           f"HBM copy bandwidth: {torch.get('hbm_copy_gb_per_s') or 0:.0f} GB/s", ""]
    if pcie:
        md += ["Host <-> device copies of 256 MiB (GB/s): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.1f}" for k, v in pcie.items()), ""]
    md += [
           "| implementation | s/call | G exp/s |", "|---|---:|---:|"]
    for r in torch.get("results", []):
        if "seconds_per_call" in r:
            md.append(f"| {r['impl']} | {r['seconds_per_call']:.6f} | {r['gexp_per_s']:.2f} |")
        else:
            md.append(f"| {r['impl']} | {r.get('error')} | |")
if ratios:
    md += ["", "## Ratios", "", "| ratio | value |", "|---|---:|"]
    md += [f"| {k} | {v:.3f} |" for k, v in ratios.items() if v is not None]
if goals:
    md += ["", "## Goals (issue 4)", "", "| goal | measured | target | met |", "|---|---:|---:|---|"]
    md += [f"| {g['goal']} | {g['value']:.3f} | {g['target']:g} | {'yes' if g['met'] else 'NO'} |" for g in goals]
if decisions:
    md += ["", f"## Defaults this run decides (a candidate must be > {DECISION_MARGIN:.0%} faster)", "",
           "| question | problem | default (µs) | candidate (µs) | speed-up | verdict |",
           "|---|---|---:|---:|---:|---|"]
    md += [f"| {d['question']} | {d['kernel']} | {d['default']} {d['default_seconds'] * 1e6:.1f} | "
           f"{d['candidate']} {d['candidate_seconds'] * 1e6:.1f} | {d['speedup']:.3f} | "
           + (f"**change**: {d['change']}" if d["verdict"] == "change"
              else f"{d['verdict']} ({d['change']})" if d["verdict"].startswith("undecided")
              else "keep the default") + " |"
           for d in decisions]
if tests:
    md += ["", "## CUDA parity (excerpt)", "", "```", tests.rstrip(), "```"]
# Against the newest earlier results file for the same GPU (device time per call of each
# backend and kernel both runs measured), so that a run shows what changed since the last.
def earlier_run():
    folder = os.path.dirname(os.path.abspath(out))
    mine = os.path.basename(out)
    # gpu-check names a day's first run <date>-<slug> and its N-th <date>-<slug>-N
    m = re.match(r"^\d{4}-\d{2}-\d{2}-(.+?)(?:-\d+)?$", mine)
    slug = m.group(1) if m else None
    runs = []
    for name in os.listdir(folder):
        if not name.endswith(".json") or name == mine + ".json":
            continue
        try:
            prev = json.load(open(os.path.join(folder, name)))
        except (OSError, ValueError):
            continue
        if not (isinstance(prev, dict) and prev.get("gpu") == gpu and isinstance(prev.get("bench"), dict)):
            continue
        # the newest day first; on a day, the N-th run of gpu-check's naming above the
        # (N-1)-th, and files named otherwise (kept by hand) below them all
        day = name[:10]
        m = slug and re.match(r"^\d{4}-\d{2}-\d{2}-" + re.escape(slug) + r"(?:-(\d+))?\.json$", name)
        runs.append(((day, int(m.group(1) or 1) if m else 0, name), name, prev))
    return max(runs, default=None, key=lambda r: r[0])

def device_times(b):
    return {(be, r["kernel"]): r["device_seconds_per_call"] for be, recs in b.items() for r in recs
            if isinstance(r, dict) and "kernel" in r and r.get("device_seconds_per_call")}

prev = earlier_run()
if prev:
    before, now = device_times(prev[2]["bench"]), device_times(bench)
    common = [k for k in now if k in before]
    if common:
        result["since"] = {"file": prev[1], "device_seconds": {f"{be} {k}": [before[(be, k)], now[(be, k)]]
                                                                for be, k in common}}
        md += ["", f"## Since {prev[1]} (device time per call)", "",
               "| backend | kernel | before s | now s | now / before |", "|---|---|---:|---:|---:|"]
        md += [f"| {be} | {k} | {before[(be, k)]:.6f} | {now[(be, k)]:.6f} | {now[(be, k)] / before[(be, k)]:.3f} |"
               for be, k in common]
# Distillation steps (scripts/distill-bench.sh): the step-time breakdown that `optical distill
# --bench-steps` prints, per backend.
distill = {}
for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
    if not (name.startswith("distill-") and name.endswith(".log")) or name == "distill-prepare.log":
        continue
    backend = name[len("distill-"):-len(".log")]
    table, entry = [], {}
    for line in open(os.path.join(logs, name), errors="replace"):
        line = line.rstrip()
        if line.startswith("|"):
            table.append(line)
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 3:
                try:
                    entry[cells[0]] = float(cells[1])
                except ValueError:
                    pass
        m = re.match(r"tokens/s \(student side\): ([0-9.]+)", line)
        if m:
            entry["tokens/s (student side)"] = float(m.group(1))
        m = re.match(r"bench step (\d+) on \d+ device\(s\): ([0-9.]+) s", line)
        if m:
            entry.setdefault("steps (s)", []).append(float(m.group(2)))
    errors = [l.strip() for l in open(os.path.join(logs, name), errors="replace")
              if l.startswith("error:") and "XDG_RUNTIME_DIR" not in l]
    # The model's shape, as optical distill announces it.
    params = [l.strip() for l in open(os.path.join(logs, name), errors="replace")
              if l.startswith("distill:") and "trainable parameters" in l]
    if entry or errors:
        state = status.get(f"distill-{backend}", "?")
        distill[backend] = dict(entry, status=state, **({"error": errors[-1]} if errors else {}))
        md += ["", f"## Distillation step on {backend} (mean of the steps after the first)", ""]
        if params:
            md += [f"`{params[-1]}` (scripts/distill-bench.sh: e5-small's shape, random weights)", ""]
        if "total" in entry:
            md += table
            md += ["", f"Student tokens/s: {entry.get('tokens/s (student side)', 0):.0f}; every step (s): "
                   + ", ".join(f"{t:.3f}" for t in entry.get("steps (s)", []))]
        else:
            md += [f"Step status: {state}; no breakdown" + (f". Last error: `{errors[-1]}`" if errors else ".")]
if distill:
    result["distill"] = distill
    if "total" in distill.get("wgpu", {}) and "total" in distill.get("cpu", {}):
        md += ["", f"Step time, CPU / wgpu: {distill['cpu']['total'] / distill['wgpu']['total']:.2f}x"]
    if "total" in distill.get("wgpu", {}) and "total" in distill.get("wgpu-cudaot", {}):
        md += ["", "Step time, wgpu / wgpu with the OT kernels on CUDA: "
               f"{distill['wgpu']['total'] / distill['wgpu-cudaot']['total']:.2f}x"]
# Nsight Compute: the headline metrics of each profiled kernel (full sections in the logs).
NCU_METRICS = re.compile(r"^\s*(Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|"
                         r"Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Executed Ipc Active|"
                         r"Registers Per Thread|Block Limit \w+|Warp Cycles Per Issued Instruction|"
                         r"Shared (Load|Store) Bank Conflicts?)\b.*")


def ncu_access_lines(text):
    """The shared-memory bank conflicts and global sector use that Nsight Compute's memory
    tables section states in its rule texts (wrapped over several lines), one line each."""
    flat = " ".join(text.split())
    out = []
    for way, req, kind, conf, pct, wav in re.findall(
            r"causes on average a ([\d.]+) - way bank conflict across all (\d+) shared (load|store) "
            r"requests\.\s*This results in (\d+) bank conflicts, which represent ([\d.]+)% of the overall "
            r"(\d+) wavefronts", flat):
        out.append(f"    Shared {kind}s: {int(req):,} requests, {int(wav):,} wavefronts ({way} per request), "
                   f"{int(conf):,} bank conflicts ({pct} %)")
    for kind, used in re.findall(r"global (loads|stores) (?:from|to) L1TEX might not be optimal\. On average, only "
                                 r"([\d.]+) of the 32 bytes transmitted per sector", flat):
        out.append(f"    Global {kind}: {used} of 32 bytes used per sector")
    return out


for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
    if not (name.startswith("profile-") and name.endswith(".log")):
        continue
    text = open(os.path.join(logs, name), errors="replace").read()
    lines = [l.rstrip() for l in text.splitlines() if NCU_METRICS.match(l)]
    lines += ncu_access_lines(text)
    if lines:
        md += ["", f"## Nsight Compute: {name[len('profile-'):-len('.log')]} (excerpt)", "", "```", *lines, "```"]
with open(out + ".json", "w") as f:
    json.dump(result, f, indent=2)
with open(out + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
print(f"gpu-check: wrote {out}.json and {out}.md")
