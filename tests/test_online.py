"""One reasoner serving many callers at once: concurrent threads and asyncio tasks get what one batch call gets,
a query asked twice at once is generated once, and a reasoning that fails or is late falls back to the question
(on_error="question") or raises, against small real HTTP servers (fake_openai_server) for the failures."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import EVERYDAY_QUESTIONS as QUESTIONS
from conftest import free_port
from fake_openai_server import ScriptedServer, Sleep

from tongsearch_qr import BackendUnavailableError, GenerationParams, QRReasoner, ReasoningTimeoutError
from tongsearch_qr.query_terms import term_query

GREEDY = GenerationParams.greedy(8)


@pytest.fixture(scope="module")
def float32_backend():
    from tongsearch_qr.backends import make_backend

    return make_backend("transformers", None, dtype="float32", batch_size=4)


def test_threads_and_tasks_get_exactly_what_one_batch_call_gets(float32_backend):
    """transformers in float32, seeded: a row's draw depends on nothing beside it, so callers that share the engine
    (one query each, from threads and from asyncio tasks) get the batch call's texts."""
    params = GenerationParams(max_new_tokens=10, seed=5)
    questions = QUESTIONS[:4]
    batch = QRReasoner(backend=float32_backend, generation=params).reason(questions)
    shared = QRReasoner(backend=float32_backend, generation=params)
    with ThreadPoolExecutor(len(questions)) as pool:
        threaded = list(pool.map(lambda q: shared.reason([q])[0], questions))

    async def tasks():
        return await asyncio.gather(*(shared.areason([q]) for q in questions))

    assert threaded == batch and [texts[0] for texts in asyncio.run(tasks())] == batch
    assert len(set(batch)) == len(questions) and shared.stats["generated"] == 2 * len(questions)


class GatedBackend:
    """A backend whose generation waits until ``release`` is set, recording what it is asked."""

    cache_id = "gated"

    def __init__(self):
        self.release = threading.Event()
        self.asked: list[str] = []

    def generate(self, questions, template, params, on_result=None):
        self.asked.extend(questions)
        self.release.wait(timeout=30)
        return [f"reasoning about {q}" for q in questions]


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_query_two_callers_ask_at_once_is_generated_once_and_cached_once(tmp_path):
    backend = GatedBackend()
    reasoner = QRReasoner(backend=backend, generation=GREEDY, cache=tmp_path / "c.sqlite")
    copy = reasoner.with_(mode="concat")  # same prompt and decoding: shares the reasoning in flight
    results: dict[str, list[str]] = {}
    first = threading.Thread(target=lambda: results.update(first=reasoner.reason(["why?"])))
    first.start()
    wait_for(lambda: backend.asked == ["why?"])
    second = threading.Thread(target=lambda: results.update(second=copy.reason(["why?", "how?"])))
    second.start()
    wait_for(lambda: copy.stats["joined"] == 1)
    backend.release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert results == {"first": ["reasoning about why?"], "second": ["reasoning about why?", "reasoning about how?"]}
    assert sorted(backend.asked) == ["how?", "why?"] and len(reasoner.cache) == 2
    assert (reasoner.stats["generated"], copy.stats["generated"], copy.stats["joined"]) == (1, 1, 1)


def test_a_dead_server_sends_the_question_alone_and_warns_once(caplog):
    reasoner = QRReasoner(
        "m", backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", on_error="question", generation=GREEDY
    )
    with caplog.at_level(logging.WARNING):
        rewrites = reasoner.rewrites(QUESTIONS[:2], mode="concat")
        texts = reasoner.rewrite(QUESTIONS[2:3])
        terms = reasoner.rewrite(QUESTIONS[3:4], as_terms=True)
    assert [r.text for r in rewrites] == QUESTIONS[:2] and texts == QUESTIONS[2:3]
    assert all(r.reasoning is None and r.fallback == "unavailable" for r in rewrites)
    assert rewrites[0].terms == term_query(QUESTIONS[0], None, "original", terms=reasoner.terms)
    assert terms == [term_query(QUESTIONS[3], None, "original", terms=reasoner.terms)]
    assert reasoner.reason(QUESTIONS[:1]) == QUESTIONS[:1]
    assert reasoner.stats["fallback_unavailable"] == 5 and caplog.text.count("reasoning failed") == 1
    with pytest.raises(BackendUnavailableError, match="no OpenAI-compatible server answers"):
        reasoner.reason(QUESTIONS[:1], on_error="raise")


def test_a_late_reasoning_falls_back_in_time_and_is_cached_for_the_next_call(scripted, tmp_path):
    server = scripted([Sleep(1.5), Sleep(1.5)])
    reasoner = QRReasoner(
        "m",
        backend="openai",
        base_url=server.url,
        timeout=0.3,
        on_error="question",
        generation=GREEDY,
        cache=tmp_path / "c.sqlite",
    )
    [late] = reasoner.rewrites(["why?"])
    assert (late.text, late.fallback) == ("why?", "timeout") and reasoner.stats["fallback_timeout"] == 1
    [late_async] = asyncio.run(reasoner.arewrites(["how?"]))
    assert (late_async.text, late_async.fallback) == ("how?", "timeout")
    wait_for(lambda: len(reasoner.cache) == 2)  # the late completions still arrive and are cached
    now = reasoner.rewrites(["why?", "how?"])
    assert all(r.fallback is None and r.reasoning.startswith("re: ") for r in now)
    assert len(server.requests) == 2 and reasoner.stats["cached"] == 2
    server.script.append(Sleep(1.5))
    with pytest.raises(ReasoningTimeoutError, match="1 of 1 queries did not finish within 0.2 s"):
        reasoner.reason(["and then?"], on_error="raise", timeout=0.2)


def test_a_rejected_request_falls_back_alone(scripted):
    def rule(body):
        if "forbidden" in body["messages"][-1]["content"]:
            return 400, {}, json.dumps({"error": {"message": "this prompt is not allowed"}})
        return None

    reasoner = QRReasoner("m", backend="openai", base_url=scripted(rule=rule).url, on_error="question", generation=GREEDY)
    bad, good = reasoner.rewrites(["a forbidden topic?", "why?"])
    assert (bad.text, bad.fallback) == ("a forbidden topic?", "rejected") and good.fallback is None
    assert reasoner.stats["fallback_rejected"] == 1 and reasoner.stats["generated"] == 1


def test_a_server_that_comes_back_is_used_again_without_a_restart(scripted):
    port = free_port()
    server = ScriptedServer(port=port)
    reasoner = QRReasoner("m", backend="openai", base_url=server.url, on_error="question", generation=GREEDY)
    try:
        assert reasoner.rewrites(["one?"])[0].fallback is None
        server.close()
        assert reasoner.rewrites(["two?"])[0].fallback == "unavailable"
        server = ScriptedServer(port=port)  # back at the same URL
        assert reasoner.rewrites(["three?"])[0].fallback is None
    finally:
        server.close()


def test_a_replica_taken_out_of_a_call_takes_requests_again_once_it_answers(scripted, caplog):
    broken = {"yes": True}
    flaky = scripted(rule=lambda body: (500, {}, "internal error") if broken["yes"] else None)
    steady = scripted()
    reasoner = QRReasoner(
        "m",
        backend="openai",
        base_url=[flaky.url, steady.url],
        concurrency=1,
        backoff=0.01,
        max_server_failures=2,
        generation=GREEDY,
    )
    reasoner.reason([f"first {i}?" for i in range(6)])
    assert reasoner.backend.server_counts == {flaky.url: 0, steady.url: 6}
    broken["yes"] = False
    with caplog.at_level(logging.WARNING):
        reasoner.reason([f"second {i}?" for i in range(6)])
    assert reasoner.backend.server_counts[flaky.url] >= 1 and "answers again" in caplog.text


def test_budget_and_fallback_settings_are_checked(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q": "r"}))
    with pytest.raises(ValueError, match="on_error must be one of 'raise', 'question'"):
        QRReasoner.from_file(path, on_error="ignore")
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        QRReasoner.from_file(path, timeout=0)
    reasoner = QRReasoner.from_file(path)
    with pytest.raises(ValueError, match="on_error"):
        reasoner.reason(["q"], on_error="skip")
    assert reasoner.on_error == "raise" and reasoner.with_(on_error="question", timeout=2).on_error == "question"
    # a query missing from the file: raised by default, the question with on_error="question"
    assert reasoner.rewrite(["q"], mode="concat") == ["q\nr"]
    assert reasoner.rewrite(["other"], mode="concat", on_error="question") == ["other"]
    assert reasoner.stats["fallback_error"] == 1
