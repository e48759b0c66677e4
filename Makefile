# The two commands of the README:
#   make demo   set up (fetch what is needed) and run the main job
#   make test   the test suite, exactly what CI runs (.ci/run)
#
# Builds go to a directory outside the clone so that CI and repeated runs reuse them.
CACHE ?= $(HOME)/.cache/optical
export OPTICAL_CACHE := $(CACHE)
export CARGO_TARGET_DIR ?= $(CACHE)/target
export CARGO_TERM_COLOR ?= never
# Cargo features every test build uses (the GPU backends are always compiled and tested).
FEATURES ?=
CARGO_FEATURES := $(if $(FEATURES),--features $(FEATURES),)
BIN := $(CARGO_TARGET_DIR)/release/optical

.PHONY: demo test setup build lint unit peers fixtures bench

## Set up and run the main job.
demo: setup build
	bash scripts/demo.sh "$(BIN)"

## The test suite (CI runs exactly this).
test: setup lint unit

setup:
	bash scripts/setup.sh

build:
	cargo build --release $(CARGO_FEATURES)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets $(CARGO_FEATURES) -- -D warnings

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

bench:
	cargo bench $(CARGO_FEATURES)
