#!/usr/bin/env bash
# Fetch ptxas (from the pinned nvidia-cuda-nvcc-cu12 wheel) so that CI can assemble
# kernels/*.ptx without a GPU. No-op when it is already cached.
set -euo pipefail
bash "$(dirname "$0")/../ptxas-fetch.sh" >/dev/null
