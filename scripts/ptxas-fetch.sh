#!/usr/bin/env bash
# Fetch `ptxas` from the pinned `nvidia-cuda-nvcc-cu12` wheel (PyPI, no CUDA toolkit install)
# into the cache and print its path. Cached: a second run downloads nothing.
#
#   OPTICAL_CACHE   cache root (default ~/.cache/optical); the wheel goes to $OPTICAL_CACHE/wheels,
#                   ptxas to $OPTICAL_CACHE/ptxas-<version>/ptxas
set -euo pipefail
NVCC_WHEEL_VERSION=12.9.86
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
WHEELS="$CACHE/wheels"
DEST="$CACHE/ptxas-$NVCC_WHEEL_VERSION"
PTXAS="$DEST/ptxas"
if [ -x "$PTXAS" ]; then
    echo "$PTXAS"
    exit 0
fi
mkdir -p "$WHEELS" "$DEST"
wheel=$(ls "$WHEELS"/nvidia_cuda_nvcc_cu12-"$NVCC_WHEEL_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    PIP="pip3"
    command -v pip3 >/dev/null 2>&1 || PIP="python3 -m pip"
    $PIP download -q --no-deps --only-binary=:all: --platform manylinux_2_12_x86_64 \
        "nvidia-cuda-nvcc-cu12==$NVCC_WHEEL_VERSION" -d "$WHEELS" >&2
    wheel=$(ls "$WHEELS"/nvidia_cuda_nvcc_cu12-"$NVCC_WHEEL_VERSION"-*.whl | head -n1)
fi
python3 - "$wheel" "$PTXAS" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("nvidia/cuda_nvcc/bin/ptxas")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PY
echo "$PTXAS"
