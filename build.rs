//! Build script: kernels are embedded into the binary with `include_str!` from `kernels/`
//! (PTX) and `shaders/` (WGSL), so a change to any of them must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=build.rs");
}
