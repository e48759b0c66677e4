#!/usr/bin/env bash
# The kernels alone (`make demo-ot`): show the backends, solve an OT problem from ragged
# token embeddings (a fixture), and time the kernels.
set -euo pipefail
BIN="${1:-target/release/optical}"
cd "$(dirname "$0")/.."
OUT="${OPTICAL_CACHE:-$HOME/.cache/optical}/demo"
mkdir -p "$OUT"
"$BIN" info
fx=tests/fixtures/sinkhorn/embeddings_17x29
echo "== optical ot solve from embeddings ($fx)"
"$BIN" ot solve --x "$fx/x.npy" --y "$fx/y.npy" --x-lengths "$fx/x_lengths.npy" \
    --y-lengths "$fx/y_lengths.npy" --epsilon 0.05 --out "$OUT/solve-embeddings"
echo "== optical bench (CPU fast path)"
"$BIN" bench --min-seconds 0.5
