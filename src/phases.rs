//! Wall time of the host-side phases of a call, on request (`optical bench --phases`).
//!
//! The device timings of `optical bench` show the kernels alone; a call's wall time also
//! holds the copies between host and device, the preparation of the problem and the `f64`
//! plan. With phases on, the places that do that work time themselves and the totals per
//! phase name add up across calls until [`take`] drains them. Off (the default), a phase
//! costs one relaxed atomic load.
//!
//! Phases may nest: the solver's `prepare`, `iterate`, `check` (or `iterate and check`, where
//! a GPU backend applies the stopping rule on the device) and `finish` hold the
//! backend's copies (`copy to device`, `copy to host`, `wait for device`) and `finish` holds
//! `plan (f64)`. Work queued on a GPU shows up where the host waits for it (`wait for
//! device` before a read-back, or the step that blocked: a driver may block in a submit),
//! not where it was launched. The WGPU backend compiles each pipeline the first time a
//! call needs it (`compile pipelines`), so a process's first call of a kernel holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
/// Total seconds per phase name, in the order the names were first seen.
static TOTALS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

/// Time phases from now on (`true`) or stop (`false`).
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A running phase: its time is added to `name`'s total when it is dropped.
#[must_use = "a phase is timed until it is dropped"]
pub struct Phase {
    name: &'static str,
    start: Option<Instant>,
}

/// Start timing `name` (nothing when phases are off).
pub fn phase(name: &'static str) -> Phase {
    Phase {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let seconds = start.elapsed().as_secs_f64();
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            match totals.iter_mut().find(|(n, _)| *n == self.name) {
                Some((_, total)) => *total += seconds,
                None => totals.push((self.name, seconds)),
            }
        }
    }
}

/// The totals so far (seconds per phase name, first seen first), which are reset.
pub fn take() -> Vec<(&'static str, f64)> {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_only_when_on() {
        set_enabled(false);
        drop(phase("off"));
        take();
        set_enabled(true);
        for _ in 0..3 {
            let _outer = phase("outer");
            let inner = phase("inner");
            std::thread::sleep(std::time::Duration::from_millis(2));
            drop(inner);
        }
        set_enabled(false);
        drop(phase("off"));
        let totals = take();
        set_enabled(false);
        // Other tests of this process may add phases of their own meanwhile: look these up.
        let total = |name| totals.iter().find(|(n, _)| *n == name).map(|&(_, t)| t);
        let (inner, outer) = (total("inner").unwrap(), total("outer").unwrap());
        assert!(inner >= 0.006 && outer >= inner, "{totals:?}");
        assert_eq!(total("off"), None, "{totals:?}");
        let order: Vec<_> = totals
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| ["inner", "outer"].contains(n))
            .collect();
        // "inner" ends first, so it is seen first.
        assert_eq!(order, ["inner", "outer"], "{totals:?}");
    }
}
