# Two commands for a fresh machine: `make run` (the main job on sklearn digits) and
# `make test` (the whole suite). Both create/reuse .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed FIRST and pinned (the CPU wheel here); for a CUDA build, install it
# into $(VENV) yourself before `make`, e.g. `$(BIN)/pip install torch==2.13.0 --index-url ...`.
TORCH ?= torch==2.13.0
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: run test lint docs bench fashion-mnist clean

# stamped only once pip works: a first `make` interrupted while the venv was being made
# (Ctrl-C during ensurepip) left a python without pip, and every later `make` failed;
# `python -m venv` over an existing one completes it
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created setup.cfg pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

run: $(VENV)/.installed
	MPLBACKEND=Agg $(BIN)/pyrovae compare --dataset digits \
	    --guides diagonal,full,lowrank,mixture,flow --priors standard \
	    --likelihood bernoulli --latent-dim 10 --epochs 100 --device cpu \
	    --no-progress --out runs/compare

# Fashion-MNIST tests need Debian's dataset-fashion-mnist; install it when we can,
# otherwise those tests skip and say why.
fashion-mnist:
	@if [ ! -e $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	    echo "warning: could not install dataset-fashion-mnist; its tests will skip"; \
	  else echo "warning: not root; install dataset-fashion-mnist to run its tests"; fi; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .

test: $(VENV)/.installed fashion-mnist
	$(BIN)/ruff check .
	MPLBACKEND=Agg $(BIN)/python -m pytest -q

# The documentation (docs/: MyST Markdown + the API reference from docstrings), warnings
# as errors; open docs/_build/html/index.html.
docs: $(VENV)/.installed
	MPLBACKEND=Agg $(BIN)/python -m sphinx -W -q -b html docs docs/_build/html

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/svi_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build
