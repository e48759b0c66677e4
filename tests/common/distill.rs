//! Tiny distillation runs shared by the training tests: random token pairs within the tiny
//! model's vocabulary and the settings a tiny model trains with.

use optical::distill::{DistillConfig, TokenizedPairs};
use optical::rng::SplitMix64;

/// `n` random pairs of 3–10 tokens (ids 1–49): student side, teacher side, then the English
/// side in the student's tokenizer, each drawn in that order from `seed`.
pub fn random_pairs(n: usize, seed: u64) -> TokenizedPairs {
    let mut rng = SplitMix64::new(seed);
    let seq = |rng: &mut SplitMix64| -> Vec<u32> {
        let len = rng.range(3, 10);
        (0..len).map(|_| rng.range(1, 49) as u32).collect()
    };
    let student = (0..n).map(|_| seq(&mut rng)).collect();
    let teacher = (0..n).map(|_| seq(&mut rng)).collect();
    let student_english = (0..n).map(|_| seq(&mut rng)).collect();
    TokenizedPairs {
        student,
        teacher,
        student_english,
    }
}

/// The settings a tiny model trains with: everything trainable, no warm-up, a large
/// learning rate, ε 0.1 with a tight Sinkhorn threshold, on the CPU kernels.
pub fn tiny_run(loss: &str, batch: usize, steps: usize) -> DistillConfig {
    DistillConfig {
        loss: loss.into(),
        batch_size: batch,
        steps,
        warmup_steps: 0,
        lr: 3e-3,
        freeze_embeddings: false,
        freeze_layers: 0,
        distill_english: false,
        epsilon: 0.1,
        sinkhorn_iterations: 500,
        sinkhorn_threshold: 1e-6,
        backend: "cpu".into(),
        ..DistillConfig::default()
    }
}
