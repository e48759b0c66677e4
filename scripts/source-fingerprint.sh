#!/usr/bin/env bash
# The sha256 of what goes into optical's binaries (src, kernels, shaders, tests, build.rs,
# Cargo.toml, Cargo.lock): each file's path and content, in byte order of the paths. Written
# into a bundle's MANIFEST by scripts/gpu-bundle.sh and checked against the checkout by
# scripts/gpu-check.sh --prebuilt, so that binaries built from other sources are named as such.
set -euo pipefail
cd "$(dirname "$0")/.."
find src kernels shaders tests build.rs Cargo.toml Cargo.lock -type f -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
