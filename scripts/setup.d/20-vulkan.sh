#!/usr/bin/env bash
# Software Vulkan (Mesa lavapipe) so that the wgpu backend's tests run for real on machines
# without a GPU (CI). A no-op when the lavapipe ICD is already installed.
set -euo pipefail
if compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup: lavapipe missing and apt-get unavailable; install Mesa's Vulkan drivers (lavapipe) and libvulkan1 by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
packages=(mesa-vulkan-drivers libvulkan1)
if ! $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    # The package lists may be missing or stale; refresh them once and retry.
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || {
    echo "setup: installed ${packages[*]} but no lavapipe ICD under /usr/share/vulkan/icd.d/" >&2
    exit 1
}
