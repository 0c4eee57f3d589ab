# steerkit developer commands. `make demo` and `make test` are the two commands the README gives.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: install demo lint test test-slow bench docs clean

$(BIN)/steerkit: pyproject.toml setup.py constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build on these machines; torchvision is never installed (it breaks transformers here)
	$(BIN)/pip install -q -c constraints.txt "torch==2.13.0"
	# every version pinned to what the README's figures and CI were produced with (constraints.txt)
	$(BIN)/pip install -q -c constraints.txt -e ".[test,docs,smolvlm]"
	@touch $@

install: $(BIN)/steerkit

demo: install
	$(BIN)/steerkit demo

# ruff and mypy are configured in pyproject.toml; `make test` (and so .ci/run) runs them first
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 -q

test-slow: install
	$(BIN)/python -m pytest -n 2 -q -m slow

bench: install
	$(BIN)/python benchmarks/overhead.py

docs: install
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info site
