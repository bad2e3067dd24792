import gzip
import json
import logging
import os
import subprocess
import sys

import pytest

from tongsearch_qr import (
    GenerationParams,
    InputFormatError,
    InvalidQueryError,
    MissingReasoningError,
    ModelNotAvailableError,
    PromptTemplate,
    QRReasoner,
    ReasoningCache,
)
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.prompts import PAPER_USER_TEMPLATE

TASKS = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "leetcode",
    "pony",
    "aops",
    "theoremqa_theorems",
    "theoremqa_questions",
]


def test_default_reasoner_runs_offline_with_the_papers_sampling():
    """A fresh process with the hub unreachable by configuration returns real, non-empty reasoning."""
    code = (
        "from tongsearch_qr import QRReasoner, GenerationParams\n"
        "r = QRReasoner(generation=GenerationParams(max_new_tokens=24, seed=0))\n"
        "out = r.reason([\"Why can't humans drink sea water?\", 'Why do onions make you cry?'])\n"
        "assert len(out) == 2 and all(len(t.split()) >= 3 for t in out), out\n"
        "print('OK', out)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK" in result.stdout


def test_prompt_is_rendered_with_the_models_chat_template(smol_backend):
    from tongsearch_qr.backends.prompting import render

    ids = render(smol_backend.tokenizer, PromptTemplate.paper(), "Why?")
    text = smol_backend.tokenizer.decode(ids)
    user = PAPER_USER_TEMPLATE.replace("{question}", "Why?")
    assert text == f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def test_reason_and_rewrite_with_the_embedded_model(counting, short_greedy):
    r = QRReasoner(backend=counting, generation=short_greedy)
    queries = ["Why is the sky blue?", "How do vaccines train the immune system?", "Why is the sky blue?"]
    reasoning = r.reason(queries)
    assert len(reasoning) == 3 and all(t.strip() for t in reasoning)
    assert reasoning[0] == reasoning[2]
    assert counting.generated == ["Why is the sky blue?", "How do vaccines train the immune system?"]
    concat = r.rewrite(queries[:1], mode="concat")
    assert concat[0].startswith("Why is the sky blue?\n") and len(concat[0]) > len(queries[0]) + 5
    assert r.rewrite(queries[:1], mode="original") == queries[:1]


def test_cache_makes_repeated_queries_free(tmp_path, counting, short_greedy):
    cache = tmp_path / "r.sqlite"
    first = QRReasoner(backend=counting, generation=short_greedy, cache=cache)
    out1 = first.reason(["What causes tides?", "Why do cats purr?"])
    calls = len(counting.calls)
    second = QRReasoner(backend=counting, generation=short_greedy, cache=ReasoningCache(cache))
    assert second.reason(["Why do cats purr?", "What causes tides?"]) == out1[::-1]
    assert len(counting.calls) == calls  # nothing generated
    second.reason(["What causes tides?", "A new question?"])
    assert counting.calls[-1] == ["A new question?"]
    # another configuration does not reuse those entries
    other = QRReasoner(backend=counting, generation=GenerationParams.greedy(13), cache=cache)
    other.reason(["What causes tides?"])
    assert counting.calls[-1] == ["What causes tides?"]


def test_bad_queries_are_rejected_before_generation(counting, short_greedy):
    r = QRReasoner(backend=counting, generation=short_greedy)
    with pytest.raises(InvalidQueryError, match="#1: empty"):
        r.reason(["fine", " ", None])
    with pytest.raises(InvalidQueryError, match="NaN"):
        r.rewrite([float("nan")], mode="concat")
    assert counting.calls == []


@pytest.mark.slow
def test_a_megabyte_query_is_truncated_with_a_warning(smol_backend, caplog):
    r = QRReasoner(backend=smol_backend, generation=GenerationParams.greedy(4))
    huge = "Why does the ocean taste salty when rivers are fresh? " * 19000  # ~1 MB
    assert len(huge) > 1_000_000
    with caplog.at_level(logging.WARNING):
        out = r.reason([huge, "short question?"])
    assert len(out) == 2
    assert any("truncated" in rec.message for rec in caplog.records)


def test_unknown_backend_and_missing_model_path():
    with pytest.raises(ValueError, match="unknown backend 'nope'.*transformers"):
        QRReasoner(backend="nope")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        QRReasoner("./no/such/model")
    with pytest.raises(ModelNotAvailableError, match="not a hub id"):
        QRReasoner("/definitely/missing/dir")


def test_hub_model_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError) as info:
        QRReasoner("TongSearch/TongSearch-QR-7B")
    message = str(info.value)
    assert "TongSearch/TongSearch-QR-7B" in message and "hf download" in message and "QRReasoner()" in message


def test_hub_model_without_network_fails_fast(monkeypatch):
    """No HF_HUB_OFFLINE, but no hub either (an endpoint nothing listens on, so a connected machine downloads
    nothing): the probe turns that into the same error."""
    from tongsearch_qr.hub import hub_unreachable

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    with pytest.raises(ModelNotAvailableError, match="hub could not be reached"):
        QRReasoner("TongSearch/TongSearch-QR-1.5B")
    assert hub_unreachable("https://127.0.0.1:9") is not None


def _bright_examples(shared_data):
    for task in TASKS:
        with gzip.open(shared_data / "bright" / "examples" / f"{task}.jsonl.gz", "rt", encoding="utf-8") as fh:
            yield from (json.loads(line) for line in fh)


def test_published_reasoning_for_every_bright_query(shared_data):
    path = shared_data / "tongsearch-qr" / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json"
    published = json.loads(path.read_text(encoding="utf-8"))
    examples = list(_bright_examples(shared_data))
    assert len(examples) == 1384
    r = QRReasoner.from_file(path)
    queries = [e["query"] for e in examples]
    assert r.reason(queries) == [published[q].strip() for q in queries]
    assert r.rewrite(queries[:2], mode="concat") == [f"{q}\n{published[q].strip()}" for q in queries[:2]]


def test_precomputed_missing_query_is_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"known query": "known reasoning"}), encoding="utf-8")
    r = QRReasoner.from_file(path)
    assert r.reason(["known query"]) == ["known reasoning"]
    with pytest.raises(MissingReasoningError, match="'an unknown query'.*fallback"):
        r.reason(["known query", "an unknown query"])


def test_precomputed_falls_through_to_a_model(tmp_path, counting, short_greedy):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"known query": "known reasoning"}), encoding="utf-8")
    r = QRReasoner(backend=PrecomputedBackend.from_file(path, fallback=counting), generation=short_greedy)
    out = r.reason(["known query", "Why do leaves change colour in autumn?"])
    assert out[0] == "known reasoning" and out[1].strip()
    assert counting.generated == ["Why do leaves change colour in autumn?"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"q": 3}', "not strings"),
    ],
)
def test_malformed_reasoning_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFormatError, match=match):
        QRReasoner.from_file(path)
    with pytest.raises(InputFormatError, match="does not exist"):
        QRReasoner.from_file(tmp_path / "missing.json")


class _ScriptedBackend:
    """Returns a fixed completion per question (``None`` -> empty, as a server's null content)."""

    cache_id = "scripted"

    def __init__(self, answers, before=None):
        self.answers, self.before, self.calls = answers, before, []

    def generate(self, questions, template, params, on_result=None):
        self.calls.append(list(questions))
        if self.before:
            self.before()
        out = [self.answers[q] or "" for q in questions]
        for i, text in enumerate(out):
            if on_result:
                on_result(i, text)
        return out


def test_an_empty_completion_is_a_failure_never_cached(tmp_path, caplog):
    backend = _ScriptedBackend({"a": "reasoning a", "b": None})
    r = QRReasoner(backend=backend, cache=tmp_path / "c.sqlite")
    with caplog.at_level(logging.WARNING):
        assert r.reason(["a", "b"]) == ["reasoning a", ""]
    assert "empty completion" in caplog.text
    assert len(r.cache) == 1 and r.stats["empty"] == 1 and r.stats["generated"] == 2
    backend.answers["b"] = "now it works"
    assert r.reason(["a", "b"]) == ["reasoning a", "now it works"]  # retried, the cached one is not
    assert backend.calls[-1] == ["b"]


def test_a_completion_already_stored_by_another_process_wins(tmp_path):
    path = tmp_path / "c.sqlite"
    early = QRReasoner(backend=_ScriptedBackend({"q": "first"}), cache=path)
    # the late reasoner finds nothing cached, but before it finishes, the early one writes its completion
    late = QRReasoner(backend=_ScriptedBackend({"q": "second"}, before=lambda: early.reason(["q"])), cache=path)
    assert late.reason(["q"]) == ["first"]
    assert QRReasoner(backend=_ScriptedBackend({"q": "third"}), cache=path).reason(["q"]) == ["first"]


def test_seeded_sampling_depends_only_on_seed_query_prompt_and_params():
    import torch

    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    questions = [
        "Why is the sea salty?",
        "How do magnets work?",
        "Why do we dream?",
        "What is a black hole?",
        "Why do onions make people cry?",
    ]
    params = GenerationParams(max_new_tokens=10, seed=7)
    template = PromptTemplate.paper()
    one_batch = TransformersBackend(dtype="float32", batch_size=8)
    state = torch.get_rng_state()
    together = one_batch.generate(questions, template, params)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    pairs = TransformersBackend.from_loaded(one_batch.model, one_batch.tokenizer, "same", batch_size=2)
    reordered = pairs.generate(questions[::-1], template, params)[::-1]
    alone = [one_batch.generate([q], template, params)[0] for q in questions[:2]]
    assert reordered == together and alone == together[:2]
    other_seed = one_batch.generate(questions, template, params.with_(seed=8))
    assert other_seed != together  # the seed matters


def test_a_cut_question_keeps_the_template_and_generation_prompt_whole(smol_backend):
    from tongsearch_qr.backends.prompting import fit_prompt, render

    tokenizer, template = smol_backend.tokenizer, PromptTemplate.paper()
    without = tokenizer.apply_chat_template(template.messages("q"), add_generation_prompt=False, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    tail = render(tokenizer, template, "q")[len(without) - 2 :]  # end of the user turn and the assistant header
    for huge in ("Why does the ocean taste salty when rivers are fresh? " * 19000, "海水为什么是咸的？🌊" * 90000):
        assert len(huge.encode()) > 1_000_000
        ids = fit_prompt(tokenizer, template, huge, context_length=2048, max_new_tokens=500)
        assert len(ids) <= 2048 - 500 and ids[-len(tail) :] == tail
