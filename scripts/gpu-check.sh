#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (driver installed; no CUDA toolkit needed):
#
#   bash scripts/gpu-check.sh [--prebuilt DIR] [--export OUTDIR]
#
#  1. assembles kernels/*.ptx with ptxas for sm_80 and sm_90 (the Hopper-only file for
#     sm_90a) (scripts/ptxas-check.sh; the pinned wheel's ptxas: from the bundle with
#     --prebuilt, else when it is cached or PyPI answers; else the machine's own ptxas)
#  2. builds optical with --features cuda,wgpu (release), or with --prebuilt DIR unpacks the
#     binaries that scripts/gpu-bundle.sh packed (for a machine with no Rust toolchain or
#     network; DIR/MANIFEST names the commit they were built from)
#  3. runs the CUDA tests with OPTICAL_REQUIRE_CUDA=1 (a missing device fails them), each
#     in its own process (a CUDA error is sticky for a context: a fault in one kernel
#     cannot fail the tests after it)
#  4. runs the wgpu tests on the NVIDIA Vulkan driver (WGPU_BACKEND=vulkan, the NVIDIA ICD
#     when it is installed, OPTICAL_WGPU_ADAPTER=nvidia so that a software adapter cannot
#     stand in for it); when built here, the whole test suite with both GPU features
#  5. `optical info --json` and `optical bench --backend cuda --json` on every kernel (and the
#     cost kernels with each OPTICAL_CUDA_COST_KERNEL and the wgmma one with
#     OPTICAL_CUDA_WGMMA_STAGES=3, and the fused kernel with
#     OPTICAL_CUDA_FUSED_THREADS=256 too, sinkhorn-512 and sinkhorn-2048 with
#     OPTICAL_CUDA_SINKHORN_SPLIT=off, maxsim with OPTICAL_CUDA_MAXSIM=direct, and the
#     large-copy problems' wall time with OPTICAL_CUDA_STAGING=pageable),
#     including sinkhorn-fused (b=256, n=m=128, d=384, eps=0.05, 100 iterations) and the
#     exp2-peak probe (the measured ex2 rate the floors assume), and
#     `optical bench --backend wgpu` on the Vulkan driver (the Sinkhorn problems also with
#     OPTICAL_WGPU_SINKHORN=rows)
#     and distillation steps with the encoders on burn's wgpu device (scripts/distill-bench.sh:
#     a model of e5-small's shape with random weights; the same on the CPU near the end)
#  6. the PyTorch eager and torch.compile batched log-domain Sinkhorn on the same problem
#     (scripts/torch_sinkhorn_bench.py; python3 with torch + CUDA must be importable, or
#     set PYTHON=/path/to/python); the compiled variants run last (step torch-compile),
#     after the profiles, since their compiles take minutes
#  7. Nsight Compute (ncu) on one launch of the fused and cost kernels and of the exp2
#     probe, when it can read the performance counters (optional: a refusal does not fail
#     the check)
#  8. writes benches/results/<date>-<gpu>.json and .md (commit them; a later run on the same
#     day adds -2, -3, ...), with each kernel's device time against the newest earlier
#     results file of the same GPU, and the logs beside them (<name>.logs/); --export
#     OUTDIR also copies the two files and a logs.tar.gz there
#
# Every step runs even if an earlier one failed; the exit status is 1 if any failed, 3 if
# none did but GPU_CHECK_SECONDS cut the CUDA parity tests short (a step it stopped is
# reported as "cut"; steps it left no time for as skipped).
# Without --prebuilt the build needs the crates of Cargo.lock (network, or a cargo
# registry/vendor directory already on the machine); everything else runs offline.
set -uo pipefail
cd "$(dirname "$0")/.."
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
export OPTICAL_CACHE="$CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_TERM_COLOR=never
PYTHON="${PYTHON:-python3}"
FEATURES=cuda,wgpu
PREBUILT=""
EXPORT=""
# GPU_CHECK_SECONDS: a wall-clock budget for the whole run (0: none); later steps get what is
# left, so that a run under an outside time limit still writes its report.
BUDGET=${GPU_CHECK_SECONDS:-0}
# GPU_CHECK_VARIANT_SECONDS: the measuring time per kernel of the variant steps (bench-cuda-*,
# bench-wgpu-*; the baselines bench-cuda and bench-wgpu take 2 s): 1 s is hundreds of device
# timings of every problem here, and leaves the short run time for all of its decisions.
VARIANT_SECONDS=${GPU_CHECK_VARIANT_SECONDS:-1}
# GPU_CHECK_SKIP: step names to leave out, separated by spaces or commas; a name ending in *
# leaves out every step it begins (e.g. "torch-compile profile-*" for a short rerun).
SKIP=${GPU_CHECK_SKIP:-}
while [ $# -gt 0 ]; do
    case $1 in
    --prebuilt) PREBUILT=${2:?--prebuilt needs the bundle directory}; shift 2 ;;
    --export) EXPORT=${2:?--export needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (expected --prebuilt DIR or --export DIR)" >&2; exit 2 ;;
    esac
done

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
gpu=${gpu:-unknown-gpu}
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/-+$//')
stamp=$(date -u +%Y-%m-%d)
OUT="benches/results/$stamp-$slug"
# A second run on the same day and GPU gets its own files (-2, -3, ...) instead of
# overwriting the first one's.
if [ -e "$OUT.json" ] || [ -e "$OUT.md" ]; then
    k=2
    while [ -e "$OUT-$k.json" ] || [ -e "$OUT-$k.md" ]; do k=$((k + 1)); done
    OUT="$OUT-$k"
fi
LOGS="$OUT.logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"
declare -A STATUS
# Seconds each step ran, for the report (so the next run's GPU_CHECK_SECONDS can be planned).
declare -A TOOK
# The OPTICAL_*=value settings (space-separated) of a step stopped by its own time limit ->
# that step: a later step that sets all of them is skipped.
declare -A HUNG
# step NAME COMMAND...: run it, log to $LOGS/NAME.log, record pass/FAIL. A command (not a
# shell function) is stopped after ${T:-900} s, so one hung step cannot cost the others.
step() {
    local name=$1
    shift
    echo "== gpu-check: $name" >&2
    local run=("$@") limit=${T:-900} pattern patterns shortened=0
    # Split on commas and spaces without letting the shell expand the patterns' *.
    IFS=', ' read -ra patterns <<<"$SKIP"
    for pattern in "${patterns[@]}"; do
        # shellcheck disable=SC2053 # the pattern's * is meant to match
        if [[ $name == $pattern ]]; then
            STATUS[$name]="skipped (GPU_CHECK_SKIP)"
            echo "   skipped: GPU_CHECK_SKIP" >&2
            return
        fi
    done
    # The kernel settings of an earlier step that hung (its own time limit, not the budget,
    # stopped it), all of them set here too, would hang this one: its time goes to the steps
    # that can still decide.
    # Kernel settings only (OPTICAL_CUDA_*, OPTICAL_WGPU_* and OPTICAL_CPU_*, not the
    # adapter choice): the other variables name the machine, not a kernel.
    local arg settings=" " hung setting all
    for arg in "$@"; do
        [[ $arg =~ ^OPTICAL_(CUDA|WGPU|CPU)_[A-Z0-9_]+= && $arg != OPTICAL_WGPU_ADAPTER=* ]] &&
            settings+="$arg "
    done
    for hung in "${!HUNG[@]}"; do
        all=1
        for setting in $hung; do
            [[ $settings == *" $setting "* ]] || all=0
        done
        if [ "$all" = 1 ]; then
            STATUS[$name]="skipped ($hung hung in ${HUNG[$hung]})"
            echo "   skipped: $hung hung in ${HUNG[$hung]}" >&2
            return
        fi
    done
    if [ "$BUDGET" -gt 0 ]; then
        local left=$((BUDGET - SECONDS - 30)) # 30 s kept for the report
        if [ "$left" -lt 20 ]; then
            STATUS[$name]="skipped (GPU_CHECK_SECONDS=$BUDGET spent)"
            echo "   skipped: out of time" >&2
            return
        fi
        [ "$left" -lt "$limit" ] && { limit=$left; shortened=1; }
    fi
    declare -F "$1" >/dev/null || run=(timeout --kill-after=10 "$limit" "$@")
    local started=$SECONDS code=0
    "${run[@]}" >"$LOGS/$name.log" 2>&1 || code=$?
    if [ "$code" = 0 ]; then
        STATUS[$name]=pass
    elif [ "$shortened" = 1 ] && { [ "$code" = 124 ] || [ "$code" = 137 ]; }; then
        # Stopped by the time budget, not by a failure of its own (each_test returns 124
        # when it left tests out for lack of time and none failed).
        STATUS[$name]="cut (GPU_CHECK_SECONDS=$BUDGET)"
        echo "   cut: out of time (log: $LOGS/$name.log)" >&2
    else
        STATUS[$name]=FAIL
        echo "   FAILED (log: $LOGS/$name.log)" >&2
        tail -n 30 "$LOGS/$name.log" >&2
        # (A profile's time goes to Nsight's replays: slow, not hung.)
        if { [ "$code" = 124 ] || [ "$code" = 137 ]; } && [ "$settings" != " " ] &&
            [[ $name != profile-* ]]; then
            hung=${settings# }
            HUNG[${hung% }]=$name
        fi
    fi
    TOOK[$name]=$((SECONDS - started))
}

# Unpack a bundle from scripts/gpu-bundle.sh and check every binary against its MANIFEST.
unpack() {
    local dir=$1 dest=$2
    [ -f "$dir/MANIFEST" ] || { echo "no $dir/MANIFEST: not a bundle from scripts/gpu-bundle.sh" >&2; return 1; }
    mkdir -p "$dest"
    # The binaries' lines, "NAME SHA256" (the other lines describe the build).
    grep -E '^[a-z_]+ [0-9a-f]{64}$' "$dir/MANIFEST" | while read -r name sha; do
        [ -f "$dir/bin/$name.xz" ] || { echo "MANIFEST names $name, but $dir/bin/$name.xz is missing" >&2; return 1; }
        python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
            "$dir/bin/$name.xz" "$dest/$name" || return 1
        chmod +x "$dest/$name"
        got=$(sha256sum "$dest/$name" | cut -d' ' -f1)
        [ "$got" = "$sha" ] || { echo "$name: sha256 $got, MANIFEST says $sha" >&2; return 1; }
        echo "$name ok"
    done
}

if [ -n "$PREBUILT" ]; then
    BINDIR="${TMPDIR:-/tmp}/optical-gpu-check/bin"
    step unpack unpack "$PREBUILT" "$BINDIR"
    source_line="prebuilt bundle: $(grep -E '^(commit|tree|built) ' "$PREBUILT/MANIFEST" | paste -sd';' | sed 's/;/; /g')"
    # Binaries built from other sources than this checkout's (a bundle made before the last
    # change) time other kernels and reject settings they do not know: said at once, and
    # the run goes on (its numbers are the bundle's).
    bundle_sources=$(sed -n 's/^source-fingerprint: //p' "$PREBUILT/MANIFEST")
    here_sources=$(bash scripts/source-fingerprint.sh 2>/dev/null) || here_sources=unknown
    if [ -z "$bundle_sources" ]; then
        STATUS[sources]="unknown (the bundle's MANIFEST has no source-fingerprint line)"
    elif [ "$bundle_sources" = "$here_sources" ]; then
        STATUS[sources]=pass
    else
        STATUS[sources]=FAIL
        echo "gpu-check: the bundle was built from other sources ($bundle_sources) than this checkout's ($here_sources): rebuild it with make gpu-bundle" >&2
        source_line+="; BUILT FROM OTHER SOURCES than this checkout"
    fi
    BIN="$BINDIR/optical"
    # The Vulkan loader and libglvnd, if the machine lacks them (unpacked beside the
    # binaries, not into /, and found through LD_LIBRARY_PATH, which dlopen honours).
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' ||
        ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch.so.0'; then
        for deb in "$PREBUILT"/debs/*.deb; do
            [ -e "$deb" ] && dpkg-deb -x "$deb" "$BINDIR/../gl"
        done
        if [ -d "$BINDIR/../gl" ]; then
            libdirs=$(cd "$BINDIR/../gl" && find "$PWD" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
            [ -n "$libdirs" ] && export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
    fi
else
    source_line="built here: commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$([ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ', modified tree')"
    BIN="$CARGO_TARGET_DIR/release/optical"
fi
echo "gpu-check: $source_line" >&2

step nvidia-smi nvidia-smi
# ptxas: $PTXAS if set; else the pinned wheel's (cached, or fetched when not --prebuilt: the
# machine is assumed offline then); else the machine's own.
PTXAS_BIN=${PTXAS:-}
# A bundle carries the pinned ptxas (scripts/gpu-bundle.sh).
[ -z "$PTXAS_BIN" ] && [ -n "$PREBUILT" ] && [ -x "$BINDIR/ptxas" ] && PTXAS_BIN="$BINDIR/ptxas"
if [ -z "$PTXAS_BIN" ] && { [ -z "$PREBUILT" ] || [ -x "$CACHE/ptxas-12.9.86/ptxas" ]; }; then
    PTXAS_BIN=$(bash scripts/ptxas-fetch.sh 2>"$LOGS/ptxas-fetch.log") || PTXAS_BIN=""
fi
[ -n "$PTXAS_BIN" ] || PTXAS_BIN=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null || true)
if [ -n "$PTXAS_BIN" ]; then
    T=120 step ptxas env PTXAS="$PTXAS_BIN" bash -c '"$PTXAS" --version | tail -n1 && bash scripts/ptxas-check.sh --no-report'
else
    STATUS[ptxas]="skipped (no ptxas on this machine and PyPI unreachable)"
fi

nvidia_icd=""
for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
    /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
    [ -e "$f" ] && nvidia_icd=$f && break
done
VK_ENV=(WGPU_BACKEND=vulkan)
[ -n "$nvidia_icd" ] && VK_ENV+=(VK_ICD_FILENAMES="$nvidia_icd" VK_DRIVER_FILES="$nvidia_icd")
[ "$slug" != unknown-gpu ] && VK_ENV+=(OPTICAL_WGPU_ADAPTER=nvidia)
# What the Vulkan loader finds, and why a driver does not load (for the wgpu steps).
vulkan_env() {
    echo "ICD file: ${nvidia_icd:-none found}"
    [ -n "$nvidia_icd" ] && cat "$nvidia_icd"
    ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>&1
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldconfig -p | grep -E 'libvulkan|GLX_nvidia|GLdispatch|libEGL|nvidia-glcore' || true
    timeout 30 env "${VK_ENV[@]}" VK_LOADER_DEBUG=error,warn,driver "$BIN" info 2>&1 | tail -n 60
}

# In order of what matters most if the time runs out: CUDA parity, the CUDA and PyTorch
# numbers, then wgpu on the NVIDIA driver, then the CPU.
# Each test in its own process (a test executable's command, without filters): a CUDA error
# is sticky for the process's context, so a fault in a kernel not yet proven on a GPU would
# otherwise fail every test after it with errors that are not theirs.
# Each test gets at most 120 s (60 s under GPU_CHECK_SECONDS; on the H200 the longest took
# a few seconds) and no more than the budget has left (30 s kept for the report): a test
# hanging in a kernel never run on a GPU before costs the steps after it no more than that.
# Tests left out for lack of time are listed, and the function returns 124 for them when
# none failed (the step then says "cut").
each_test() {
    local names failed=0 t limit left code cut=() cap=120
    [ "$BUDGET" -gt 0 ] && cap=60
    names=$("$@" --list 2>/dev/null | sed -n 's/: test$//p')
    [ -n "$names" ] || { echo "each_test: no tests listed by: $*"; return 1; }
    for t in $names; do
        limit=$cap
        if [ "$BUDGET" -gt 0 ]; then
            left=$((BUDGET - SECONDS - 30))
            if [ "$left" -lt 20 ]; then
                cut+=("$t")
                continue
            fi
            [ "$left" -lt "$limit" ] && limit=$left
        fi
        echo "=== $t"
        code=0
        timeout --kill-after=10 "$limit" "$@" "$t" --exact --nocapture --test-threads=1 || code=$?
        if [ "$code" = 0 ]; then
            :
        elif [ "$limit" -lt "$cap" ] && { [ "$code" = 124 ] || [ "$code" = 137 ]; }; then
            # Stopped by the budget before its own cap: not shown failing, not shown passing.
            echo "=== stopped by GPU_CHECK_SECONDS after ${limit} s: $t"
            cut+=("$t")
        else
            echo "=== FAILED: $t"
            failed=1
        fi
    done
    if [ "${#cut[@]}" -gt 0 ]; then
        echo "=== CUT (GPU_CHECK_SECONDS=$BUDGET spent): ${cut[*]}"
        [ "$failed" = 0 ] && return 124
    fi
    return $failed
}
if [ -n "$PREBUILT" ]; then
    step cuda-tests each_test env OPTICAL_REQUIRE_CUDA=1 "$BINDIR/cuda_parity"
else
    step build cargo build --release --features "$FEATURES"
    step cuda-tests each_test env OPTICAL_REQUIRE_CUDA=1 cargo test --release \
        --features "$FEATURES" --test cuda_parity --
fi
T=60 step info env "${VK_ENV[@]}" "$BIN" info --json
T=60 step vulkan-env vulkan_env
# sinkhorn-checks first and the exp2 probe last: `optical bench` stops at a kernel's error, and
# the checks decision needs this step's record.
T=120 step bench-cuda "$BIN" bench --backend cuda --json --phases --min-seconds 2 \
    --kernels sinkhorn-checks,cosine-cost,maxsim,sinkhorn,sinkhorn-512,sinkhorn-fused,cosine-cost-hbm,sinkhorn-2048,sinkhorn-fused-1,exp2-peak
# PyTorch eager and the bandwidths (HBM, PCIe) right after the CUDA numbers they are the
# issue's ratios with (about 15 s); the torch.compile variants, whose compiles take minutes,
# at the end (torch-compile), so that a time limit cuts them first.
T=120 step torch "$PYTHON" scripts/torch_sinkhorn_bench.py --no-compile --out "$LOGS/torch.json"
T=90 step bench-cuda-fp32 env OPTICAL_CUDA_COST_KERNEL=fp32 "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost,sinkhorn-fused,cosine-cost-hbm
# The default cost kernel choice (auto) takes wgmma on compute capability 9.0 for problems of
# at least 2 tiles of 128 x 128 per SM (cosine-cost-hbm), else the 64 x 64 3xTF32 kernel,
# which this step runs on both problems.
T=60 step bench-cuda-tf32x3 env OPTICAL_CUDA_COST_KERNEL=tf32x3 "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost,cosine-cost-hbm
T=60 step bench-cuda-tf32x3w env OPTICAL_CUDA_COST_KERNEL=tf32x3w "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost,cosine-cost-hbm
# The wgmma cost kernel exists on compute capability 9.0 only (H100, H200).
compute_cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ')
if [ "$compute_cap" = 9.0 ]; then
    # The large problem only: the decisions are about it, and auto takes the 64 x 64
    # kernel for the small one whatever they decide.
    T=60 step bench-cuda-wgmma env OPTICAL_CUDA_COST_KERNEL=wgmma "$BIN" bench --backend cuda --json \
        --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost-hbm
    # wgmma with x in registers (not the default until this step has timed it)
    T=60 step bench-cuda-wgmmars env OPTICAL_CUDA_COST_KERNEL=wgmma-rs "$BIN" bench --backend cuda \
        --json --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost-hbm
    # wgmma with three stages: one group left in flight at each chunk's barrier (the same)
    T=60 step bench-cuda-wgmma3 env OPTICAL_CUDA_COST_KERNEL=wgmma OPTICAL_CUDA_WGMMA_STAGES=3 \
        "$BIN" bench --backend cuda --json --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost-hbm
else
    for s in bench-cuda-wgmma bench-cuda-wgmmars bench-cuda-wgmma3; do
        STATUS[$s]="skipped (compute capability ${compute_cap:-unknown}, wgmma needs 9.0)"
    done
fi
T=60 step bench-cuda-fused256 env OPTICAL_CUDA_FUSED_THREADS=256 "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused
# The fused kernel's cost phase with producer warps (cost_mode 2) against the serial default;
# the 1-iteration problem gives the cost phase's share.
T=60 step bench-cuda-fusedpipe env OPTICAL_CUDA_FUSED_COST=pipelined "$BIN" bench --backend cuda \
    --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1
# The cost given (cost_mode 3): the standalone cost kernel, then the fused kernel loading it.
# With the default cost kernel choice (for 256 pairs of 128 x 128 on 132 SMs: the 64 x 64
# tiles), and on compute capability 9.0 with each wgmma kernel.
T=60 step bench-cuda-fusedgiven env OPTICAL_CUDA_FUSED_COST=standalone "$BIN" bench --backend cuda \
    --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1
# The absorbed log-sum-exps (OPTICAL_CUDA_LSE=absorbed: the shifts kept in K'', one addition
# per element fewer in the on-chip passes) against the shifted default: the fused kernel,
# inline and with the cost given, and sinkhorn_iterate_f32 (sinkhorn).
T=60 step bench-cuda-absorbed env OPTICAL_CUDA_LSE=absorbed "$BIN" bench --backend cuda \
    --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1,sinkhorn
T=60 step bench-cuda-fusedgiven-abs env OPTICAL_CUDA_LSE=absorbed \
    OPTICAL_CUDA_FUSED_COST=standalone "$BIN" bench --backend cuda --json --min-seconds "$VARIANT_SECONDS" \
    --kernels sinkhorn-fused,sinkhorn-fused-1
# The scaled passes (OPTICAL_CUDA_LSE=scaled: Q = 2^K'' on chip, a product per element and no
# ex2, Q rebuilt from K when a pass's sums leave range), inline and with the cost given; and
# for a solve from a cost (sinkhorn), where the fused kernel continues from K in place of
# sinkhorn_iterate_f32.
T=60 step bench-cuda-scaled env OPTICAL_CUDA_LSE=scaled "$BIN" bench --backend cuda \
    --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1,sinkhorn
T=60 step bench-cuda-fusedgiven-scaled env OPTICAL_CUDA_LSE=scaled \
    OPTICAL_CUDA_FUSED_COST=standalone "$BIN" bench --backend cuda --json --min-seconds "$VARIANT_SECONDS" \
    --kernels sinkhorn-fused,sinkhorn-fused-1
if [ "$compute_cap" = 9.0 ]; then
    T=60 step bench-cuda-fusedgiven-wgmma env OPTICAL_CUDA_FUSED_COST=standalone \
        OPTICAL_CUDA_COST_KERNEL=wgmma "$BIN" bench --backend cuda --json --min-seconds "$VARIANT_SECONDS" \
        --kernels sinkhorn-fused,sinkhorn-fused-1
    T=60 step bench-cuda-fusedgiven-wgmmars env OPTICAL_CUDA_FUSED_COST=standalone \
        OPTICAL_CUDA_COST_KERNEL=wgmma-rs "$BIN" bench --backend cuda --json --min-seconds "$VARIANT_SECONDS" \
        --kernels sinkhorn-fused,sinkhorn-fused-1
    T=60 step bench-cuda-fusedgiven-wgmma3 env OPTICAL_CUDA_FUSED_COST=standalone \
        OPTICAL_CUDA_COST_KERNEL=wgmma OPTICAL_CUDA_WGMMA_STAGES=3 "$BIN" bench --backend cuda \
        --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1
else
    for s in bench-cuda-fusedgiven-wgmma bench-cuda-fusedgiven-wgmmars bench-cuda-fusedgiven-wgmma3; do
        STATUS[$s]="skipped (compute capability ${compute_cap:-unknown}, wgmma needs 9.0)"
    done
fi
# The steps above time the fused solve's settings one axis at a time (cost phase, then
# log-sum-exps); this one times the fastest cost phase with the fastest log-sum-exps
# (scripts/gpu_best_fused.py picks them from the logs so far; combined-env.txt keeps the
# choice), so that the run measures the combination its decisions would make the default.
if combined_env=$(python3 scripts/gpu_best_fused.py "$LOGS" 2>"$LOGS/combined-env.log"); then
    if [ -n "$combined_env" ]; then
        echo "$combined_env" >"$LOGS/combined-env.txt"
        # shellcheck disable=SC2086 # one NAME=value per word
        T=60 step bench-cuda-combined env $combined_env "$BIN" bench --backend cuda --json \
            --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,sinkhorn-fused-1
    else
        STATUS[bench-cuda-combined]="skipped (a step timed the fastest combination already; see combined-env.log)"
    fi
else
    STATUS[bench-cuda-combined]="skipped (no fused timing to pick from; see combined-env.log)"
fi
# sinkhorn-512 and sinkhorn-2048 (K does not fit in shared memory) with one CTA per pair for
# all iterations, against the default split half-iterations (a warp per row, n / 8 CTAs per
# pair).
T=45 step bench-cuda-nosplit env OPTICAL_CUDA_SINKHORN_SPLIT=off "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-512,sinkhorn-2048
# MaxSim through maxsim_f32 instead of the default cost kernel + maxsim_reduce_f32.
T=30 step bench-cuda-maxsim-direct env OPTICAL_CUDA_MAXSIM=direct "$BIN" bench --backend cuda --json \
    --min-seconds "$VARIANT_SECONDS" --kernels maxsim
# The problems that move the most bytes between host and device, their copies through the
# driver's pageable path instead of the default page-locked staging buffers (wall time).
# A distillation step's OT (many checks) with a read-back at every check, against the
# default: the stopping rule on the device, a read-back after 1, 2, 4, ... 32 checks.
T=30 step bench-cuda-hostchecks env OPTICAL_CUDA_CHECKS=host "$BIN" bench --backend cuda --json \
    --phases --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-checks
T=45 step bench-cuda-pageable env OPTICAL_CUDA_STAGING=pageable "$BIN" bench --backend cuda --json --phases \
    --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-fused,cosine-cost-hbm
# Nsight Compute on one launch of each CUDA kernel the goals are about (optional: it needs
# access to the performance counters, which some machines refuse): throughput, pipe use
# and issue rates, launch resources, occupancy, memory traffic (with the tables' shared-memory
# bank conflicts and global sector use, which the report quotes), warp stall reasons.
NCU=${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n1 || true)}
profile() { # name kernel-entry cost-kernel bench-problem
    T=120 step "profile-$1" env OPTICAL_CUDA_COST_KERNEL="$3" "$NCU" --kernel-name "$2" \
        --launch-skip 1 --launch-count 1 --section SpeedOfLight --section LaunchStats \
        --section Occupancy --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section MemoryWorkloadAnalysis_Tables --section WarpStateStats \
        "$BIN" bench --backend cuda --json --min-seconds 0 --kernels "$4"
    [ "${STATUS[profile-$1]}" = FAIL ] && STATUS[profile-$1]="failed (optional; see its log)"
    return 0
}
# The profiles the open goals are about run before the wgpu steps, which feed none of
# the CUDA decisions; the rest after them.
if [ -n "$NCU" ]; then
    # Most informative first, for a run whose time budget runs out: the kernels the open goals
    # are about and have not been profiled yet (wgmma with the conflict-free stores, with
    # three stages, and with x in registers; the fused kernel with the cost given; the exp2
    # probe), then the ones profiled before.
    if [ "$compute_cap" = 9.0 ]; then
        profile cost-wgmma cosine_cost_wgmma_f32 wgmma cosine-cost-hbm
        OPTICAL_CUDA_WGMMA_STAGES=3 profile cost-wgmma3 cosine_cost_wgmma_f32 wgmma cosine-cost-hbm
    fi
    # With the cost given (cost_mode 3) the fused kernel is almost all iterations: its
    # profile isolates the iteration phase (1.51x its exp floor on the H200). The
    # instruction mix and every pipe's utilisation (--print-details all) say whether the
    # SFU or something else sets the pace.
    T=120 step profile-fused-given env OPTICAL_CUDA_FUSED_COST=standalone "$NCU" \
        --kernel-name sinkhorn_fused_f32 --launch-skip 1 --launch-count 1 --section SpeedOfLight \
        --section Occupancy --section ComputeWorkloadAnalysis --section InstructionStats \
        --section WarpStateStats --print-details all \
        "$BIN" bench --backend cuda --json --min-seconds 0 --kernels sinkhorn-fused
    [ "${STATUS[profile-fused-given]}" = FAIL ] && STATUS[profile-fused-given]="failed (optional; see its log)"
    # The same sections on the exp2 probe (kernels/peak.ptx: chains of ex2 and nothing else,
    # every SM full): what Nsight reports for the SFU pipe when it is the only bound, the
    # scale to read the fused kernel's XU percentage against.
    T=60 step profile-exp2 "$NCU" --kernel-name ex2_peak_f32 --launch-skip 1 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats \
        --print-details all "$BIN" bench --backend cuda --json --min-seconds 0 --kernels exp2-peak
    [ "${STATUS[profile-exp2]}" = FAIL ] && STATUS[profile-exp2]="failed (optional; see its log)"
fi
if [ -n "$PREBUILT" ]; then
    T=240 step wgpu-tests env "${VK_ENV[@]}" "$BINDIR/wgpu_parity" --include-ignored --test-threads=1
else
    # the ptxas test with the ptxas found above; without one, the ptxas step says so
    if [ -n "$PTXAS_BIN" ]; then PTXAS_ENV=(PTXAS="$PTXAS_BIN"); else PTXAS_ENV=(OPTICAL_SKIP_PTXAS=1); fi
    step all-tests env OPTICAL_REQUIRE_CUDA=1 "${VK_ENV[@]}" "${PTXAS_ENV[@]}" \
        cargo test --release --features "$FEATURES" -- --include-ignored
fi
T=120 step bench-wgpu env "${VK_ENV[@]}" \
    "$BIN" bench --backend wgpu --json --phases --min-seconds 2 \
    --kernels sinkhorn-checks,cosine-cost,maxsim,sinkhorn,sinkhorn-512,sinkhorn-fused,cosine-cost-hbm,sinkhorn-2048,exp2-peak
# The checks on the device against the host's rule on this driver (one test, seconds): the
# whole wgpu-tests step may be left out of a short run, and the decision below changes what
# GPU adapters run.
if [ -n "$PREBUILT" ]; then
    T=60 step wgpu-checks-test env "${VK_ENV[@]}" "$BINDIR/wgpu_parity" \
        device_checks_decide_as_host_checks --exact --include-ignored --test-threads=1
fi
# A distillation step's OT (many checks) with a read-back at every check, against the default
# on a GPU adapter: the stopping rule on the device, a read-back after 1, 2, 4, ... 32 checks.
T=30 step bench-wgpu-hostchecks env "${VK_ENV[@]}" OPTICAL_WGPU_CHECKS=host \
    "$BIN" bench --backend wgpu --json --phases --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn-checks
# The register-blocked Sinkhorn kernels with their log-sum-exps shifted by the current
# potentials (an eighth fewer exp2, no maxima; shaders/blocked_lse.wgsl) against the default
# max-subtracted ones.
T=60 step bench-wgpu-shifted env "${VK_ENV[@]}" OPTICAL_WGPU_LSE=shifted \
    "$BIN" bench --backend wgpu --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn,sinkhorn-fused,sinkhorn-checks
# The Sinkhorn problems with the row kernels (one workgroup per pair, one invocation per row;
# K in workgroup memory where it fits, else streamed), against the defaults: register-blocked
# kernels up to 128 x 128, split half-iterations for sinkhorn-512.
T=60 step bench-wgpu-rows env "${VK_ENV[@]}" OPTICAL_WGPU_SINKHORN=rows \
    "$BIN" bench --backend wgpu --json --min-seconds "$VARIANT_SECONDS" --kernels sinkhorn,sinkhorn-512,sinkhorn-fused
# The cost problems with the 16 x 16 kernel (one entry per invocation) against the default
# 64 x 64 register-blocked one.
T=45 step bench-wgpu-costtile env "${VK_ENV[@]}" OPTICAL_WGPU_COST=tile \
    "$BIN" bench --backend wgpu --json --min-seconds "$VARIANT_SECONDS" --kernels cosine-cost,cosine-cost-hbm
# MaxSim with the register-blocked kernel (the default on a GPU adapter is the 16 x 16 one).
T=30 step bench-wgpu-maxsimblocked env "${VK_ENV[@]}" OPTICAL_WGPU_MAXSIM=blocked \
    "$BIN" bench --backend wgpu --json --min-seconds "$VARIANT_SECONDS" --kernels maxsim
# Distillation steps (the default configuration, a model of e5-small's shape with random
# weights, English-Hausa bitext; scripts/distill-bench.sh) with the encoders on burn's wgpu
# device on the NVIDIA Vulkan driver and the Sinkhorn on the WGSL kernels; the same on the
# CPU at the end (bench-cpu's priority). --bench-steps waits for the device between the
# parts of a step, so the breakdown is the GPU's.
if [ -n "$PREBUILT" ]; then
    DISTILL_IN="$PREBUILT/distill"
    distill_missing="skipped (the bundle has no distill/: rebuild it with make gpu-bundle where the assets and data are)"
else
    DISTILL_IN="$CACHE/distill-bench-inputs"
    bash scripts/distill-bench.sh prepare "$BIN" "$DISTILL_IN" >"$LOGS/distill-prepare.log" 2>&1 ||
        rm -rf "$DISTILL_IN"
    distill_missing="skipped (no bench inputs; see distill-prepare.log: optical assets fetch, and the data directory's mafand/en-hau)"
fi
if [ -f "$DISTILL_IN/e5-small-config.json" ]; then
    T=240 step distill-wgpu env "${VK_ENV[@]}" bash scripts/distill-bench.sh run "$BIN" "$DISTILL_IN" wgpu
    # The same with the cost and Sinkhorn on the PTX kernels (optical distill --ot-backend).
    T=120 step distill-wgpu-cudaot env "${VK_ENV[@]}" bash scripts/distill-bench.sh run "$BIN" "$DISTILL_IN" wgpu 6 cuda
else
    STATUS[distill-wgpu]=$distill_missing
    STATUS[distill-wgpu-cudaot]=$distill_missing
    STATUS[distill-cpu]=$distill_missing
fi
if [ -n "$NCU" ]; then
    # The profiles read less often come after the wgpu steps.
    [ "$compute_cap" = 9.0 ] && profile cost-wgmma-rs cosine_cost_wgmma_rs_f32 wgmma-rs cosine-cost-hbm
    OPTICAL_CUDA_FUSED_COST=pipelined profile fused-pipelined sinkhorn_fused_f32 tf32x3 sinkhorn-fused-1
    profile fused sinkhorn_fused_f32 tf32x3 sinkhorn-fused
    profile cost cosine_cost_tf32x3_f32 tf32x3 cosine-cost-hbm
    profile fused-fp32 sinkhorn_fused_f32 fp32 sinkhorn-fused
    profile cost-fp32 cosine_cost_f32 fp32 cosine-cost-hbm
    profile cost-tf32x3w cosine_cost_tf32x3w_f32 tf32x3w cosine-cost-hbm
else
    STATUS[profile]="skipped (no ncu on this machine)"
fi
T=120 step bench-cpu "$BIN" bench --backend cpu --json --phases --min-seconds 1
if [ -f "$DISTILL_IN/e5-small-config.json" ]; then
    T=120 step distill-cpu bash scripts/distill-bench.sh run "$BIN" "$DISTILL_IN" cpu
fi
T=300 step torch-compile "$PYTHON" scripts/torch_sinkhorn_bench.py --compile-only --out "$LOGS/torch.json"

status_json=$(for k in "${!STATUS[@]}"; do printf '"%s": "%s",' "$k" "${STATUS[$k]}"; done)
took_json=$(for k in "${!TOOK[@]}"; do printf '"%s": %s,' "$k" "${TOOK[$k]}"; done)
echo "{${took_json%,}}" >"$LOGS/step-seconds.json"
sm_clock=$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits 2>/dev/null | head -n1)
[[ $sm_clock =~ ^[0-9]+$ ]] || sm_clock=0 # "[N/A]" on some machines
OPTICAL_GPU_CHECK_SOURCE="$source_line" \
    python3 scripts/gpu_report.py "$OUT" "$LOGS" "$gpu" "{${status_json%,}}" "${sm_clock:-0}"

# Against the newest committed run before this one (another GPU, perhaps: the report says
# which), kernel by kernel; informational, it never fails the check.
prev=$(ls benches/results/*.json 2>/dev/null | grep -v -- '-run[0-9]*\.json$' | grep -vxF "$OUT.json" | sed 's/\.json$//' | sort -V | tail -n1)
prev=${prev:+$prev.json}
if [ -n "$prev" ] && [ -f "$OUT.json" ]; then
    "$BIN" bench compare "$prev" "$OUT.json" --metric both --max-slowdown 5 >"$LOGS/compare-previous.txt" 2>&1
    {
        echo
        echo "## Against the previous committed run"
        echo
        echo "\`optical bench compare $prev $OUT.json --metric both --max-slowdown 5\` (previous GPU: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("gpu", "?"))' "$prev" 2>/dev/null)):"
        echo
        echo '```'
        cat "$LOGS/compare-previous.txt"
        echo '```'
    } >>"$OUT.md"
fi

if [ -n "$EXPORT" ]; then
    mkdir -p "$EXPORT"
    cp "$OUT.json" "$OUT.md" "$EXPORT/"
    tar czf "$EXPORT/$(basename "$OUT").logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
    echo "gpu-check: copied the results to $EXPORT" >&2
fi

failed=0
for k in "${!STATUS[@]}"; do
    [ "${STATUS[$k]}" = FAIL ] && { echo "gpu-check: $k FAILED" >&2; failed=1; }
done
# Parity not shown for every test is not a pass: exit 3 (incomplete) when nothing failed.
if [ "$failed" = 0 ] && [[ ${STATUS[cuda-tests]:-} == cut* ]]; then
    echo "gpu-check: cuda-tests cut by GPU_CHECK_SECONDS: parity incomplete (see its log)" >&2
    failed=3
fi
exit $failed
