//! The PTX sources of the CUDA backend (`kernels/*.ptx`, embedded at compile time) and the
//! entry points the runtime launches from each. Compiled with or without the `cuda`
//! feature, so that the names can be checked against the PTX on any machine.

/// One PTX module: its file under `kernels/`, its text, the entry points launched from it
/// and its `.target`: `sm_80` (JIT-compiled for Ampere and every later GPU) or `sm_90a`
/// (Hopper's architecture-specific instructions such as wgmma; loads on compute
/// capability 9.0 only).
#[derive(Clone, Copy, Debug)]
pub struct PtxModule {
    pub file: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
    pub target: &'static str,
}

pub const ROW_INV_NORM: &str = "row_inv_norm_f32";
pub const COSINE_COST: &str = "cosine_cost_f32";
pub const COSINE_COST_TF32X3: &str = "cosine_cost_tf32x3_f32";
pub const COSINE_COST_TF32X3W: &str = "cosine_cost_tf32x3w_f32";
pub const COSINE_COST_WGMMA: &str = "cosine_cost_wgmma_f32";
pub const COSINE_COST_WGMMA_RS: &str = "cosine_cost_wgmma_rs_f32";
pub const MAXSIM: &str = "maxsim_f32";
pub const MAXSIM_REDUCE: &str = "maxsim_reduce_f32";
pub const SINKHORN_ITERATE: &str = "sinkhorn_iterate_f32";
pub const SINKHORN_HALF_SPLIT: &str = "sinkhorn_half_split_f32";
pub const SINKHORN_SPLIT_ERROR: &str = "sinkhorn_split_error_f32";
pub const SINKHORN_RETIRE: &str = "sinkhorn_retire_f32";
pub const SINKHORN_FUSED: &str = "sinkhorn_fused_f32";
pub const EX2_PEAK: &str = "ex2_peak_f32";

/// A [`PtxModule`] of `kernels/$file` with its entry points and `.target`.
macro_rules! ptx_module {
    ($file:literal, [$($entry:expr),+ $(,)?], $target:literal) => {
        PtxModule {
            file: $file,
            source: include_str!(concat!("../../../kernels/", $file)),
            entries: &[$($entry),+],
            target: $target,
        }
    };
}

pub const COSINE_COST_MODULE: PtxModule = ptx_module!(
    "cosine_cost.ptx",
    [
        ROW_INV_NORM,
        COSINE_COST,
        COSINE_COST_TF32X3,
        COSINE_COST_TF32X3W
    ],
    "sm_80"
);
pub const COSINE_COST_SM90A_MODULE: PtxModule = ptx_module!(
    "cosine_cost_sm90a.ptx",
    [COSINE_COST_WGMMA, COSINE_COST_WGMMA_RS],
    "sm_90a"
);
pub const MAXSIM_MODULE: PtxModule = ptx_module!("maxsim.ptx", [MAXSIM, MAXSIM_REDUCE], "sm_80");
pub const SINKHORN_MODULE: PtxModule = ptx_module!(
    "sinkhorn.ptx",
    [
        SINKHORN_ITERATE,
        SINKHORN_HALF_SPLIT,
        SINKHORN_SPLIT_ERROR,
        SINKHORN_RETIRE
    ],
    "sm_80"
);
pub const SINKHORN_FUSED_MODULE: PtxModule =
    ptx_module!("sinkhorn_fused.ptx", [SINKHORN_FUSED], "sm_80");

/// Roofline probes: the SFU's `ex2` rate that the Sinkhorn kernels' floors assume.
pub const PEAK_MODULE: PtxModule = ptx_module!("peak.ptx", [EX2_PEAK], "sm_80");

pub const MODULES: [PtxModule; 6] = [
    COSINE_COST_MODULE,
    COSINE_COST_SM90A_MODULE,
    MAXSIM_MODULE,
    SINKHORN_MODULE,
    SINKHORN_FUSED_MODULE,
    PEAK_MODULE,
];

/// Every cosine-cost kernel's parameters: x, y, x_len, y_len, out, n, m, dp.
const COST_SIGNATURE: &[&str] = &["u64", "u64", "u64", "u64", "u64", "u32", "u32", "u32"];

/// The parameter types the runtime passes to each entry point, in order (`u64` = a device
/// pointer). The tests check them against the PTX parameter lists, and every launch checks
/// the arguments it pushed against them.
pub const SIGNATURES: [(&str, &[&str]); 14] = [
    (ROW_INV_NORM, &["u64", "u64", "u32", "u32"]),
    (COSINE_COST, COST_SIGNATURE),
    (COSINE_COST_TF32X3, COST_SIGNATURE),
    (COSINE_COST_TF32X3W, COST_SIGNATURE),
    (COSINE_COST_WGMMA, COST_SIGNATURE),
    (COSINE_COST_WGMMA_RS, COST_SIGNATURE),
    (
        MAXSIM,
        &[
            "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u32", "u32", "u32", "u32",
            "u32", "u32",
        ],
    ),
    (
        MAXSIM_REDUCE,
        &[
            "u64", "u64", "u64", "u64", "u64", "u32", "u32", "u32", "u32", "u32", "u32", "u32",
        ],
    ),
    (
        SINKHORN_ITERATE,
        &[
            "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u32", "u32",
            "u32", "u32", "u32",
        ],
    ),
    (
        SINKHORN_HALF_SPLIT,
        &[
            "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u32", "u32", "u32",
        ],
    ),
    (SINKHORN_SPLIT_ERROR, &["u64", "u64", "u64", "u64", "u32"]),
    (SINKHORN_RETIRE, &["u64", "u64", "u64", "u32", "u32"]),
    (
        SINKHORN_FUSED,
        &[
            "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u32",
            "u32", "u32", "u32", "f32", "u32", "u32", "u64",
        ],
    ),
    (EX2_PEAK, &["u64", "u32"]),
];

/// The signature of `entry` in [`SIGNATURES`].
pub fn signature(entry: &str) -> Option<&'static [&'static str]> {
    SIGNATURES
        .iter()
        .find(|(name, _)| *name == entry)
        .map(|&(_, sig)| sig)
}

/// The `.entry` names declared in a PTX text.
pub fn declared_entries(source: &str) -> Vec<&str> {
    source
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| {
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            let end = rest.find(|c: char| c == '(' || c.is_whitespace())?;
            Some(&rest[..end])
        })
        .collect()
}

/// The `.param` declarations of entry `entry`, in order, as `(type, name)`.
pub fn entry_params<'a>(source: &'a str, entry: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let start = source.lines().position(|l| {
        !l.trim_start().starts_with("//") && l.contains(&format!(".entry {entry}("))
    })?;
    let mut params = Vec::new();
    for line in source.lines().skip(start + 1) {
        let line = line.trim();
        if line.starts_with(')') {
            return Some(params);
        }
        let mut decl = line
            .strip_prefix(".param .")?
            .trim_end_matches(',')
            .split_whitespace();
        params.push((decl.next()?, decl.next()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launched_entry_is_declared_in_its_ptx() {
        for module in MODULES {
            let declared = declared_entries(module.source);
            for entry in module.entries {
                assert!(
                    declared.contains(entry),
                    "kernels/{}: the runtime launches `{entry}` but the PTX declares {declared:?}",
                    module.file
                );
            }
        }
    }

    #[test]
    fn every_declared_entry_is_launched() {
        for module in MODULES {
            for entry in declared_entries(module.source) {
                assert!(
                    module.entries.contains(&entry),
                    "kernels/{}: `.entry {entry}` is never launched by src/backend/cuda",
                    module.file
                );
            }
        }
    }

    #[test]
    fn every_ptx_file_in_kernels_is_embedded() {
        // At run time, cargo's CARGO_MANIFEST_DIR is this checkout even when the build
        // directory is shared with another one (the compiled-in path is the last builder's).
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let dir = std::path::Path::new(&root).join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("kernels/ exists")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".ptx"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = MODULES.iter().map(|m| m.file.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "kernels/*.ptx and ptx::MODULES differ");
    }

    #[test]
    fn ptx_targets_what_the_driver_jits_for_ampere_and_hopper() {
        for module in MODULES {
            let directives: Vec<&str> = module
                .source
                .lines()
                .filter(|l| l.starts_with(".version") || l.starts_with(".target"))
                .collect();
            // PTX ISA 7.8 for sm_80 (CUDA 11.8 drivers JIT it); wgmma needs ISA 8.0.
            let version = match module.target {
                "sm_80" => ".version 7.8",
                "sm_90a" => ".version 8.0",
                other => panic!("kernels/{}: unexpected target {other}", module.file),
            };
            assert_eq!(
                directives,
                [version, &format!(".target {}", module.target)],
                "kernels/{}",
                module.file
            );
            assert!(
                module
                    .source
                    .starts_with(&format!("// kernels/{}", module.file)),
                "kernels/{} must open with its header",
                module.file
            );
        }
    }

    #[test]
    fn launch_signatures_match_the_ptx_parameter_lists() {
        for (entry, sig) in SIGNATURES {
            let module = MODULES
                .iter()
                .find(|m| m.entries.contains(&entry))
                .unwrap_or_else(|| panic!("{entry} belongs to no module"));
            let params = entry_params(module.source, entry).unwrap_or_else(|| {
                panic!("kernels/{}: no parameter list for {entry}", module.file)
            });
            let types: Vec<&str> = params.iter().map(|&(t, _)| t).collect();
            assert_eq!(
                types, sig,
                "kernels/{}: {entry} declares {params:?}",
                module.file
            );
        }
        let launched: usize = MODULES.iter().map(|m| m.entries.len()).sum();
        assert_eq!(launched, SIGNATURES.len());
    }

    #[test]
    fn entry_params_parses_the_parameter_list() {
        let params = entry_params(SINKHORN_MODULE.source, SINKHORN_ITERATE).unwrap();
        assert_eq!(params.first(), Some(&("u64", "p_k")));
        assert_eq!(params.last(), Some(&("u32", "p_lse_mode")));
        assert_eq!(params.len(), 15);
        assert!(entry_params(SINKHORN_MODULE.source, "no_such_entry").is_none());
    }
}
