# choral — make targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CHORAL := $(VENV)/bin/choral
STAMP  := $(VENV)/.choral-installed

.PHONY: install test demo bench clean

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

demo: install
	@echo "choral: the end-to-end demo (decode -> group -> graph -> propagate -> eval) is not built yet;"
	@echo "        today you can try the implemented stages on a synthetic manifest:"
	$(CHORAL) synth runs/demo --cuts 2000
	$(CHORAL) group runs/demo/decoded.jsonl.gz runs/demo/grouped.jsonl.gz
	$(CHORAL) graph runs/demo/grouped.jsonl.gz runs/demo/graph.npz

bench: install
	$(PY) benchmarks/dtw_speed.py
	$(PY) benchmarks/group_scale.py

clean:
	rm -rf build *.egg-info kernels/*.so runs
