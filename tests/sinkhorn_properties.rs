//! Properties of the Sinkhorn solver that hold for any correct implementation, checked on
//! both CPU backends with seeded random problems.

mod common;

use common::assert_close;
use optical::backend::cpu::fast::{CpuFastWith, SinkhornForm};
use optical::backend::{Backend, BackendKind};
use optical::ot::{solve, Problem, SinkhornParams};
use optical::rng::SplitMix64;

const KINDS: [BackendKind; 2] = [BackendKind::CpuReference, BackendKind::Cpu];

fn random_problem(seed: u64, pairs: usize, n: usize, m: usize, zero_frac: f64) -> Problem {
    let mut rng = SplitMix64::new(seed);
    let cost = (0..pairs * n * m).map(|_| 2.0 * rng.uniform()).collect();
    let mut weights = |len: usize| -> Vec<f64> {
        (0..pairs * len)
            .map(|k| {
                // Keep index 0 of every pair real so no pair has zero mass.
                if k % len != 0 && rng.uniform() < zero_frac {
                    0.0
                } else {
                    0.1 + rng.uniform()
                }
            })
            .collect()
    };
    let a = weights(n);
    let b = weights(m);
    Problem::new(pairs, n, m, cost, Some(a), Some(b)).expect("valid")
}

fn params(epsilon: f64, threshold: f64) -> SinkhornParams {
    SinkhornParams {
        epsilon,
        max_iterations: 50_000,
        threshold,
        check_every: 10,
    }
}

#[test]
fn marginals_within_threshold_and_plan_nonnegative() {
    for kind in KINDS {
        let backend = Backend::new(kind).unwrap();
        for (seed, (n, m)) in [(1, 7), (8, 8), (9, 9), (17, 29), (40, 3)]
            .into_iter()
            .enumerate()
        {
            let p = random_problem(seed as u64, 3, n, m, 0.2);
            let out = backend.sinkhorn(&p, &params(0.05, 1e-6)).unwrap();
            assert_eq!(out.converged_count(), 3, "{kind} {n}x{m}");
            for q in 0..3 {
                let plan = out.plan_of(q);
                assert!(
                    plan.iter().all(|&v| v >= 0.0 && v.is_finite()),
                    "{kind}: plan >= 0, finite"
                );
                let rows: Vec<f64> = (0..n)
                    .map(|i| plan[i * m..(i + 1) * m].iter().sum())
                    .collect();
                let cols: Vec<f64> = (0..m)
                    .map(|j| (0..n).map(|i| plan[i * m + j]).sum())
                    .collect();
                let row_err: f64 = rows
                    .iter()
                    .zip(&p.a()[q * n..(q + 1) * n])
                    .map(|(r, a)| (r - a).abs())
                    .sum();
                let col_err: f64 = cols
                    .iter()
                    .zip(&p.b()[q * m..(q + 1) * m])
                    .map(|(c, b)| (c - b).abs())
                    .sum();
                println!("{kind} {n}x{m} pair {q}: row L1 error {row_err:.2e}, column L1 error {col_err:.2e}, reported {:.2e}", out.marginal_error[q]);
                assert!(
                    row_err <= 1e-6 + 1e-6,
                    "{kind}: row marginal error {row_err}"
                );
                assert!(col_err <= 2e-6, "{kind}: column marginal error {col_err}");
                assert!(
                    (row_err - out.marginal_error[q]).abs() < 1e-6,
                    "{kind}: reported error is the plan's"
                );
            }
        }
    }
}

#[test]
fn transposed_problem_gives_transposed_plan() {
    let p = random_problem(42, 2, 13, 21, 0.1);
    let (n, m) = (p.n(), p.m());
    let mut ct = vec![0.0; p.cost().len()];
    for q in 0..p.pairs() {
        for i in 0..n {
            for j in 0..m {
                ct[(q * m + j) * n + i] = p.cost()[(q * n + i) * m + j];
            }
        }
    }
    let pt = Problem::new(
        p.pairs(),
        m,
        n,
        ct,
        Some(p.b().to_vec()),
        Some(p.a().to_vec()),
    )
    .unwrap();
    for kind in KINDS {
        let backend = Backend::new(kind).unwrap();
        let prm = params(
            0.05,
            1e-9f64.max(if kind == BackendKind::Cpu { 1e-6 } else { 0.0 }),
        );
        let out = backend.sinkhorn(&p, &prm).unwrap();
        let outt = backend.sinkhorn(&pt, &prm).unwrap();
        let mut back = vec![0.0; out.plan.len()];
        for q in 0..p.pairs() {
            for j in 0..m {
                for i in 0..n {
                    back[(q * n + i) * m + j] = outt.plan[(q * m + j) * n + i];
                }
            }
        }
        let tol = if kind == BackendKind::Cpu { 1e-5 } else { 1e-8 };
        assert_close(
            &format!("{kind} OT(a,b) vs OT(b,a)^T"),
            &out.plan,
            &back,
            tol,
        );
    }
}

#[test]
fn permutation_recovered_at_small_epsilon() {
    let n = 24;
    let mut rng = SplitMix64::new(7);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.range(0, i));
    }
    // Cost 0 on the permutation, 1 + noise elsewhere: the optimal plan is the permutation.
    let cost: Vec<f64> = (0..n * n)
        .map(|k| {
            if perm[k / n] == k % n {
                0.0
            } else {
                1.0 + 0.5 * rng.uniform()
            }
        })
        .collect();
    let p = Problem::new(1, n, n, cost, None, None).unwrap();
    for kind in KINDS {
        let out = Backend::new(kind)
            .unwrap()
            .sinkhorn(&p, &params(0.01, 1e-6))
            .unwrap();
        for i in 0..n {
            let row = &out.plan[i * n..(i + 1) * n];
            let argmax = (0..n).max_by(|&x, &y| row[x].total_cmp(&row[y])).unwrap();
            assert_eq!(argmax, perm[i], "{kind}: row {i}");
            assert!(
                (row[perm[i]] - 1.0 / n as f64).abs() < 1e-6,
                "{kind}: mass on the permutation"
            );
        }
    }
}

#[test]
fn zero_weights_give_exact_zeros_and_no_nan() {
    let p = random_problem(3, 4, 16, 9, 0.5);
    for kind in KINDS {
        let out = Backend::new(kind)
            .unwrap()
            .sinkhorn(&p, &params(0.05, 1e-6))
            .unwrap();
        for q in 0..p.pairs() {
            for i in 0..p.n() {
                for j in 0..p.m() {
                    let v = out.plan[(q * p.n() + i) * p.m() + j];
                    assert!(v.is_finite(), "{kind}: no NaN");
                    if p.a()[q * p.n() + i] == 0.0 || p.b()[q * p.m() + j] == 0.0 {
                        assert_eq!(v, 0.0, "{kind}: padding is exactly zero");
                    }
                }
            }
            assert!(out.f.iter().chain(&out.g).all(|v| v.is_finite()));
        }
    }
}

#[test]
fn pairs_stop_on_their_own_and_nonconvergence_is_a_flag() {
    // Pair 0 is easy (large ε relative to its cost range), pair 1 has costs 2000x larger.
    // The threshold sits above the f32 fast path's error floor (~1e-7 per unit mass).
    let (n, m) = (10, 12);
    let mut rng = SplitMix64::new(11);
    let mut cost: Vec<f64> = (0..n * m).map(|_| 0.01 * rng.uniform()).collect();
    cost.extend((0..n * m).map(|_| 20.0 * rng.uniform()));
    let p = Problem::new(2, n, m, cost, None, None).unwrap();
    for kind in KINDS {
        let prm = SinkhornParams {
            epsilon: 0.05,
            max_iterations: 30,
            threshold: 1e-5,
            check_every: 10,
        };
        let out = Backend::new(kind).unwrap().sinkhorn(&p, &prm).unwrap();
        println!(
            "{kind}: iterations {:?}, converged {:?}, errors {:?}",
            out.iterations, out.converged, out.marginal_error
        );
        assert!(
            out.converged[0] && out.iterations[0] < 30,
            "{kind}: easy pair stops early"
        );
        assert!(
            !out.converged[1] && out.iterations[1] == 30,
            "{kind}: hard pair runs to the cap"
        );
        assert!(out.marginal_error[1] > 1e-5);
    }
}

#[test]
fn fast_path_matches_reference_on_awkward_shapes() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let fast = Backend::new(BackendKind::Cpu).unwrap();
    for (n, m) in [
        (1, 1),
        (1, 9),
        (7, 1),
        (7, 8),
        (8, 9),
        (9, 7),
        (17, 29),
        (113, 203),
    ] {
        let p = random_problem((n * 1000 + m) as u64, 2, n, m, 0.15);
        let prm = params(0.02, 1e-7);
        let r = reference.sinkhorn(&p, &prm).unwrap();
        let f = fast.sinkhorn(&p, &prm).unwrap();
        assert_close(
            &format!("fast vs reference {n}x{m}"),
            &f.plan,
            &r.plan,
            1e-5,
        );
    }
}

/// Both forms of the fast path (the log-domain passes and the scaled ones) against the
/// reference: converged plans on shapes below, at and above the scaled form's 16 lines, and,
/// at a fixed iteration count, ε small enough that the scaled form's first passes must
/// shift lines anew (its initial `2^K` underflows).
#[test]
fn both_fast_forms_match_the_reference() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    for form in [
        SinkhornForm::Log,
        SinkhornForm::Scaled,
        SinkhornForm::Streamed,
    ] {
        let fast = CpuFastWith(form);
        for (n, m) in [(15, 40), (16, 16), (40, 15), (17, 29), (64, 33), (113, 203)] {
            let p = random_problem((n * 1000 + m) as u64 + 7, 3, n, m, 0.15);
            let prm = params(0.02, 1e-7);
            let r = reference.sinkhorn(&p, &prm).unwrap();
            let f = solve(&fast, &p, &prm).unwrap();
            assert!(f.converged.iter().all(|&c| c), "{form:?} {n}x{m}");
            assert_close(&format!("{form:?} {n}x{m}"), &f.plan, &r.plan, 1e-5);
        }
        for eps in [0.005, 0.002] {
            let p = random_problem(41, 3, 37, 50, 0.1);
            let prm = SinkhornParams {
                epsilon: eps,
                max_iterations: 40,
                threshold: 0.0,
                check_every: 8,
            };
            let r = reference.sinkhorn(&p, &prm).unwrap();
            let f = solve(&fast, &p, &prm).unwrap();
            assert_eq!(r.iterations, f.iterations);
            // f32 potentials at cost range / ε = 1e3: the plans agree to a few 1e-5.
            assert_close(&format!("{form:?} eps {eps}"), &f.plan, &r.plan, 5e-5);
            for (e_f, e_r) in f.marginal_error.iter().zip(&r.marginal_error) {
                assert!(
                    (e_f - e_r).abs() <= 1e-3 * e_r + 1e-5,
                    "{form:?} eps {eps}: {e_f} vs {e_r}"
                );
            }
        }
    }
}

/// Outlier costs (a few entries 10 to 25 times the rest's range) in every fast form, forced:
/// the plans keep the reference's, including the near-zero mass the outliers get.
#[test]
fn every_fast_form_matches_the_reference_with_outlier_costs() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    for form in [
        SinkhornForm::Log,
        SinkhornForm::Scaled,
        SinkhornForm::Streamed,
    ] {
        for (n, m) in [(15, 40), (17, 29), (113, 203)] {
            let base = random_problem((n * 31 + m) as u64, 2, n, m, 0.1);
            let mut rng = SplitMix64::new((n + m) as u64);
            let mut cost = base.cost().to_vec();
            for _ in 0..(cost.len() / 40).max(1) {
                let k = rng.range(0, cost.len() - 1);
                cost[k] = 20.0 + 30.0 * rng.uniform();
            }
            let p = Problem::new(
                2,
                n,
                m,
                cost,
                Some(base.a().to_vec()),
                Some(base.b().to_vec()),
            )
            .unwrap();
            let prm = params(0.05, 1e-7);
            let r = reference.sinkhorn(&p, &prm).unwrap();
            let f = solve(&CpuFastWith(form), &p, &prm).unwrap();
            assert!(f.converged.iter().all(|&c| c), "{form:?} {n}x{m}");
            assert_close(
                &format!("{form:?} {n}x{m} outliers"),
                &f.plan,
                &r.plan,
                1e-5,
            );
        }
    }
}

/// The default form switches to the streamed sweep at 2^20 entries per pair: pairs just
/// below and at the switch match the reference (and so each other), through the same number
/// of iterations.
#[test]
fn the_default_form_matches_the_reference_across_the_streamed_switch() {
    assert_eq!(optical::backend::cpu::fast::STREAM_MIN_ENTRIES, 1 << 20);
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let fast = Backend::new(BackendKind::Cpu).unwrap();
    for (n, m) in [(1023, 1025), (1024, 1024)] {
        // No zero weights: the switch counts the support's entries.
        let p = random_problem(n as u64 * 7 + m as u64, 1, n, m, 0.0);
        let prm = SinkhornParams {
            epsilon: 0.05,
            max_iterations: 24,
            threshold: 0.0,
            // One check, at the end: an f32 error can reach exactly 0 before f64's does.
            check_every: 24,
        };
        let r = reference.sinkhorn(&p, &prm).unwrap();
        let f = fast.sinkhorn(&p, &prm).unwrap();
        assert_eq!(r.iterations, f.iterations, "{n}x{m}");
        // Plan entries of order 1/(n·m): compared relative to that scale.
        let scale = 1.0 / (n * m) as f64;
        let worst = f
            .plan
            .iter()
            .zip(&r.plan)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "{n}x{m}: plan differs by {worst} of 1/(n·m)");
    }
}

/// Long lines with uniform weights: near the fixed point a line's terms are nearly equal
/// (a one-row pair's are exactly `b_j`), and one `f32` accumulator rounds them the same way
/// at every step. Summed that way the error floor grew with the length past the default
/// threshold (1.6e-6 at 1 × 1000, 1.5e-5 at 16 × 20 000), and such pairs ran every
/// iteration without converging.
#[test]
fn long_lines_of_equal_terms_converge_in_every_fast_form() {
    for form in [
        SinkhornForm::Log,
        SinkhornForm::Scaled,
        SinkhornForm::Streamed,
    ] {
        let fast = CpuFastWith(form);
        for (n, m) in [(1, 4000), (4000, 1), (16, 20_000), (20_000, 16)] {
            let mut rng = SplitMix64::new((n + m) as u64);
            let cost = (0..n * m).map(|_| 2.0 * rng.uniform()).collect();
            let p = Problem::new(1, n, m, cost, None, None).unwrap();
            let prm = SinkhornParams {
                epsilon: 0.1,
                max_iterations: 200,
                ..SinkhornParams::default()
            };
            let f = solve(&fast, &p, &prm).unwrap();
            assert!(
                f.converged[0],
                "{form:?} {n}x{m}: error {} after {} iterations",
                f.marginal_error[0], f.iterations[0]
            );
        }
    }
}

/// A constant added to every cost changes no plan (the potentials absorb it): with costs
/// of 1e10 + [0, 2) each backend converges to the plan of the costs without it. The f64
/// reference computed `(g − C)/ε` on the raw cost, cancelling 1e10-sized terms at every
/// update, and stalled at a marginal error of ~7.5e-6.
#[test]
fn a_constant_offset_in_the_cost_changes_no_plan() {
    for kind in KINDS {
        let backend = Backend::new(kind).unwrap();
        let p = random_problem(77, 2, 17, 29, 0.0);
        let shifted = Problem::new(
            2,
            17,
            29,
            p.cost().iter().map(|c| c + 1e10).collect(),
            Some(p.a().to_vec()),
            Some(p.b().to_vec()),
        )
        .unwrap();
        let prm = SinkhornParams {
            max_iterations: 5000,
            ..params(0.05, 1e-7)
        };
        let plain = backend.sinkhorn(&p, &prm).unwrap();
        let offset = backend.sinkhorn(&shifted, &prm).unwrap();
        assert_eq!(
            offset.converged_count(),
            2,
            "{kind}: {:?}",
            offset.marginal_error
        );
        assert_close(
            &format!("{kind} offset plan"),
            &offset.plan,
            &plain.plan,
            1e-6,
        );
    }
}

#[test]
fn backends_agree_at_a_fixed_iteration_count_before_convergence() {
    // Same start (f = g = 0) and same updates: after 3 iterations, unconverged, the plans of
    // the fast path and the reference must still agree.
    let p = random_problem(99, 3, 19, 23, 0.1);
    let prm = SinkhornParams {
        epsilon: 0.02,
        max_iterations: 3,
        threshold: 0.0,
        check_every: 3,
    };
    let r = Backend::new(BackendKind::CpuReference)
        .unwrap()
        .sinkhorn(&p, &prm)
        .unwrap();
    let f = Backend::new(BackendKind::Cpu)
        .unwrap()
        .sinkhorn(&p, &prm)
        .unwrap();
    assert!(
        r.converged.iter().all(|&c| !c),
        "still iterating after 3 iterations"
    );
    assert_eq!(r.iterations, f.iterations);
    assert_close(
        "fast vs reference after 3 iterations",
        &f.plan,
        &r.plan,
        1e-5,
    );
    let g_err =
        r.g.iter()
            .zip(&f.g)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
    println!("potential g max abs difference {g_err:.2e}");
    assert!(g_err < 1e-4);
}

/// With fewer pairs than threads, the fast path spreads a large pair's rows and columns
/// over threads; every row and column is still computed exactly as one thread would, so a
/// large pair solved alone on 4 threads (split) gives bit for bit what it gives inside a
/// batch of 4 (one pair per thread, not split), and what 1 thread gives.
#[test]
fn splitting_a_large_pair_over_threads_changes_no_bit() {
    for form in [
        SinkhornForm::Log,
        SinkhornForm::Scaled,
        SinkhornForm::Streamed,
    ] {
        splitting_changes_no_bit(CpuFastWith(form));
    }
}

fn splitting_changes_no_bit(fast: CpuFastWith) {
    // About 320 x 270 real entries (a fifth of the weights are zero): above the split
    // threshold of 65,536.
    let (n, m) = (400, 340);
    // The batch repeats the single pair's raw inputs (each pair's weights are normalised
    // on their own, so normalised weights fed back in could differ in the last bit).
    let mut rng = SplitMix64::new(77);
    let cost: Vec<f64> = (0..n * m).map(|_| 2.0 * rng.uniform()).collect();
    let mut weights = |len: usize| -> Vec<f64> {
        (0..len)
            .map(|k| {
                if k > 0 && rng.uniform() < 0.2 {
                    0.0
                } else {
                    0.1 + rng.uniform()
                }
            })
            .collect()
    };
    let (a, b) = (weights(n), weights(m));
    let single = Problem::new(1, n, m, cost.clone(), Some(a.clone()), Some(b.clone())).unwrap();
    let batch = Problem::new(
        4,
        n,
        m,
        cost.repeat(4),
        Some(a.repeat(4)),
        Some(b.repeat(4)),
    )
    .unwrap();
    let p = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 60,
        threshold: 0.0,
        check_every: 7,
    };
    let pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let alone = pool(4).install(|| solve(&fast, &single, &p)).unwrap();
    let one_thread = pool(1).install(|| solve(&fast, &single, &p)).unwrap();
    let in_batch = pool(4).install(|| solve(&fast, &batch, &p)).unwrap();
    let size = n * m;
    // Several checks ran (f32 can reach an exact fixed point early, which stops a pair).
    assert!(alone.iterations[0] >= 14, "{:?}", alone.iterations);
    let same = |what: &str, x: &[f64], y: &[f64]| {
        assert_eq!(x.len(), y.len(), "{what}: lengths");
        let diff = x
            .iter()
            .zip(y)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(diff, 0, "{what}: {diff} of {} values differ", x.len());
    };
    println!(
        "iterations: alone {:?}, 1 thread {:?}, batch {:?}",
        alone.iterations, one_thread.iterations, in_batch.iterations
    );
    same("f, 1 thread", &alone.f, &one_thread.f);
    same("g, 1 thread", &alone.g, &one_thread.g);
    same("plan, 1 thread", &alone.plan, &one_thread.plan);
    same("f, batch[0]", &alone.f, &in_batch.f[..n]);
    same("g, batch[0]", &alone.g, &in_batch.g[..m]);
    same("plan, batch[0]", &alone.plan, &in_batch.plan[..size]);
    same("plan, batch[3]", &alone.plan, &in_batch.plan[3 * size..]);
    assert_eq!(alone.marginal_error[0], in_batch.marginal_error[0]);
    assert_eq!(alone.iterations[0], in_batch.iterations[0]);
}

/// The reported marginal error covers the returned plan, also where the `f32` potentials'
/// rounding is what limits it: at cost range / ε = 2e4 the fast path's `f32` check could
/// read 0 while its plan's rows were off by about 1e-5.
#[test]
fn reported_error_covers_the_plan_at_small_epsilon() {
    let p = random_problem(5, 2, 5, 7, 0.0);
    for kind in KINDS {
        let prm = SinkhornParams {
            epsilon: 1e-4,
            max_iterations: 20_000,
            threshold: 1e-6,
            check_every: 10,
        };
        let out = Backend::new(kind).unwrap().sinkhorn(&p, &prm).unwrap();
        for q in 0..2 {
            let row_err: f64 = out
                .plan_of(q)
                .chunks(7)
                .zip(&p.a()[q * 5..(q + 1) * 5])
                .map(|(row, a)| (row.iter().sum::<f64>() - a).abs())
                .sum();
            println!(
                "{kind} pair {q}: plan row L1 error {row_err:.3e}, reported {:.3e}, converged {}",
                out.marginal_error[q], out.converged[q]
            );
            assert!(
                out.marginal_error[q] >= row_err,
                "{kind} pair {q}: reported {:e} below the plan's {row_err:e}",
                out.marginal_error[q]
            );
        }
    }
}
