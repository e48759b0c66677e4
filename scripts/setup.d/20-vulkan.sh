#!/usr/bin/env bash
# Software Vulkan (Mesa lavapipe) so that the wgpu backend's tests run for real on machines
# without a GPU (CI). A no-op when the lavapipe ICD is already installed.
set -euo pipefail
if compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null; then
    exit 0
fi
packages=(mesa-vulkan-drivers libvulkan1)
bash "$(dirname "$0")/../apt-install.sh" lavapipe "${packages[@]}"
compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || {
    echo "setup: installed ${packages[*]} but no lavapipe ICD under /usr/share/vulkan/icd.d/" >&2
    exit 1
}
