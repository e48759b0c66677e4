#!/usr/bin/env bash
# curl, which `optical data fetch` downloads with (and its test runs against a local
# mirror). A no-op when curl is installed.
set -euo pipefail
if command -v curl >/dev/null; then
    exit 0
fi
bash "$(dirname "$0")/../apt-install.sh" curl curl
command -v curl >/dev/null || {
    echo "setup: installed curl but it is not on PATH" >&2
    exit 1
}
