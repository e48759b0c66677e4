#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (driver installed; no CUDA toolkit needed):
#
#   bash scripts/gpu-check.sh
#
#  1. assembles kernels/*.ptx with ptxas for sm_80 and sm_90 (scripts/ptxas-check.sh)
#  2. builds optical with --features cuda,wgpu (release)
#  3. runs the CUDA tests with OPTICAL_REQUIRE_CUDA=1 (a missing device fails them)
#  4. runs the whole test suite with both GPU features, wgpu on the NVIDIA Vulkan driver
#     (WGPU_BACKEND=vulkan, the NVIDIA ICD when it is installed)
#  5. `optical info --json` and `optical bench --backend cuda --json` on every kernel,
#     including sinkhorn-fused (b=256, n=m=128, d=384, eps=0.05, 100 iterations)
#  6. the PyTorch eager and torch.compile batched log-domain Sinkhorn on the same problem
#     (scripts/torch_sinkhorn_bench.py; python3 with torch + CUDA must be importable, or
#     set PYTHON=/path/to/python)
#  7. writes benches/results/<date>-<gpu>.json and .md (commit them) and the logs under
#     benches/results/<date>-<gpu>.logs/
#
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
# The build needs the crates of Cargo.lock (network, or a cargo registry/vendor directory
# already on the machine); everything else runs offline.
set -uo pipefail
cd "$(dirname "$0")/.."
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
export OPTICAL_CACHE="$CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_TERM_COLOR=never
PYTHON="${PYTHON:-python3}"
FEATURES=cuda,wgpu

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
gpu=${gpu:-unknown-gpu}
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/-+$//')
stamp=$(date -u +%Y-%m-%d)
OUT="benches/results/$stamp-$slug"
LOGS="$OUT.logs"
mkdir -p "$LOGS"
declare -A STATUS
step() {
    local name=$1
    shift
    echo "== gpu-check: $name" >&2
    if "$@" >"$LOGS/$name.log" 2>&1; then
        STATUS[$name]=pass
    else
        STATUS[$name]=FAIL
        echo "   FAILED (log: $LOGS/$name.log)" >&2
        tail -n 30 "$LOGS/$name.log" >&2
    fi
}

step nvidia-smi nvidia-smi
if bash scripts/ptxas-fetch.sh >"$LOGS/ptxas-fetch.log" 2>&1; then
    step ptxas bash scripts/ptxas-check.sh --no-report
else
    STATUS[ptxas]="skipped (ptxas not cached and PyPI unreachable)"
fi
step build cargo build --release --features "$FEATURES"
step cuda-tests env OPTICAL_REQUIRE_CUDA=1 cargo test --release --features "$FEATURES" \
    --test cuda_parity -- --nocapture --test-threads=1
nvidia_icd=""
for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -e "$f" ] && nvidia_icd=$f && break
done
step all-tests env OPTICAL_REQUIRE_CUDA=1 OPTICAL_REQUIRE_WGPU=1 WGPU_BACKEND=vulkan \
    ${nvidia_icd:+VK_ICD_FILENAMES=$nvidia_icd} \
    cargo test --release --features "$FEATURES" -- --include-ignored
BIN="$CARGO_TARGET_DIR/release/optical"
step info "$BIN" info --json
step bench-cuda "$BIN" bench --backend cuda --json --min-seconds 2 \
    --kernels cosine-cost,maxsim,sinkhorn,sinkhorn-512,sinkhorn-fused
step bench-wgpu env WGPU_BACKEND=vulkan ${nvidia_icd:+VK_ICD_FILENAMES=$nvidia_icd} \
    "$BIN" bench --backend wgpu --json --min-seconds 2 \
    --kernels cosine-cost,maxsim,sinkhorn,sinkhorn-512,sinkhorn-fused
step bench-cpu "$BIN" bench --backend cpu --json --min-seconds 1
step torch "$PYTHON" scripts/torch_sinkhorn_bench.py --out "$LOGS/torch.json"

status_json=$(for k in "${!STATUS[@]}"; do printf '"%s": "%s",' "$k" "${STATUS[$k]}"; done)
sm_clock=$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits 2>/dev/null | head -n1)
python3 scripts/gpu_report.py "$OUT" "$LOGS" "$gpu" "{${status_json%,}}" "${sm_clock:-0}"

failed=0
for k in "${!STATUS[@]}"; do
    [ "${STATUS[$k]}" = FAIL ] && { echo "gpu-check: $k FAILED" >&2; failed=1; }
done
exit $failed
