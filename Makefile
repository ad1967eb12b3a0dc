# choral — make targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CHORAL := $(VENV)/bin/choral
STAMP  := $(VENV)/.choral-installed

.PHONY: install lint test demo demo-synthetic bench corpus clean stage accented-benchmark generalisation-benchmark

install: $(STAMP)

$(STAMP): pyproject.toml setup.py kernels/_dtw_simd.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	# torch is pinned to the CPU wheel; install it first so nothing pulls a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,bench,onnx,lint,ray]'
	touch $(STAMP)

# ruff over the code, tests and benchmarks; mypy over the package, linked as build/typecheck/choral/ because
# mypy cannot follow pyproject.toml's package-dir mapping (see [tool.mypy] there).
TYPECHECK := build/typecheck/choral
lint: install
	$(VENV)/bin/ruff check cli pipeline kernels tests benchmarks
	mkdir -p $(TYPECHECK)
	for dir in cli pipeline kernels; do ln -sfn ../../../$$dir $(TYPECHECK)/$$dir; done
	$(VENV)/bin/mypy

test: install lint
	$(PY) -m pytest

# The first command of the README: the bundled accented demo audio, decoded by the default
# teacher, through every stage (configs/demo.yaml); prints the WER table, writes runs/demo/eval/report.png.
demo: install
	$(CHORAL) run configs/demo.yaml

# The rescoring stages alone on 2,000 generated decoded cuts (no audio, no teacher; about a minute).
SYNTH ?= runs/demo-synthetic
demo-synthetic: install
	$(CHORAL) synth $(SYNTH) --cuts 2000
	$(CHORAL) group $(SYNTH)/decoded.jsonl.gz $(SYNTH)/grouped.jsonl.gz
	$(CHORAL) graph $(SYNTH)/grouped.jsonl.gz $(SYNTH)/graph.npz
	$(CHORAL) tune $(SYNTH)/grouped.jsonl.gz $(SYNTH)/graph.npz $(SYNTH)/params.yaml
	$(CHORAL) propagate $(SYNTH)/grouped.jsonl.gz $(SYNTH)/graph.npz $(SYNTH)/rescored.jsonl.gz --params $(SYNTH)/params.yaml
	$(CHORAL) eval $(SYNTH)/rescored.jsonl.gz --references $(SYNTH)/references.jsonl.gz --by accent --out $(SYNTH)/eval

# Stages as targets, for a user's own Makefile: `make CONFIG=my.yaml RUN=runs/x stage-propagate`
# (or `make STAGE=propagate stage`) runs every stage up to that one; stages already up to date are
# skipped by choral itself, so these targets are always safe to invoke. The stage names are choral's
# own (`choral run --help` lists them); an unknown name is refused by choral.
CONFIG ?= configs/demo.yaml
RUN    ?=
STAGE  ?= eval
RUN_DIR_OPTION := $(if $(RUN),--run-dir $(RUN),)

stage: install
	$(CHORAL) run $(CONFIG) $(RUN_DIR_OPTION) --until $(STAGE)

stage-%: install
	$(CHORAL) run $(CONFIG) $(RUN_DIR_OPTION) --until $*

# The accented benchmark (needs `make corpus` first): main run + ablations -> benchmarks/accented/RESULTS.md
accented-benchmark: install
	$(PY) benchmarks/accented/run_benchmark.py

# The generalisation protocol (benchmarks/generalisation/README.md): held-out pools synthesised into
# benchmarks/generalisation/data/, one `choral run` per pool, leave-one-condition-out -> its RESULTS.md.
# GENERALISATION_ARGS passes options through, e.g. GENERALISATION_ARGS="--prompts 300 --no-loco".
GENERALISATION_ARGS ?=
generalisation-benchmark: install
	$(PIP) install --quiet -e '.[corpus]'
	$(PY) benchmarks/generalisation/run_protocol.py $(GENERALISATION_ARGS)

bench: install
	$(PY) benchmarks/dtw_speed.py
	$(PY) benchmarks/group_scale.py
	$(PY) benchmarks/propagation_speed.py

# Synthetic accented-English corpus (benchmarks/accented/README.md); `--demo` writes the committed demo set.
corpus: install
	$(PIP) install --quiet -e '.[corpus]'
	$(PY) benchmarks/accented/make_corpus.py

clean:
	rm -rf build *.egg-info kernels/*.so runs
