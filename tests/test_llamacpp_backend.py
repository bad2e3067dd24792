"""The llamacpp backend on the embedded model (bfloat16 GGUF): seeded batched decoding that repeats exactly, samples,
the end of turn, the cache, a model directory exported to GGUF, clear errors."""

from __future__ import annotations

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
