//! Sinkhorn against POT fixtures (scripts/make_fixtures.py): every backend present, every
//! case. The reference must agree to 1e-6 per plan entry, the f32 fast path to 1e-5.

mod common;

use common::*;
use optical::backend::{Backend, BackendKind};
use optical::ot::{Problem, SinkhornParams};

fn problem(dir: &std::path::Path) -> Problem {
    let (shape, cost) = load(dir, "cost");
    let (_, a) = load(dir, "a");
    let (_, b) = load(dir, "b");
    Problem::new(shape[0], shape[1], shape[2], cost, Some(a), Some(b)).expect("valid fixture")
}

fn check_backend(kind: BackendKind, threshold: f64, plan_tol: f64) {
    let backend = Backend::new(kind).expect("CPU backends are always present");
    for case in fixture_cases() {
        let dir = fixture_dir(&case);
        let p = problem(&dir);
        let params = SinkhornParams {
            epsilon: epsilon(&dir),
            max_iterations: 100_000,
            threshold,
            check_every: 10,
        };
        let out = backend.sinkhorn(&p, &params).expect("solve");
        assert_eq!(
            out.converged_count(),
            p.pairs(),
            "{case}: every pair converges"
        );
        let (_, want_plan) = load(&dir, "plan");
        assert_close(
            &format!("{kind} {case} plan"),
            &out.plan,
            &want_plan,
            plan_tol,
        );
        let (_, want_cost) = load(&dir, "transport");
        assert_close(
            &format!("{kind} {case} transport cost"),
            &out.cost,
            &want_cost,
            plan_tol,
        );

        // Potentials agree with POT's modulo a constant per pair (f + c, g − c); padding is 0.
        let (_, wf) = load(&dir, "f");
        let (_, wg) = load(&dir, "g");
        for q in 0..p.pairs() {
            let (rows, cols) = p.support(q);
            let shift = rows.iter().map(|&i| out.f[q * p.n() + i]).sum::<f64>() / rows.len() as f64;
            let f: Vec<f64> = (0..p.n())
                .map(|i| {
                    if rows.contains(&i) {
                        out.f[q * p.n() + i] - shift
                    } else {
                        out.f[q * p.n() + i]
                    }
                })
                .collect();
            let g: Vec<f64> = (0..p.m())
                .map(|j| {
                    if cols.contains(&j) {
                        out.g[q * p.m() + j] + shift
                    } else {
                        out.g[q * p.m() + j]
                    }
                })
                .collect();
            // Potentials are in cost units; f32 costs scaled by 1/ε bound the fast path's accuracy.
            let tol = 1e3 * plan_tol * params.epsilon.max(0.05);
            assert_close(
                &format!("{kind} {case} pair {q} f"),
                &f,
                &wf[q * p.n()..(q + 1) * p.n()],
                tol,
            );
            assert_close(
                &format!("{kind} {case} pair {q} g"),
                &g,
                &wg[q * p.m()..(q + 1) * p.m()],
                tol,
            );
        }
    }
}

#[test]
fn reference_matches_pot() {
    check_backend(BackendKind::CpuReference, 1e-10, 1e-6);
}

#[test]
fn fast_path_matches_pot() {
    check_backend(BackendKind::Cpu, 1e-6, 1e-5);
}

#[test]
fn embeddings_path_matches_pot() {
    let dir = fixture_dir("embeddings_17x29");
    let (xs, x) = load_f32(&dir, "x");
    let (ys, y) = load_f32(&dir, "y");
    let xl: Vec<usize> = load(&dir, "x_lengths")
        .1
        .iter()
        .map(|&v| v as usize)
        .collect();
    let yl: Vec<usize> = load(&dir, "y_lengths")
        .1
        .iter()
        .map(|&v| v as usize)
        .collect();
    let x = optical::ot::Embeddings::new("x", xs[0], xs[1], xs[2], x, Some(xl)).unwrap();
    let y = optical::ot::Embeddings::new("y", ys[0], ys[1], ys[2], y, Some(yl)).unwrap();
    let params = SinkhornParams {
        epsilon: epsilon(&dir),
        max_iterations: 100_000,
        threshold: 1e-7,
        check_every: 10,
    };
    let (_, want) = load(&dir, "plan");
    for (kind, tol) in [(BackendKind::CpuReference, 1e-6), (BackendKind::Cpu, 1e-5)] {
        let out = Backend::new(kind)
            .unwrap()
            .sinkhorn_embeddings(&x, &y, &params)
            .unwrap();
        assert_close(&format!("{kind} embeddings plan"), &out.plan, &want, tol);
    }
}
