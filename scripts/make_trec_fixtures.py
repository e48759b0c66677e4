#!/usr/bin/env python3
"""Regenerate tests/fixtures/trec/: seeded random TREC qrels and runs, and the values
pytrec_eval (trec_eval 9) computes for them.

The inputs are built to exercise trec_eval's edge cases: tied scores (broken by docno
descending), graded and negative relevance levels, unjudged retrieved documents,
queries without relevant documents, queries only in the run or only in the qrels, a
query retrieving more than 1,000 documents, and scores written in several numeric
forms.

Usage (needs `pip install pytrec-eval-terrier` — the maintained build of pytrec_eval
that ships trec_eval's sources — into the project venv):

    ${OPTICAL_CACHE:-$HOME/.cache/optical}/pyenv/bin/pip install pytrec-eval-terrier
    ${OPTICAL_CACHE:-$HOME/.cache/optical}/pyenv/bin/python scripts/make_trec_fixtures.py
"""
import importlib.metadata
import json
import os
import random

import pytrec_eval

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "trec")
SEED = 20201120
MEASURES = {
    "map",
    "recip_rank",
    "P.1,3,5,10,100,1000",
    "recall.1,5,10,100,1000",
    "map_cut.1,10,100,1000",
    "ndcg_cut.1,5,10,100",
}


def fmt_score(rng, s):
    """The same number in one of several spellings trec_eval's atof accepts."""
    form = rng.randrange(4)
    if form == 0:
        return repr(s)
    if form == 1:
        return f"{s:.6f}"
    if form == 2:
        return f"{s:e}"
    return f"{s:.3g}" if float(f"{s:.3g}") == s else repr(s)


def main():
    rng = random.Random(SEED)
    qrels, run = {}, {}
    qrels_lines, run_lines = [], []
    for qi in range(40):
        qid = f"q{qi:02d}"
        n_docs = 1200 if qi == 7 else rng.randrange(1, 60)
        pool = [f"d{rng.randrange(0, 3 * n_docs + 10):04d}" for _ in range(3 * n_docs)]
        pool = list(dict.fromkeys(pool))
        in_qrels = qi % 13 != 5  # some run queries have no qrels entry
        in_run = qi % 11 != 3  # some qrels queries have no run
        if in_qrels:
            judged = rng.sample(pool, min(len(pool), rng.randrange(1, 25)))
            # q09, q19, ...: judged but nothing relevant.
            no_rel = qi % 10 == 9
            qrels[qid] = {}
            for d in judged:
                level = 0 if no_rel else rng.choice([-1, 0, 0, 1, 1, 2, 3])
                qrels[qid][d] = level
                qrels_lines.append(f"{qid} 0 {d} {level}")
        if in_run:
            docs = rng.sample(pool, min(len(pool), n_docs))
            run[qid] = {}
            # Coarse scores make many ties.
            scores = [rng.randrange(-8, 9) / 4 for _ in docs]
            for rank, (d, s) in enumerate(sorted(zip(docs, scores), key=lambda t: -t[1])):
                run[qid][d] = s
                run_lines.append(f"{qid} Q0 {d} {rank + 1} {fmt_score(rng, s)} fixture")
    rng.shuffle(run_lines)  # trec_eval ignores line order and the rank column
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES)
    per_query = evaluator.evaluate(run)
    names = sorted(next(iter(per_query.values())).keys())
    mean = {m: sum(q[m] for q in per_query.values()) / len(per_query) for m in names}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "qrels.txt"), "w") as f:
        f.write("\n".join(qrels_lines) + "\n")
    with open(os.path.join(OUT, "run.txt"), "w") as f:
        f.write("\n".join(run_lines) + "\n")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(
            {
                "generator": "scripts/make_trec_fixtures.py",
                "seed": SEED,
                "pytrec_eval": "pytrec-eval-terrier " + importlib.metadata.version("pytrec-eval-terrier"),
                "measures": names,
                "mean": mean,
                "per_query": per_query,
            },
            f,
            indent=1,
            sort_keys=True,
        )
    print(f"{len(per_query)} queries evaluated, {len(names)} measures -> {OUT}")


if __name__ == "__main__":
    main()
