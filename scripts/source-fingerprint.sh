#!/usr/bin/env bash
# The sha256 of what goes into the binaries of a bundle (src, kernels, shaders, build.rs,
# Cargo.toml, Cargo.lock, the asset list src/assets.rs includes, and the two GPU test
# executables' sources: tests/cuda_parity.rs, tests/wgpu_parity.rs, tests/common): each
# file's path and content, in byte order of the paths. Written
# into a bundle's MANIFEST by scripts/gpu-bundle.sh and checked against the checkout by
# scripts/gpu-check.sh --prebuilt, so that binaries built from other sources are named as such.
# In a git checkout the files are those git does not ignore (tracked or not), the files a
# copy of the working tree carries; elsewhere (such a copy, without .git) every file.
set -euo pipefail
cd "$(dirname "$0")/.."
PATHS=(src kernels shaders build.rs Cargo.toml Cargo.lock scripts/setup.d/10-assets.sh
    tests/cuda_parity.rs tests/wgpu_parity.rs tests/common)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- "${PATHS[@]}" |
        while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done
else
    find "${PATHS[@]}" -type f -print0
fi | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
