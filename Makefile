# choral — make targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CHORAL := $(VENV)/bin/choral
STAMP  := $(VENV)/.choral-installed

.PHONY: install test demo bench corpus clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py kernels/_dtw_simd.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	# torch is pinned to the CPU wheel; install it first so nothing pulls a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,bench]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

DEMO ?= runs/demo

# Until the teacher and the bundled demo audio exist, the demo runs the rescoring
# stages on a synthetic decoded manifest (choral synth) and prints the WER table.
demo: install
	$(CHORAL) synth $(DEMO) --cuts 2000
	$(CHORAL) group $(DEMO)/decoded.jsonl.gz $(DEMO)/grouped.jsonl.gz
	$(CHORAL) graph $(DEMO)/grouped.jsonl.gz $(DEMO)/graph.npz
	$(CHORAL) tune $(DEMO)/grouped.jsonl.gz $(DEMO)/graph.npz $(DEMO)/params.yaml
	$(CHORAL) propagate $(DEMO)/grouped.jsonl.gz $(DEMO)/graph.npz $(DEMO)/rescored.jsonl.gz --params $(DEMO)/params.yaml
	$(CHORAL) export $(DEMO)/rescored.jsonl.gz $(DEMO)/export --format lhotse
	$(CHORAL) eval $(DEMO)/rescored.jsonl.gz --references $(DEMO)/references.jsonl.gz --by accent --out $(DEMO)/eval

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
