#!/usr/bin/env bash
# curl, which `optical data fetch` downloads with (and its test runs against a local
# mirror). A no-op when curl is installed.
set -euo pipefail
if command -v curl >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup: curl missing and apt-get unavailable; install curl by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends curl >/dev/null 2>&1; then
    # The package lists may be missing or stale; refresh them once and retry.
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
command -v curl >/dev/null || {
    echo "setup: installed curl but it is not on PATH" >&2
    exit 1
}
