#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU machine that has an NVIDIA driver, python3
# with PyTorch, and neither a Rust toolchain nor a network:
#
#   bash scripts/gpu-bundle.sh [DIR]          (default DIR: .gpu-bundle, ignored by git)
#   # copy the checkout with DIR to the GPU machine, then there:
#   bash scripts/gpu-check.sh --prebuilt DIR [--export OUTDIR]
#
# DIR holds, xz-compressed and stripped, the release `optical` binary and the two GPU test
# executables (tests/cuda_parity.rs, tests/wgpu_parity.rs) built with --features cuda,wgpu;
# the inputs of the distillation bench (DIR/distill, scripts/distill-bench.sh);
# the pinned ptxas (12.9, the one CI checks registers and spills with); the Vulkan loader
# package (libvulkan1) for machines without one; and MANIFEST, which
# names the commit, whether the tree was clean, and each binary's sha256. All of it is
# self-contained: the PTX and WGSL sources are compiled into the binaries, which load the
# CUDA driver and the Vulkan loader at run time. Together about 30 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${OPTICAL_CACHE:-$HOME/.cache/optical}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_TERM_COLOR=never
FEATURES=cuda,wgpu
DEST="${1:-.gpu-bundle}"
TESTS=(cuda_parity wgpu_parity)

echo "gpu-bundle: building optical (release) and the GPU tests (--features $FEATURES)" >&2
cargo build --release --features "$FEATURES" >&2
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
# The executables' paths, from cargo's own messages (the hash in the name changes with flags).
mapfile -t exes < <(cargo test --features "$FEATURES" --no-run "${test_args[@]}" \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + "\t" + m["executable"])
')
if [ "${#exes[@]}" -ne "${#TESTS[@]}" ]; then
    echo "gpu-bundle: expected ${#TESTS[@]} test executables from cargo, found ${#exes[@]}" >&2
    exit 1
fi

rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/debs"
pack() { # name path
    strip -o "$DEST/bin/$1" "$2"
    sha=$(sha256sum "$DEST/bin/$1" | cut -d' ' -f1)
    xz -T0 -6 "$DEST/bin/$1"
    echo "$1 $sha" >>"$DEST/MANIFEST.bins"
}
pack optical "$CARGO_TARGET_DIR/release/optical"
for e in "${exes[@]}"; do pack "${e%%$'\t'*}" "${e#*$'\t'}"; done
# The pinned ptxas that CI checks registers and spills with (the GPU machine's own may be
# another CUDA release, whose register allocation can differ at the kernels' caps).
pack ptxas "$(bash scripts/ptxas-fetch.sh)"

# What the distillation bench needs (scripts/distill-bench.sh: e5-small's shape, the XLM-R
# tokenizer, English-Hausa bitext; about 3 MB), when the assets and data are here.
if ! bash scripts/distill-bench.sh prepare "$CARGO_TARGET_DIR/release/optical" "$DEST/distill" >&2; then
    rm -rf "$DEST/distill"
    echo "gpu-bundle: no distillation bench inputs (run \`optical assets fetch\`; the data directory needs mafand/en-hau)" >&2
fi

# The Vulkan loader and the GL vendor-neutral dispatch libraries, for a machine whose image
# has the NVIDIA driver and its ICD file but neither libvulkan.so.1 nor the libglvnd
# libraries that the NVIDIA Vulkan driver (libGLX_nvidia.so.0) links against.
VULKAN_DEBS=(libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0)
if command -v apt-get >/dev/null 2>&1; then
    (cd "$DEST/debs" && apt-get download -q "${VULKAN_DEBS[@]}" >&2) ||
        echo "gpu-bundle: could not download ${VULKAN_DEBS[*]} (the GPU machine must have them)" >&2
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# Only what goes into the binaries decides whether they match the commit.
dirty=$( [ -z "$(git status --porcelain --untracked-files=no -- src kernels shaders tests build.rs Cargo.toml Cargo.lock 2>/dev/null)" ] && echo clean || echo modified)
{
    echo "commit $commit"
    echo "tree $dirty"
    # Not of the form "NAME SHA256" that the binaries' lines have (gpu-check unpacks those).
    echo "source-fingerprint: $(bash scripts/source-fingerprint.sh)"
    echo "features $FEATURES"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version 2>/dev/null | head -n1)"
    echo "rustc $(rustc --version 2>/dev/null)"
    cat "$DEST/MANIFEST.bins"
} >"$DEST/MANIFEST"
rm "$DEST/MANIFEST.bins"
du -sh "$DEST" >&2
cat "$DEST/MANIFEST" >&2
