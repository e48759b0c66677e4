//! Assemble every `kernels/*.ptx` with ptxas for sm_80 and sm_90 (no GPU needed) through
//! `scripts/ptxas-check.sh`, when a ptxas is at hand: `$PTXAS`, the one
//! `scripts/ptxas-fetch.sh` caches (`make setup` fetches it), or one on `PATH`. Without
//! any, the test fails (`OPTICAL_SKIP_PTXAS=1` skips it, saying so); `make test` runs the
//! script itself as well. The kernels are also executed in a PTX interpreter
//! (`scripts/ptx-emulate.py`), which needs `python3` (as `make setup` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("OPTICAL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/optical")))?;
    let cached = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ptxas-"))
        .map(|e| e.path().join("ptxas"))
        .find(|p| p.is_file());
    cached.or_else(|| {
        let ok = Command::new("ptxas").arg("--version").output().ok()?;
        ok.status.success().then(|| PathBuf::from("ptxas"))
    })
}

#[test]
fn every_ptx_file_assembles_for_sm80_and_sm90_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        if std::env::var_os("OPTICAL_SKIP_PTXAS").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED (OPTICAL_SKIP_PTXAS=1): no ptxas");
            return;
        }
        panic!(
            "no ptxas: run `make setup` (scripts/ptxas-fetch.sh caches the pinned one) or set \
             PTXAS; OPTICAL_SKIP_PTXAS=1 skips this test"
        );
    };
    let root = common::repo_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/ptxas-check.sh"))
        .arg("--no-report")
        .env("PTXAS", &ptxas)
        .output()
        .expect("bash runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "ptxas-check failed with {ptxas:?}:\n{log}"
    );
    assert!(log.contains("no spills"), "{log}");
}

/// Run every kernel in `scripts/ptx-emulate.py` (a PTX interpreter for the kernels'
/// instruction subset) on small shapes against its contract: the indexing, barriers,
/// shuffles and early exits are exercised without a GPU. Needs only `python3`.
#[test]
fn kernels_match_their_contracts_in_the_ptx_emulator() {
    let root = common::repo_root();
    let out = match Command::new("python3")
        .arg(root.join("scripts/ptx-emulate.py"))
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("python3 is not runnable ({e}); the PTX interpreter needs it"),
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "ptx-emulate failed:\n{log}");
    assert!(!log.contains("FAIL"), "{log}");
}
