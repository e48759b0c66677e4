#!/usr/bin/env bash
# The main job: OPTICAL distillation of multilingual-e5-small on English–Hausa (MAFAND-MT
# train) on the CPU with the default config, then the distilled student against its
# untrained self on MAFAND-MT dev (hau→eng and eng→hau P@1, in domain; not seen in
# training) and on a slice of XQuAD-R (mAP, out of domain), as a before/after table.
#
# Usage: scripts/demo.sh [path of the optical binary]
# Environment: DEMO_STEPS (default: the config's steps), DEMO_MAFAND_PAIRS (default 500),
# XQUAD_LANGUAGES (default: de), OPTICAL_DATA_DIR, OPTICAL_CACHE.
set -euo pipefail
BIN="$(realpath "${1:-target/release/optical}")"
cd "$(dirname "$0")/.."
OUT="${OPTICAL_CACHE:-$HOME/.cache/optical}/demo"
# The shared copy of the data when it is there; else the two datasets the demo reads,
# downloaded from upstream into the cache (files already there are kept).
if [ -z "${OPTICAL_DATA_DIR:-}" ]; then
    if [ -d ../shared/data ]; then
        OPTICAL_DATA_DIR="$(realpath ../shared/data)"
    else
        OPTICAL_DATA_DIR="${OPTICAL_CACHE:-$HOME/.cache/optical}/data"
        "$BIN" data fetch --datasets mafand,xquad-r --data-dir "$OPTICAL_DATA_DIR"
    fi
fi
export OPTICAL_DATA_DIR
XQUAD_LANGUAGES="${XQUAD_LANGUAGES:-de}"
MAFAND_PAIRS="${DEMO_MAFAND_PAIRS:-500}"
rm -rf "$OUT"
mkdir -p "$OUT"
STEPS=()
if [ -n "${DEMO_STEPS:-}" ]; then STEPS=(--steps "$DEMO_STEPS"); fi
start=$(date +%s)

"$BIN" info
echo
echo "== optical distill (default config: e5-small teacher and student, en-hau MAFAND-MT train)"
"$BIN" distill --print-default-config | sed 's/^/    /'
"$BIN" distill --out "$OUT/run" "${STEPS[@]}" > "$OUT/summary.json"

# Evaluate from inside the run directory so that the student's model name is `student`.
cd "$OUT/run"
echo
echo "== optical eval: MAFAND-MT dev, hau↔eng P@1 (first $MAFAND_PAIRS pairs)"
"$BIN" eval --dataset mafand --languages hau --split dev --max-pairs "$MAFAND_PAIRS" \
    --model e5-small,student --out "$OUT/eval-mafand" > "$OUT/eval-mafand.json"
echo "== optical eval: XQuAD-R ($XQUAD_LANGUAGES), mAP over the pool of those languages"
"$BIN" eval --dataset xquad-r --languages "$XQUAD_LANGUAGES" --max-length 128 \
    --model e5-small,student --out "$OUT/eval-xquad" > "$OUT/eval-xquad.json"

echo
echo "== before (e5-small) / after (distilled student)"
python3 - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, seconds = sys.argv[1], int(sys.argv[2])
rows = []
for name in ["eval-mafand", "eval-xquad"]:
    r = json.load(open(f"{out}/{name}.json"))
    before, after = r["results"]["e5-small"], r["results"]["student"]
    for task in before:
        rows.append((r["dataset"], task, r["metric"], before[task], after[task]))
print("| dataset | task | measure | before | after | change |")
print("|---|---|---|---:|---:|---:|")
for d, t, m, b, a in rows:
    print(f"| {d} | {t} | {m} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
s = json.load(open(f"{out}/summary.json"))
dev = s["dev"]
if dev:
    # distill's rule: the highest P@1, then the highest MRR, then the earliest step.
    best = max(dev, key=lambda d: (d["p_at_1"], d["mrr"], -d["step"]))
    print(f"\nheld-out training pairs (hau→eng P@1): step 0 {dev[0]['p_at_1']:.4f}, "
          f"best step {best['step']} {best['p_at_1']:.4f}, last step {dev[-1]['step']} {dev[-1]['p_at_1']:.4f}; "
          f"exported: step {s['exported_step']}")
print(f"{s['steps']} steps, {s['tokens_per_s']:.0f} student tokens/s, "
      f"{s['mean_seconds']['total']:.2f} s/step; demo wall time {seconds // 60} min {seconds % 60} s")
PY
echo "run directory: $OUT/run (config.toml, log.jsonl, dev.jsonl, loss.svg, dev.svg, checkpoints, student)"
