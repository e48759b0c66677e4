use std::process::ExitCode;

use clap::Parser;

/// Keep freed memory in the process (glibc only).
///
/// Encoders and training allocate and free tensors of a few MiB to a few hundred MiB many
/// times per batch. With glibc's defaults every block above its dynamic mmap threshold is
/// mapped fresh and unmapped on free, so each reuse pays page faults and the kernel zeroing
/// the pages again (≈ 10 % of a CPU training step in `perf`). Raising the mmap threshold to
/// 1 GiB and the trim threshold to 2 GiB keeps them in the heap: measured on the 2-core
/// machine, e5-small encodes 14 % faster and a default distillation step takes 17 % less
/// time, for ≈ 2.5 % more peak memory (docs/PERFORMANCE.md). Skipped when `GLIBC_TUNABLES`
/// already sets malloc parameters, so a user's own settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; it is called here, at the start of
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// End quietly when standard output is a closed pipe (`optical data list | head -1`), as
/// Unix tools do. Rust starts programs with SIGPIPE ignored, so a write to a closed pipe
/// returns an error instead, and `println!` panics on it with a backtrace and exit 101.
/// The process writes to no socket, so the default action (termination) only ever
/// answers a reader that has gone away.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal (no handler code runs); it is
    // called at the start of main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

/// Keep Mesa's Vulkan device-selection layer from printing
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` on a headless machine.
///
/// That layer (`VK_LAYER_MESA_device_select`, installed with `mesa-vulkan-drivers`) asks a
/// Wayland compositor for the display's GPU whenever an instance enables
/// `VK_KHR_wayland_surface`, which wgpu always does where the driver offers it; with no
/// `XDG_RUNTIME_DIR` libwayland prints that line to stderr, which reads like optical's own
/// error although nothing failed. The layer only reorders devices for a display, and
/// optical ranks every adapter itself (`OPTICAL_WGPU_ADAPTER` picks one), so where there is
/// no session to ask (neither `XDG_RUNTIME_DIR` nor `DISPLAY`) it is switched off with its
/// own switch, `NODEVICE_SELECT=1`. A user's `NODEVICE_SELECT` or `MESA_VK_DEVICE_SELECT`
/// is left alone.
#[cfg(all(target_os = "linux", feature = "wgpu"))]
fn quiet_headless_vulkan() {
    let unset = |name: &str| std::env::var_os(name).is_none_or(|v| v.is_empty());
    if unset("XDG_RUNTIME_DIR")
        && unset("DISPLAY")
        && unset("NODEVICE_SELECT")
        && unset("MESA_VK_DEVICE_SELECT")
    {
        // Called at the start of main, before any other thread exists, so no one reads the
        // environment while it changes.
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

#[cfg(not(all(target_os = "linux", feature = "wgpu")))]
fn quiet_headless_vulkan() {}

fn main() -> ExitCode {
    default_sigpipe();
    tune_allocator();
    quiet_headless_vulkan();
    let cli = optical::cli::Cli::parse();
    match optical::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(optical::Error::Interrupted { what }) => {
            optical::errln!("interrupted: {what}");
            ExitCode::from(130)
        }
        Err(e) => {
            optical::errln!("error: {e}");
            if e.is_user_error() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
