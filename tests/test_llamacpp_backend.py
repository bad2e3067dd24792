"""The llamacpp backend on the embedded model (bfloat16 GGUF): seeded batched decoding that repeats exactly, samples,
the end of turn, the cache, a model directory exported to GGUF, clear errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import EVERYDAY_QUESTIONS as QUESTIONS

from tongsearch_qr import GenerationParams, ModelNotAvailableError, QRReasoner
from tongsearch_qr.backends import make_backend
from tongsearch_qr.prompts import PromptTemplate

PAPER = PromptTemplate.paper()


@pytest.fixture(scope="module")
def llama():
    return make_backend("llamacpp", None, parallel=4)


def test_seeded_runs_repeat_exactly_and_come_back_in_input_order(llama):
    params = GenerationParams(max_new_tokens=24, seed=7)
    seen = []
    together = llama.generate(QUESTIONS[:6], PAPER, params, on_result=lambda i, t: seen.append((i, t)))
    assert all(text.strip() for text in together) and len(set(together)) == 6
    assert sorted(seen) == sorted(enumerate(together))  # each reported once, as soon as it was done
    assert llama.generate(QUESTIONS[:6], PAPER, params) == together
    assert llama.generate(QUESTIONS[:6], PAPER, params.with_(seed=8)) != together
    alone = make_backend("llamacpp", None, parallel=1).generate([QUESTIONS[4]], PAPER, params)
    assert alone[0].strip() and alone == make_backend("llamacpp", None, parallel=1).generate([QUESTIONS[4]], PAPER, params)


def test_samples_of_a_query_are_distinct_seeded_draws(llama):
    params = GenerationParams(max_new_tokens=24, seed=3)
    three = llama.generate([QUESTIONS[0]] * 3, PAPER, params, samples=[0, 1, 2])
    assert len(set(three)) == 3 and llama.generate([QUESTIONS[0]] * 3, PAPER, params, samples=[0, 1, 2]) == three


def test_greedy_stops_at_the_end_of_turn_and_the_reasoner_caches_it(llama, tmp_path):
    greedy = GenerationParams.greedy(64)
    first = llama.generate(["Say only the word yes."], PAPER, greedy)[0]
    assert first.strip() and len(llama.tokenizer(first, add_special_tokens=False)["input_ids"]) < 64
    reasoner = QRReasoner(backend=llama, generation=GenerationParams.greedy(16), cache=tmp_path / "cache.sqlite")
    texts = reasoner.reason(QUESTIONS[:3])
    assert reasoner.stats["generated"] == 3 and reasoner.reason(QUESTIONS[:3]) == texts
    assert reasoner.stats["cached"] == 3 and llama.cache_id.startswith("llamacpp:HuggingFaceTB/SmolLM2-135M-Instruct")


def test_a_fine_tune_directory_is_exported_to_gguf_and_decodes_like_transformers(smol_backend, tmp_path):
    """The dequantized embedded model, as a directory, goes through the GGUF export (tensor names, llama.cpp's
    rotary layout): greedy decoding then follows transformers' float32 tokens."""
    from tongsearch_qr.models import resolve_model

    directory = resolve_model(None).path
    exported = make_backend("llamacpp", directory, parallel=4)
    assert exported.gguf_path.name == "model.gguf" and exported.gguf_path != make_backend("llamacpp", None).gguf_path
    greedy = GenerationParams.greedy(12)
    ours = exported.generate(QUESTIONS[:6], PAPER, greedy)
    reference = smol_backend.generate(QUESTIONS[:6], PAPER, greedy)
    tokens = [smol_backend.tokenizer(t, add_special_tokens=False)["input_ids"][:6] for t in ours + reference]
    same_start = sum(a == b for a, b in zip(tokens[:6], tokens[6:]))
    assert same_start >= 4, list(zip(ours, reference))


def test_bad_models_and_options_are_refused_clearly(tmp_path):
    for parallel in (0, 257):
        with pytest.raises(ValueError, match="parallel must be between 1 and 256"):
            make_backend("llamacpp", None, parallel=parallel)
    with pytest.raises(ModelNotAvailableError, match="runs local models only"):
        make_backend("llamacpp", "Qwen/Qwen2.5-1.5B-Instruct")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "qwen2", "num_hidden_layers": 28}')
    with pytest.raises(ModelNotAvailableError, match="convert_hf_to_gguf.py"):
        make_backend("llamacpp", other)


#: SmolLM2-135M's KV cache per token: 30 layers x 3 KV heads x 64 dims x (key + value) x 2 bytes (float16)
SMOL_KV_BYTES_PER_TOKEN = 30 * 3 * 64 * 2 * 2


def test_runs_keep_the_kv_cache_in_its_budget_and_give_short_prompts_every_slot():
    from tongsearch_qr.backends.llamacpp_backend import plan_runs

    budget = 64 * 1024 * SMOL_KV_BYTES_PER_TOKEN  # 64 sequences of 1,024 tokens
    lengths = [300] * 50 + [8000] + [3000] * 3 + [300] * 50
    runs = plan_runs(lengths, 500, 64, budget, SMOL_KV_BYTES_PER_TOKEN)
    assert [(len(r.rows), r.slots, r.per_sequence) for r in runs] == [(1, 1, 8704), (3, 3, 3584), (100, 64, 1024)]
    assert sorted(row for r in runs for row in r.rows) == list(range(len(lengths)))
    assert all(r.slots * r.per_sequence * SMOL_KV_BYTES_PER_TOKEN <= budget for r in runs)
    assert runs[0].rows == [50] and all(lengths[row] + 500 <= r.per_sequence for r in runs for row in r.rows)
    everything_fits = plan_runs([120, 80, 300], 500, 64, budget, SMOL_KV_BYTES_PER_TOKEN)
    assert [(r.rows, r.slots, r.per_sequence) for r in everything_fits] == [([2, 0, 1], 3, 1024)]  # one context, as before


def test_a_long_prompt_decodes_with_fewer_sequences_within_the_kv_budget(llama, monkeypatch):
    """One context at a time, each within kv_cache_gib: the long prompts two at a time, the short ones all together."""
    import llama_cpp

    assert llama.kv_bytes_per_token == SMOL_KV_BYTES_PER_TOKEN
    from tongsearch_qr.backends.prompting import render

    long_questions = [f"{topic}: " + "why is this so? " * 300 for topic in ("Tides", "Storms")]
    longest = max(len(render(llama.tokenizer, PAPER, q)) for q in long_questions) + 8
    budget = 2 * -(-longest // 256) * 256 * SMOL_KV_BYTES_PER_TOKEN  # two sequences of the long prompts
    small = make_backend("llamacpp", None, parallel=8, kv_cache_gib=budget / (1 << 30))
    contexts = []
    real = llama_cpp.llama_init_from_model

    def init(model, params):
        contexts.append((params.n_ctx, params.n_seq_max))
        return real(model, params)

    monkeypatch.setattr(llama_cpp, "llama_init_from_model", init)
    texts = small.generate([*QUESTIONS[:3], *long_questions, *QUESTIONS[3:6]], PAPER, GenerationParams.greedy(8))
    assert all(text.strip() for text in texts)
    budget_tokens = budget // SMOL_KV_BYTES_PER_TOKEN
    assert [slots for _, slots in contexts] == [2, min(8, budget_tokens // 256)]  # as many short ones as fit, for more
    assert all(n_ctx * SMOL_KV_BYTES_PER_TOKEN <= budget for n_ctx, _ in contexts), contexts
    with pytest.raises(ValueError, match=r"needs 0\.\d+ GiB of KV cache, more than kv_cache_gib=0\.001"):
        make_backend("llamacpp", None, kv_cache_gib=0.001).generate(long_questions, PAPER, GenerationParams.greedy(8))


def test_concurrent_callers_share_the_context_and_get_what_a_batch_call_gets():
    """One sequence at a time (parallel=1), llama.cpp computes each row alone, whoever asks: callers in threads get
    exactly what one batch call of their questions gets."""
    backend = make_backend("llamacpp", None, parallel=1)
    params = GenerationParams(max_new_tokens=16, seed=11)
    batch = backend.generate(QUESTIONS[:4], PAPER, params)
    with ThreadPoolExecutor(4) as pool:
        one_each = list(pool.map(lambda q: backend.generate([q], PAPER, params)[0], QUESTIONS[:4]))
    assert one_each == batch and len(set(batch)) == 4


def test_a_request_arriving_mid_run_joins_the_running_batch(monkeypatch):
    """Thread B asks while A's run decodes (A's first sequence done, three still running): B's rows take the free
    slots of that run, with no second run, and each caller gets its own questions' completions, none lost."""
    from tongsearch_qr.backends import llamacpp_backend

    backend = make_backend("llamacpp", None, parallel=4)
    params = GenerationParams(max_new_tokens=24, seed=11)
    runs = []
    real = llamacpp_backend.DecodeRun.__init__

    def counting(self, *args):
        runs.append(args)
        real(self, *args)

    monkeypatch.setattr(llamacpp_backend.DecodeRun, "__init__", counting)
    results: dict[str, list[str]] = {}
    b = threading.Thread(target=lambda: results.update(b=backend.generate(QUESTIONS[4:8], PAPER, params)))

    def start_b_once(row, text):
        if not b.is_alive() and "b" not in results:
            b.start()

    results["a"] = backend.generate(QUESTIONS[:4], PAPER, params, on_result=start_b_once)
    b.join(timeout=300)
    assert len(runs) == 1, "B joined A's run"
    assert all(text.strip() for text in results["a"] + results["b"]) and len(set(results["a"] + results["b"])) == 8
    # each caller's rows are its own questions': the same rows asked again, alone, repeat in a run of their own
    assert backend.generate(QUESTIONS[4:8], PAPER, params) == backend.generate(QUESTIONS[4:8], PAPER, params)


def test_bad_kv_budgets_are_refused():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="kv_cache_gib must be > 0"):
            make_backend("llamacpp", None, kv_cache_gib=bad)


def test_the_shared_prompt_prefix_is_decoded_once_per_run_and_changes_little(llama, monkeypatch):
    """The chat template and instructions before the question go through llama.cpp once per run, their KV cache
    copied into every other sequence; greedy text stays that of whole-prompt prefills (up to llama.cpp's
    rounding), and seeded runs still repeat."""
    import llama_cpp

    from tongsearch_qr.backends.llamacpp_backend import template_prefix
    from tongsearch_qr.backends.prompting import render

    prefix = template_prefix(llama.tokenizer, PAPER)
    prompts = [render(llama.tokenizer, PAPER, q) for q in QUESTIONS[:6]]
    assert len(prefix) >= 40 and all(p[: len(prefix)] == prefix for p in prompts)
    assert render(llama.tokenizer, PAPER, "a")[: len(prefix)] == prefix
    whole = make_backend("llamacpp", None, parallel=4, share_prefix=False)
    decoded = []
    real_decode = llama_cpp.llama_decode

    def counting_decode(ctx, batch):
        decoded.append(batch.n_tokens)
        return real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", counting_decode)
    greedy = GenerationParams.greedy(1)  # one token each: every decode is a prefill
    llama.generate(QUESTIONS[:6], PAPER, greedy)
    shared_tokens, decoded[:] = sum(decoded), []
    whole.generate(QUESTIONS[:6], PAPER, greedy)
    assert sum(decoded) == sum(map(len, prompts)) and shared_tokens == sum(decoded) - 5 * len(prefix)
    monkeypatch.undo()

    greedy = GenerationParams.greedy(16)
    shared, plain = llama.generate(QUESTIONS[:6], PAPER, greedy), whole.generate(QUESTIONS[:6], PAPER, greedy)
    assert sum(a == b for a, b in zip(shared, plain)) >= 4, list(zip(shared, plain))
    seeded = GenerationParams(max_new_tokens=16, seed=5)
    assert llama.generate(QUESTIONS[:6], PAPER, seeded) == llama.generate(QUESTIONS[:6], PAPER, seeded)


def test_weight_types_are_exported_once_each_and_key_the_cache(llama):
    q8 = make_backend("llamacpp", None, parallel=4, weights_type="q8_0")
    assert q8.weights_type == "Q8_0" and q8.cache_id == llama.cache_id.rsplit(":", 1)[0] + ":q8_0"
    assert q8.gguf_path != llama.gguf_path and make_backend("llamacpp", None, weights_type="Q8_0").gguf_path == q8.gguf_path
    greedy = GenerationParams.greedy(12)
    ours, reference = q8.generate(QUESTIONS[:6], PAPER, greedy), llama.generate(QUESTIONS[:6], PAPER, greedy)
    tokens = [llama.tokenizer(t, add_special_tokens=False)["input_ids"][:4] for t in ours + reference]
    assert sum(a == b for a, b in zip(tokens[:6], tokens[6:])) >= 4, list(zip(ours, reference))
    with pytest.raises(ValueError, match="unknown GGUF weights type 'Q3'"):
        make_backend("llamacpp", None, weights_type="Q3")


def test_the_weight_type_follows_llamacpps_reported_cpu_features_and_the_cpus_bf16():
    from tongsearch_qr.backends.llamacpp_backend import cpu_features, weights_type_for

    class Reporting:
        @staticmethod
        def llama_print_system_info():
            return b"CPU : SSE3 = 1 | AVX2 = 1 | F16C = 1 | AVX512 = 0 | AVX512_BF16 = 0 | OPENMP = 1 | "

    zen3 = cpu_features(Reporting)
    assert zen3 == {"SSE3", "AVX2", "F16C", "OPENMP"} and weights_type_for(zen3, cpu_bf16=False) == "F16"
    assert weights_type_for(zen3 | {"AVX512", "AVX512_BF16"}, cpu_bf16=True) == "BF16"
    assert weights_type_for(zen3 | {"AVX512", "AVX512_BF16"}, cpu_bf16=False) == "F16"  # held below bf16 (ISA limit)
    assert weights_type_for(zen3, cpu_bf16=True) == "F16"  # llama.cpp built for AVX2 on a bf16 CPU
    assert "AVX2" in cpu_features()  # this machine, as the installed llama.cpp reports it


def test_an_amx_build_keeps_its_extra_cpu_buffers_off(monkeypatch):
    """llama.cpp built with AMX puts quantized weights in its AMX buffers, whose kernels segfault in decode
    (ggml-org/llama.cpp#20824; reproduced with Q8_0 on a Sapphire Rapids CPU): model_params must turn them off there,
    and only there (they also hold the REPACK kernels other CPUs gain from)."""
    import llama_cpp

    from tongsearch_qr.backends.llamacpp_backend import AMX_FEATURES, cpu_features, model_params

    assert model_params(llama_cpp, "cpu").use_extra_bufts is not bool(cpu_features(llama_cpp) & AMX_FEATURES)
    info = b"CPU : AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | REPACK = 1 | "
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info)
    assert model_params(llama_cpp, "cpu").use_extra_bufts is False
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info.replace(b"AMX_INT8 = 1", b"AMX_INT8 = 0"))
    assert model_params(llama_cpp, "cpu").use_extra_bufts is True


@pytest.fixture
def loads(monkeypatch):
    """The model parameters llama.cpp is given, per load (the model then loads on the CPU, as this build runs it)."""
    import llama_cpp

    seen = []
    real = llama_cpp.llama_model_load_from_file

    def load(path, params):
        seen.append((params.n_gpu_layers, params.split_mode, params.main_gpu))
        return real(path, llama_cpp.llama_model_default_params())

    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", load)
    return seen


@pytest.mark.parametrize(
    "device, torch_sees_a_gpu, ran_on, layers",
    [
        ("cpu", True, "cpu", 0),
        ("auto", False, "cpu", 0),
        ("auto", True, "cuda", "all"),
        ("cuda", False, "cuda", "all"),
        ("cuda:1", False, "cuda:1", "all on GPU 1"),
    ],
)
def test_a_gpu_build_offloads_layers_only_when_a_gpu_is_asked_for(monkeypatch, loads, device, torch_sees_a_gpu, ran_on, layers):
    """llama.cpp's default n_gpu_layers (-1 in llama-cpp-python 0.3) offloads every layer in a GPU build: the
    backend must give 0 for the CPU, and say where it ran."""
    import llama_cpp
    import torch

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)  # a CUDA build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_sees_a_gpu)
    backend = make_backend("llamacpp", None, parallel=1, device=device)
    every_layer = 0x7FFFFFFF
    expected = {
        0: (0, llama_cpp.LLAMA_SPLIT_MODE_LAYER, 0),
        "all": (every_layer, llama_cpp.LLAMA_SPLIT_MODE_LAYER, 0),
        "all on GPU 1": (every_layer, llama_cpp.LLAMA_SPLIT_MODE_NONE, 1),
    }[layers]
    assert loads == [expected] and backend.device == ran_on


def test_auto_on_the_cpu_runs_llamacpp_on_the_cpu_and_says_so(monkeypatch, loads):
    import llama_cpp

    from tongsearch_qr.backends.auto import engine_report
    from tongsearch_qr.models import embedded_gguf_path

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    shipped = make_backend("auto", embedded_gguf_path(), device="cpu", parallel=1)
    assert loads == [(0, llama_cpp.LLAMA_SPLIT_MODE_LAYER, 0)] and engine_report(shipped)["device"] == "cpu"


def test_a_gpu_asked_of_a_cpu_build_is_refused():
    with pytest.raises(ValueError, match="runs on the CPU only"):
        make_backend("llamacpp", None, device="cuda")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        make_backend("llamacpp", None, device="gpu0")
