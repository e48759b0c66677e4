#!/usr/bin/env bash
# Time distillation steps on a device with a model of multilingual-e5-small's shape (random
# weights) on English-Hausa bitext, for scripts/gpu-check.sh:
#
#   bash scripts/distill-bench.sh prepare BIN DIR        # here: config, tokenizer, bitext into DIR
#   bash scripts/distill-bench.sh run BIN DIR BACKEND [STEPS [OT_BACKEND]]
#
# `prepare` needs the e5-small and XLM-R assets (`optical assets fetch`) and the MAFAND-MT
# en-hau training files (the data directory), and writes DIR/e5-small-config.json (the
# shape, from `optical assets export-e5`), DIR/tokenizer.json.xz and DIR/train.{hau,en}.xz:
# about 3 MB, what a GPU machine without the 70 MB weights or the network needs. `run`
# unpacks them (once), writes the random model (`optical assets random-model`, the e5
# prefixes added so that texts tokenize as with the real model) and runs `optical distill
# --bench-steps STEPS` (default 6; the first step is left out of the means) with the default
# configuration on BACKEND (the OT kernels on OT_BACKEND if given: `optical distill
# --ot-backend`). The step time depends on the shape and the data, not the weights:
# on the 2-core CPU machine the random model steps in 0.42-0.45 s, the real one in 0.43 s.
set -euo pipefail
mode=${1:?prepare or run}
BIN=${2:?the optical binary}
DIR=${3:?a directory}
# Absolute, before leaving the caller's directory.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
BIN=$(abs "$BIN")
DIR=$(abs "$DIR")
cd "$(dirname "$0")/.."
case $mode in
prepare)
    CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
    DATA="${OPTICAL_DATA_DIR:-../shared/data}"
    mkdir -p "$DIR"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$BIN" assets export-e5 --out "$tmp/e5" >/dev/null
    cp "$tmp/e5/config.json" "$DIR/e5-small-config.json"
    xz -T0 -9 -c "$CACHE/assets/xlmr/tokenizer.json" >"$DIR/tokenizer.json.xz"
    for side in hau en; do
        xz -9 -c "$DATA/mafand/en-hau/train.$side" >"$DIR/train.$side.xz"
    done
    ;;
run)
    BACKEND=${4:?cpu, wgpu or cuda}
    STEPS=${5:-6}
    OT=()
    [ -n "${6:-}" ] && OT=(--ot-backend "$6")
    inputs=(e5-small-config.json tokenizer.json.xz train.hau.xz train.en.xz)
    for f in "${inputs[@]}"; do
        [ -s "$DIR/$f" ] || { echo "distill-bench: $DIR/$f is missing: run \`$0 prepare\` (or rebuild the GPU bundle)" >&2; exit 2; }
    done
    # Unpacked once per set of inputs (their hash names the directory), each file and the
    # model written under a temporary name and moved into place, so that a run stopped
    # half-way leaves nothing that a later run would take for finished.
    key=$(cd "$DIR" && cat "${inputs[@]}" | sha256sum | cut -c1-16)
    work="${TMPDIR:-/tmp}/optical-distill-bench-$key"
    case $work in *:*) echo "distill-bench: the work directory $work contains ':', which --sources cannot take; set TMPDIR" >&2; exit 2 ;; esac
    mkdir -p "$work"
    for f in tokenizer.json train.hau train.en; do
        if [ ! -s "$work/$f" ]; then
            python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
                "$DIR/$f.xz" "$work/$f.tmp"
            mv "$work/$f.tmp" "$work/$f"
        fi
    done
    model="$work/e5-small-random"
    if [ ! -d "$model" ]; then
        rm -rf "$model.tmp"
        "$BIN" assets random-model --config "$DIR/e5-small-config.json" \
            --tokenizer "$work/tokenizer.json" --out "$model.tmp"
        echo '{"query": "query: ", "passage": "passage: "}' >"$model.tmp/prefixes.json"
        mv "$model.tmp" "$model"
    fi
    exec "$BIN" distill --teacher "$model" --student "$model" \
        --sources "files:hau:$work/train.hau:$work/train.en" \
        --backend "$BACKEND" "${OT[@]}" --bench-steps "$STEPS" --no-progress
    ;;
*)
    echo "distill-bench: expected prepare or run, found $mode" >&2
    exit 2
    ;;
esac
