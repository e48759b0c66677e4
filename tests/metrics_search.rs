//! Exact search against a brute-force reference, on inputs built so that every score is
//! exact in f32 (±1 entries, d = 16) and many scores tie: the top-k lists and the
//! full-pool ranks must agree exactly, ties broken by docno descending as trec_eval does.
//! Also: the full-pool measures equal trec_eval's measures of the full run written to
//! disk, MaxSim with one token per text equals dense search, and the CLI writes the same
//! run.

use std::collections::BTreeMap;

use optical::backend::{Backend, BackendKind};
use optical::data::{RetrievalTask, Text};
use optical::ot::problem::{Embeddings, PackedDocs};
use optical::retrieval::evaluate::{evaluate_hits, write_run};
use optical::retrieval::metrics::{evaluate, Measure};
use optical::retrieval::search::{search, DenseVectors, Pool, Scorer};
use optical::retrieval::trec::{read_qrels, read_run};
use optical::rng::SplitMix64;

const D: usize = 16;

/// `rows` vectors of ±1 (a few all-zero); duplicates of earlier rows make exact ties.
fn signs(rng: &mut SplitMix64, rows: usize) -> Vec<i32> {
    let mut v = Vec::with_capacity(rows * D);
    for r in 0..rows {
        if r > 0 && rng.range(0, 4) == 0 {
            let src = rng.range(0, r - 1);
            let row: Vec<i32> = v[src * D..(src + 1) * D].to_vec();
            v.extend(row);
        } else if rng.range(0, 39) == 0 {
            v.extend([0; D]);
        } else {
            v.extend((0..D).map(|_| if rng.range(0, 1) == 0 { -1 } else { 1 }));
        }
    }
    v
}

struct Case {
    n: usize,
    m: usize,
    q: Vec<i32>,
    c: Vec<i32>,
    docnos: Vec<String>,
    groups: Vec<&'static str>,
    relevant: Vec<Vec<usize>>,
}

fn case(seed: u64, n: usize, m: usize) -> Case {
    let mut rng = SplitMix64::new(seed);
    let q = signs(&mut rng, n);
    let c = signs(&mut rng, m);
    // Docnos in an order unrelated to the index, so the tie rule is visible.
    let mut perm: Vec<usize> = (0..m).collect();
    for i in (1..m).rev() {
        perm.swap(i, rng.range(0, i));
    }
    let docnos = perm.iter().map(|p| format!("d{p}")).collect();
    let groups = (0..m).map(|j| ["x", "y", "z"][j % 3]).collect();
    let relevant = (0..n)
        .map(|_| {
            let mut r: Vec<usize> = (0..rng.range(1, 4)).map(|_| rng.range(0, m - 1)).collect();
            r.sort();
            r.dedup();
            r
        })
        .collect();
    Case {
        n,
        m,
        q,
        c,
        docnos,
        groups,
        relevant,
    }
}

fn to_f32(v: &[i32]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Integer cosine numerators; all nonzero rows have norm 4, zero rows score 0.
fn reference_order(cs: &Case, qi: usize) -> Vec<usize> {
    let q = &cs.q[qi * D..(qi + 1) * D];
    let score = |j: usize| -> i32 {
        let c = &cs.c[j * D..(j + 1) * D];
        q.iter().zip(c).map(|(a, b)| a * b).sum()
    };
    let mut order: Vec<usize> = (0..cs.m).collect();
    order.sort_by(|&a, &b| {
        score(b)
            .cmp(&score(a))
            .then(cs.docnos[b].cmp(&cs.docnos[a]))
    });
    order
}

#[test]
fn dense_search_matches_brute_force_exactly() {
    for (seed, n, m, k, block) in [
        (1, 37, 203, 10, 8),
        (2, 1, 1, 5, 64),
        (3, 65, 64, 64, 64),
        (4, 130, 17, 3, 7),
    ] {
        let cs = case(seed, n, m);
        let q = DenseVectors::new("q", n, D, to_f32(&cs.q)).unwrap();
        let c = DenseVectors::new("c", m, D, to_f32(&cs.c)).unwrap();
        let pool = Pool::new(cs.docnos.clone(), &cs.groups).unwrap();
        let hits = search(
            &Scorer::Dense {
                queries: &q,
                corpus: &c,
            },
            &pool,
            &cs.relevant,
            k,
            block,
        )
        .unwrap();
        assert_eq!(hits.len(), n);
        let mut mismatches = 0;
        for (qi, h) in hits.iter().enumerate() {
            let order = reference_order(&cs, qi);
            let top: Vec<usize> = h.top.iter().map(|t| t.0 as usize).collect();
            if top != order[..k.min(m)] {
                mismatches += 1;
                eprintln!(
                    "seed {seed} query {qi}: top {top:?}, reference {:?}",
                    &order[..k.min(m)]
                );
            }
            for (&r, (&rank, &grank)) in cs.relevant[qi]
                .iter()
                .zip(h.relevant_ranks.iter().zip(&h.relevant_group_ranks))
            {
                let want = order.iter().position(|&j| j == r).unwrap() + 1;
                let want_g = order
                    .iter()
                    .filter(|&&j| cs.groups[j] == cs.groups[r])
                    .position(|&j| j == r)
                    .unwrap()
                    + 1;
                if (rank, grank) != (want, want_g) {
                    mismatches += 1;
                    eprintln!("seed {seed} query {qi} doc {r}: ranks {rank}/{grank}, reference {want}/{want_g}");
                }
            }
        }
        assert_eq!(mismatches, 0);
    }
}

fn task_of(cs: &Case) -> RetrievalTask {
    RetrievalTask {
        name: "toy".into(),
        queries: (0..cs.n)
            .map(|i| Text {
                id: format!("q{i}"),
                language: ["a", "b"][i % 2].into(),
                text: String::new(),
                context: None,
            })
            .collect(),
        candidates: (0..cs.m)
            .map(|j| Text {
                id: cs.docnos[j].clone(),
                language: cs.groups[j].into(),
                text: String::new(),
                context: None,
            })
            .collect(),
        relevant: cs.relevant.clone(),
        asymmetric: false,
    }
}

#[test]
fn full_pool_measures_equal_trec_eval_on_the_full_run() {
    let cs = case(7, 50, 300);
    let task = task_of(&cs);
    let q = DenseVectors::new("q", cs.n, D, to_f32(&cs.q)).unwrap();
    let c = DenseVectors::new("c", cs.m, D, to_f32(&cs.c)).unwrap();
    let pool = Pool::new(cs.docnos.clone(), &cs.groups).unwrap();
    let measures =
        Measure::parse_list("map,recip_rank,P_1,P_5,recall_10,ndcg_cut_10,map_cut_10").unwrap();
    let hits = search(
        &Scorer::Dense {
            queries: &q,
            corpus: &c,
        },
        &pool,
        &cs.relevant,
        cs.m,
        16,
    )
    .unwrap();
    let result = evaluate_hits(&task, &pool, &hits, &measures);

    let dir = tempfile::tempdir().unwrap();
    let run_path = dir.path().join("run.trec");
    write_run(&run_path, "toy", &task, &pool, &hits).unwrap();
    let qrels_path = dir.path().join("qrels");
    std::fs::write(
        &qrels_path,
        task.qrels_lines().collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let ev = evaluate(
        &read_qrels(&qrels_path).unwrap(),
        &read_run(&run_path).unwrap(),
        &measures,
    );
    for (name, v) in &ev.mean {
        let got = result.metrics[name];
        eprintln!("{name}: search {got:.9}, trec files {v:.9}");
        assert!((got - v).abs() < 1e-12, "{name}");
    }
    // The per-language means partition the queries.
    let per: BTreeMap<&str, f64> = result
        .per_language
        .iter()
        .map(|(l, m)| (l.as_str(), m["map"]))
        .collect();
    assert_eq!(per.len(), 2);
    assert!((per.values().sum::<f64>() / 2.0 - result.metrics["map"]).abs() < 1e-12);
    let b = result.breakdown.expect("three candidate groups");
    assert_eq!(b.candidate_languages, ["x", "y", "z"]);
    assert!(b
        .map
        .iter()
        .flatten()
        .flatten()
        .all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn maxsim_with_one_token_per_text_equals_dense() {
    let cs = case(11, 23, 97);
    let q = DenseVectors::new("q", cs.n, D, to_f32(&cs.q)).unwrap();
    let c = DenseVectors::new("c", cs.m, D, to_f32(&cs.c)).unwrap();
    let pool = Pool::new(cs.docnos.clone(), &cs.groups).unwrap();
    let dense = search(
        &Scorer::Dense {
            queries: &q,
            corpus: &c,
        },
        &pool,
        &cs.relevant,
        9,
        5,
    )
    .unwrap();
    let qe = Embeddings::new("q", cs.n, 1, D, to_f32(&cs.q), None).unwrap();
    let ce = PackedDocs::new("c", D, to_f32(&cs.c), vec![1; cs.m]).unwrap();
    for kind in [BackendKind::Cpu, BackendKind::CpuReference] {
        let backend = Backend::new(kind).unwrap();
        let scorer = Scorer::MaxSim {
            backend: &backend,
            queries: &qe,
            corpus: &ce,
        };
        let ms = search(&scorer, &pool, &cs.relevant, 9, 5).unwrap();
        for (a, b) in dense.iter().zip(&ms) {
            let ta: Vec<u32> = a.top.iter().map(|t| t.0).collect();
            let tb: Vec<u32> = b.top.iter().map(|t| t.0).collect();
            assert_eq!(ta, tb, "{kind}");
            assert_eq!(a.relevant_ranks, b.relevant_ranks, "{kind}");
        }
    }
}

#[test]
fn mismatched_inputs_are_errors() {
    let cs = case(5, 3, 4);
    let q = DenseVectors::new("q", 3, D, to_f32(&cs.q)).unwrap();
    let c = DenseVectors::new("c", 4, D, to_f32(&cs.c)).unwrap();
    let c8 = DenseVectors::new("c", 8, 8, to_f32(&cs.c)).unwrap();
    let pool = Pool::new(cs.docnos.clone(), &cs.groups).unwrap();
    let s = Scorer::Dense {
        queries: &q,
        corpus: &c,
    };
    assert!(search(&s, &pool, &[], 0, 4)
        .unwrap_err()
        .to_string()
        .contains("k"));
    assert!(search(&s, &pool, &[vec![0]], 1, 4)
        .unwrap_err()
        .to_string()
        .contains("one list per query"));
    assert!(search(&s, &pool, &[vec![0], vec![9], vec![]], 1, 4)
        .unwrap_err()
        .to_string()
        .contains("candidate 9"));
    let s8 = Scorer::Dense {
        queries: &q,
        corpus: &c8,
    };
    assert!(search(&s8, &Pool::numbered(8).unwrap(), &[], 1, 4)
        .unwrap_err()
        .to_string()
        .contains("dimension"));
    assert!(search(&s, &Pool::numbered(5).unwrap(), &[], 1, 4).is_err());
    assert!(DenseVectors::new("q", 1, 2, vec![f32::NAN, 0.0]).is_err());
    assert!(DenseVectors::new("q", 2, 2, vec![0.0; 3]).is_err());
    // A shape whose product wraps a usize to the data's length (0 here) is refused, not
    // read past the end.
    let e = DenseVectors::new("c", 2, 1 << 63, vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("18446744073709551616 values"), "{e}");
    // Groups are numbered in 16 bits: one more is an error, not a wrapped number that
    // puts a candidate in another language's group.
    let names: Vec<String> = (0..65_537).map(|i| format!("g{i}")).collect();
    let groups: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(Pool::new(names[..65_536].to_vec(), &groups[..65_536]).is_ok());
    let e = Pool::new(names.clone(), &groups).map(|_| ()).unwrap_err();
    assert!(
        e.to_string()
            .contains("at most 65536 distinct groups (languages), found 65537"),
        "{e}"
    );
}

#[test]
fn search_cli_writes_the_same_run() {
    let cs = case(13, 9, 40);
    let dir = tempfile::tempdir().unwrap();
    let (qp, cp, out) = (
        dir.path().join("q.npy"),
        dir.path().join("c.npy"),
        dir.path().join("run.trec"),
    );
    optical::io::npy::write(&qp, &[cs.n, D], &to_f32(&cs.q)).unwrap();
    optical::io::npy::write(&cp, &[cs.m, D], &to_f32(&cs.c)).unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, cs.docnos.join("\n")).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["search", "--k", "5", "--queries"])
        .arg(&qp)
        .arg("--corpus")
        .arg(&cp)
        .arg("--corpus-ids")
        .arg(&ids)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let run = read_run(&out).unwrap();
    assert_eq!(run.len(), cs.n);
    for qi in 0..cs.n {
        let got: Vec<&str> = run[&qi.to_string()]
            .iter()
            .map(|(d, _)| d.as_str())
            .collect();
        let want: Vec<&str> = reference_order(&cs, qi)[..5]
            .iter()
            .map(|&j| cs.docnos[j].as_str())
            .collect();
        assert_eq!(got, want, "query {qi}");
    }
    // A repeated query id is refused before searching (the run would list its documents
    // twice under one id).
    let qids = dir.path().join("qids.txt");
    let mut names: Vec<String> = (0..cs.n).map(|i| format!("q{i}")).collect();
    names[7] = "q2".into();
    std::fs::write(&qids, names.join("\n")).unwrap();
    let search_with_ids = |out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
            .args(["search", "--k", "5", "--queries"])
            .arg(&qp)
            .arg("--corpus")
            .arg(&cp)
            .arg("--query-ids")
            .arg(&qids)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let refused = search_with_ids("dup.trec");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("line 8: expected unique query ids, found \"q2\" again (first on line 3)"),
        "{stderr}"
    );
    assert!(!dir.path().join("dup.trec").exists());
    // Blank lines after the last id are an editor's: the ids are read without them.
    names[7] = "q7".into();
    std::fs::write(&qids, names.join("\n") + "\n\n\n").unwrap();
    let trailing = search_with_ids("named.trec");
    assert!(
        trailing.status.success(),
        "{}",
        String::from_utf8_lossy(&trailing.stderr)
    );
    assert!(read_run(&dir.path().join("named.trec"))
        .unwrap()
        .contains_key("q7"));
    // An output path that is not UTF-8 is written, and its summary shows it as displayed.
    use std::os::unix::ffi::OsStrExt;
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"run-\xff.trec"));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["search", "--k", "5", "--queries"])
        .arg(&qp)
        .arg("--corpus")
        .arg(&cp)
        .arg("--out")
        .arg(&odd)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(summary["out"]
        .as_str()
        .unwrap()
        .ends_with("run-\u{fffd}.trec"));
    assert!(odd.exists());
}

#[test]
fn search_cli_maxsim_with_one_token_equals_dense() {
    let cs = case(17, 6, 30);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    optical::io::npy::write(&p("q.npy"), &[cs.n, D], &to_f32(&cs.q)).unwrap();
    optical::io::npy::write(&p("qt.npy"), &[cs.n, 1, D], &to_f32(&cs.q)).unwrap();
    optical::io::npy::write(&p("c.npy"), &[cs.m, D], &to_f32(&cs.c)).unwrap();
    optical::io::npy::write(&p("cl.npy"), &[cs.m], &vec![1i64; cs.m]).unwrap();
    let run = |args: &[&str], out: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
            .arg("search")
            .args(args)
            .arg("--out")
            .arg(p(out))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(p(out)).unwrap()
    };
    let dense = run(
        &["--queries", "q.npy", "--corpus", "c.npy", "--k", "7"],
        "d.trec",
    );
    let maxsim = run(
        &[
            "--scoring",
            "maxsim",
            "--queries",
            "qt.npy",
            "--corpus",
            "c.npy",
            "--corpus-lengths",
            "cl.npy",
            "--k",
            "7",
        ],
        "m.trec",
    );
    assert_eq!(dense, maxsim);
    // `--backend cpu` (the flag's default, where dense search runs) is accepted.
    let on_cpu = run(
        &[
            "--queries",
            "q.npy",
            "--corpus",
            "c.npy",
            "--k",
            "7",
            "--backend",
            "cpu",
        ],
        "dc.trec",
    );
    assert_eq!(dense, on_cpu);
    // MaxSim without corpus lengths is a parameter error (exit code 2), not a panic.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args([
            "search",
            "--scoring",
            "maxsim",
            "--queries",
            "qt.npy",
            "--corpus",
            "c.npy",
            "--out",
            "x",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("corpus-lengths"));
    // Dense scoring refuses lengths instead of ignoring them, and a document without
    // tokens is reported against the lengths file.
    optical::io::npy::write(&p("cl0.npy"), &[cs.m], &vec![0i64; cs.m]).unwrap();
    for (args, want) in [
        (
            vec![
                "--queries",
                "q.npy",
                "--corpus",
                "c.npy",
                "--corpus-lengths",
                "cl.npy",
            ],
            "corpus-lengths",
        ),
        (
            vec![
                "--queries",
                "q.npy",
                "--corpus",
                "c.npy",
                "--query-lengths",
                "cl.npy",
            ],
            "query-lengths",
        ),
        (
            vec![
                "--queries",
                "q.npy",
                "--corpus",
                "c.npy",
                "--backend",
                "wgpu",
            ],
            "no --backend with --scoring dense",
        ),
        (
            vec![
                "--scoring",
                "maxsim",
                "--queries",
                "qt.npy",
                "--corpus",
                "c.npy",
                "--corpus-lengths",
                "cl0.npy",
            ],
            "cl0.npy (corpus lengths): document 0 has no tokens",
        ),
        // The tag is checked before anything is read (the queries' file is not there).
        (
            vec![
                "--queries",
                "no-such.npy",
                "--corpus",
                "c.npy",
                "--tag",
                "a b",
            ],
            "TREC run tag: expected an id without whitespace, found \"a b\"",
        ),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
            .arg("search")
            .args(&args)
            .args(["--out", "y"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert!(!p("y").exists(), "{args:?}: no run file");
    }
}

/// An `f64` row whose entries all underflow in `f32` would reach the kernels as a zero
/// vector (every score 0); `search` refuses it as `optical ot` does, naming the file, and
/// still takes an `f64` row with some tiny entries.
#[test]
fn search_refuses_f64_rows_that_vanish_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (qp, cp, out) = (
        dir.path().join("q.npy"),
        dir.path().join("c.npy"),
        dir.path().join("run.trec"),
    );
    optical::io::npy::write(&cp, &[2, 2], &[1.0f32, 0.0, 0.0, 1.0]).unwrap();
    let run = |queries: &[f64]| {
        optical::io::npy::write(&qp, &[2, 2], queries).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
            .args(["search", "--k", "2", "--queries"])
            .arg(&qp)
            .arg("--corpus")
            .arg(&cp)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let refused = run(&[1.0, 0.0, 2e-300, 1e-300]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("q.npy") && err.contains("row 1"), "{err}");
    let fine = run(&[1.0, 1e-300, 0.0, 3.0]);
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );
}
