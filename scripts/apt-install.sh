#!/usr/bin/env bash
# Install Debian packages for the setup steps (scripts/setup.d/): `apt-install.sh WHAT
# PACKAGE...`, where WHAT names the need in the message when apt-get is unavailable. Runs
# apt-get through sudo when not root, and refreshes stale package lists once.
set -euo pipefail
what="$1"
shift
if ! command -v apt-get >/dev/null; then
    echo "setup: $what missing and apt-get unavailable; install $* by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    # The package lists may be missing or stale; refresh them once and retry.
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
