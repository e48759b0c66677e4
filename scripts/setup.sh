#!/usr/bin/env bash
# Set-up step shared by `make demo` and `make test`: installs what the build and the tests
# need and is a no-op when everything is present. Each part is a script in scripts/setup.d/.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in scripts/setup.d/*.sh; do
    [ -e "$part" ] || continue
    echo "setup: $part" >&2
    bash "$part"
done
