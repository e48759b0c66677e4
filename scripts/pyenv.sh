#!/usr/bin/env bash
# A Python environment for the fixture and peer-benchmark scripts (not needed by CI).
set -euo pipefail
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
if [ ! -x "$CACHE/pyenv/bin/python" ]; then
    python3 -m venv "$CACHE/pyenv"
fi
"$CACHE/pyenv/bin/pip" install -q -r "$(dirname "$0")/requirements-peers.txt"
