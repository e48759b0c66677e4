//! The OT distillation loss of a ragged batch, as the training loop computes it: `b`
//! student/teacher sentence pairs of different lengths, padded to `(b, n, d)` and
//! `(b, m, d)`, the cosine cost and an entropic plan between uniform masses on each pair's
//! real tokens, and `⟨T, C⟩` per pair. The same batch is solved on the backend asked for and
//! on the `f64` CPU reference, and the losses are compared.
//!
//! ```sh
//! cargo run --release --example ragged_ot_loss                      # CPU fast path
//! cargo run --release --features wgpu --example ragged_ot_loss -- wgpu
//! cargo run --release --features cuda --example ragged_ot_loss -- cuda 256
//! ```
//!
//! Arguments: the backend (`cpu`, `cpu-reference`, `wgpu`, `cuda`; default `cpu`) and the
//! number of pairs (default 8). A backend that is not available (no adapter, no driver, not
//! compiled in) is an error that says why.

use optical::ot::problem::{Embeddings, SinkhornParams};
use optical::{Backend, BackendKind};
use std::time::Instant;

/// A seeded random batch `(b, rows, d)` with each set's real length in `lengths`; padding
/// rows are left at zero (the solver ignores them).
fn batch(
    name: &str,
    lengths: &[usize],
    rows: usize,
    d: usize,
    seed: u64,
) -> optical::Result<Embeddings> {
    let mut state = seed;
    let mut next = || {
        // xorshift64*: reproducible without a dependency
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut data = vec![0.0; lengths.len() * rows * d];
    for (k, &len) in lengths.iter().enumerate() {
        for v in &mut data[k * rows * d..(k * rows + len) * d] {
            *v = next();
        }
    }
    Embeddings::new(name, lengths.len(), rows, d, data, Some(lengths.to_vec()))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> optical::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind: BackendKind = args.next().as_deref().unwrap_or("cpu").parse()?;
    let pairs: usize = match args.next() {
        None => 8,
        Some(s) => s
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or(optical::Error::Parameter {
                name: "pairs",
                expected: "a whole number > 0".into(),
                found: s,
            })?,
    };

    // Sentence lengths as bitext gives them: each pair's own, up to 48 and 40 tokens.
    let (n, m, d) = (48, 40, 384);
    let student_lengths: Vec<usize> = (0..pairs).map(|k| 5 + (k * 17) % (n - 4)).collect();
    let teacher_lengths: Vec<usize> = (0..pairs).map(|k| 3 + (k * 11) % (m - 2)).collect();
    let student = batch("student", &student_lengths, n, d, 0x9e37_79b9_7f4a_7c15)?;
    let teacher = batch("teacher", &teacher_lengths, m, d, 0xd1b5_4a32_d192_ed03)?;
    let params = SinkhornParams {
        epsilon: 0.05,
        threshold: 1e-6,
        ..Default::default()
    };

    let backend = Backend::new(kind)?;
    let t0 = Instant::now();
    let out = backend.sinkhorn_embeddings(&student, &teacher, &params)?;
    let seconds = t0.elapsed().as_secs_f64();
    let reference = Backend::new(BackendKind::CpuReference)?
        .sinkhorn_embeddings(&student, &teacher, &params)?;

    println!("pair  n   m   iterations  loss ⟨T, C⟩   reference    |difference|");
    let mut worst = 0.0f64;
    for p in 0..pairs {
        let diff = (out.cost[p] - reference.cost[p]).abs();
        worst = worst.max(diff);
        println!(
            "{p:>4}  {:>2}  {:>2}  {:>10}  {:>12.6}  {:>11.6}  {diff:>12.2e}",
            student_lengths[p],
            teacher_lengths[p],
            out.iterations[p],
            out.cost[p],
            reference.cost[p]
        );
    }
    let mean: f64 = out.cost.iter().sum::<f64>() / pairs as f64;
    println!(
        "{} pairs on {}: mean loss {mean:.6}, {} of {pairs} converged, solved in {:.2} ms \
         (first call: includes kernel compilation on the GPU backends); largest difference \
         from the f64 reference {worst:.2e}",
        pairs,
        kind.name(),
        out.converged_count(),
        seconds * 1e3
    );
    Ok(())
}
