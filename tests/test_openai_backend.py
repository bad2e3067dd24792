"""The openai backend: request bodies, retries and errors against small real HTTP servers, and the
embedded model served by a real `transformers serve` on 127.0.0.1 (including a killed server)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from conftest import EVERYDAY_QUESTIONS as QUESTIONS
from conftest import free_port
from fake_openai_server import DROP

from tongsearch_qr import BackendUnavailableError, GenerationParams, QRReasoner, ReasoningCache
from tongsearch_qr.backends.base import row_seed
from tongsearch_qr.backends.openai_backend import OpenAIBackend
from tongsearch_qr.prompts import PromptTemplate


def backend(url, **options) -> OpenAIBackend:  # url: one or a list
    return OpenAIBackend("served-model", base_url=url, backoff=0.01, **options)


def test_request_body_carries_the_papers_sampling_and_greedy_as_temperature_zero():
    b = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1")
    params = GenerationParams(seed=3)
    body = b.request_body("why?", PromptTemplate.paper(), params)
    assert body["messages"] == [
        {"role": "system", "content": ""},
        {"role": "user", "content": PromptTemplate.paper().messages("why?")[1]["content"]},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"], body["repetition_penalty"]) == (
        500,
        0.7,
        0.8,
        20,
        1.05,
    )
    # the seed of each (seed, sample index) is derived as every backend derives a row's seed
    assert body["seed"] == row_seed(3, body["messages"], params.key(), 0)
    assert (
        b.request_body("why?", PromptTemplate.paper(), params, sample=1)["seed"]
        == row_seed(3, body["messages"], params.key(), 1)
        != body["seed"]
    )
    greedy = b.request_body("why?", PromptTemplate.paper(), GenerationParams.greedy(32))
    assert greedy["temperature"] == 0.0 and "top_p" not in greedy and greedy["max_tokens"] == 32
    strict = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", sampling_extras=False)
    body = strict.request_body("why?", PromptTemplate.paper(), GenerationParams())
    assert "top_k" not in body and "repetition_penalty" not in body


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="served model's name"):
        OpenAIBackend(None, base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("m", base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", concurrency=0)


def test_unreachable_server_fails_fast_and_clearly():
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"no OpenAI-compatible server answers at http://127\.0\.0\.1"):
        backend(f"http://127.0.0.1:{free_port()}/v1").generate(["q"], PromptTemplate.paper(), GenerationParams())
    assert time.monotonic() - start < 15


def test_429_and_5xx_are_retried_and_results_come_back_in_input_order(scripted):
    server = scripted([(429, {"Retry-After": "0"}, '{"error": "slow down"}'), (503, {}, "busy"), (500, {}, "oops")])
    questions = [f"question number {i}" for i in range(7)]
    seen: list[int] = []
    out = backend(server.url, concurrency=3).generate(
        questions, PromptTemplate.paper(), GenerationParams(), lambda i, text: seen.append(i)
    )
    assert out == [f"re: {PromptTemplate.paper().messages(q)[1]['content'][-20:]}" for q in questions]
    assert sorted(seen) == list(range(7))
    assert len(server.requests) == 7 + 3  # three answers were retried


def test_each_seed_and_sample_index_draws_with_a_seed_of_its_own(scripted, tmp_path):
    # like vLLM, the fake server draws choice j of a seeded request with seed + j: one seed sent with n would make
    # seed 1's sample 1 seed 2's sample 0
    server = scripted()
    reasoner = QRReasoner(
        "m", backend="openai", base_url=server.url, samples=2, generation=GenerationParams(seed=1), cache=tmp_path / "c.sqlite"
    )
    by_seed = {
        seed: reasoner.with_(generation=reasoner.generation.with_(seed=seed)).reason_samples(["why?", "how?"]) for seed in (1, 2)
    }  # as eval --seeds 1,2 --samples 2 does
    for i in range(2):
        assert len(set(by_seed[1][i] + by_seed[2][i])) == 4, "four distinct draws"
    assert [r["n"] for r in server.requests] == [1] * 8 and len({r["seed"] for r in server.requests}) == 8
    # a later run that asks for a third sample gets the first two from the cache and draws only the third
    more = QRReasoner(
        "m", backend="openai", base_url=server.url, samples=3, generation=GenerationParams(seed=1), cache=tmp_path / "c.sqlite"
    ).reason_samples(["why?"])
    assert more[0][:2] == by_seed[1][0] and len(server.requests) == 9 and more[0][2] not in by_seed[1][0]
    # unseeded, a question's samples are one request with n
    backend(server.url).generate(["q", "q"], PromptTemplate.paper(), GenerationParams(), samples=[0, 1])
    assert server.requests[-1]["n"] == 2 and "seed" not in server.requests[-1]
    short = scripted([(200, {}, json.dumps({"choices": [{"index": 0, "message": {"content": "one"}}]}))])
    with pytest.raises(BackendUnavailableError, match="must support the 'n' parameter"):
        backend(short.url).generate(["q", "q"], PromptTemplate.paper(), GenerationParams(), samples=[0, 1])


def test_the_cache_keys_by_the_id_the_server_lists_so_new_weights_get_new_keys(scripted, tmp_path):
    server = scripted(models=[{"id": "/runs/qr@1111", "object": "model"}])  # as tongsearch-qr serve lists a model
    cache, greedy = tmp_path / "c.sqlite", GenerationParams.greedy(16)
    first = QRReasoner("/runs/qr", backend="openai", base_url=server.url, generation=greedy, cache=cache)
    assert first.backend.cache_id == "openai:/runs/qr@1111"
    first.reason(["why?"])
    assert server.requests[-1]["model"] == "/runs/qr@1111"
    server.models = [{"id": "/runs/qr@2222", "object": "model"}]  # retrained into the same folder, served again
    with pytest.raises(BackendUnavailableError, match="now serve '/runs/qr@2222', not '/runs/qr@1111'"):
        first.reason(["how?"])  # this backend's keys belong to the old weights
    second = QRReasoner("/runs/qr", backend="openai", base_url=server.url, generation=greedy, cache=cache)
    assert second.backend.cache_id == "openai:/runs/qr@2222"
    second.reason(["why?"])  # not the old weights' cached completion
    assert len(server.requests) == 2 and server.requests[-1]["model"] == "/runs/qr@2222"
    exact = QRReasoner("/runs/qr@2222", backend="openai", base_url=server.url, generation=greedy, cache=cache)
    assert exact.backend.cache_id == "openai:/runs/qr@2222"
    # a server that does not list the model: keyed by the name given
    assert backend(scripted().url).cache_id == "openai:served-model"
    # replicas must serve the same weights
    other = scripted(models=[{"id": "/runs/qr@3333"}])
    with pytest.raises(BackendUnavailableError, match="serve different models"):
        _ = OpenAIBackend("/runs/qr", base_url=[server.url, other.url]).cache_id
    with pytest.raises(BackendUnavailableError, match="no OpenAI-compatible server answers"):
        _ = backend(f"http://127.0.0.1:{free_port()}/v1").cache_id


def test_the_cache_identity_is_the_served_model_not_the_url(scripted):
    here, there = scripted(models=[{"id": "qr-7b"}]), scripted(models=[{"id": "qr-7b"}, {"id": "qr-1.5b"}])
    assert (
        OpenAIBackend("qr-7b", base_url=here.url).cache_id
        == OpenAIBackend("qr-7b", base_url=there.url).cache_id
        != OpenAIBackend("qr-1.5b", base_url=there.url).cache_id
    )


def test_retries_run_out_with_a_clear_error_after_finished_items_were_reported(scripted):
    server = scripted([(200, {}, json.dumps({"choices": [{"message": {"content": "first"}}]}))] + [(503, {}, "down")] * 20)
    seen: dict[int, str] = {}
    with pytest.raises(BackendUnavailableError, match=r"failed 3 times in a row \(last: http:\S+: HTTP 503"):
        backend(server.url, concurrency=1, max_retries=2).generate(
            ["a", "b", "c"], PromptTemplate.paper(), GenerationParams(), lambda i, text: seen.__setitem__(i, text)
        )
    assert seen == {0: "first"}


def test_client_errors_are_not_retried(scripted):
    server = scripted([(400, {}, '{"error": "model not found"}')])
    with pytest.raises(BackendUnavailableError, match="HTTP 400.*model not found"):
        backend(server.url).generate(["a"], PromptTemplate.paper(), GenerationParams())
    assert len(server.requests) == 1


def test_a_reply_that_is_not_a_chat_completion_is_an_error(scripted):
    server = scripted([(200, {}, '{"unexpected": true}')])
    with pytest.raises(BackendUnavailableError, match="not a chat completion"):
        backend(server.url).generate(["a"], PromptTemplate.paper(), GenerationParams())


def test_works_when_called_inside_a_running_event_loop(scripted):
    import asyncio

    server = scripted([])

    async def main():
        return backend(server.url).generate(["inside a loop"], PromptTemplate.paper(), GenerationParams())

    assert asyncio.run(main()) == ["re: " + PromptTemplate.paper().messages("inside a loop")[1]["content"][-20:]]


def test_requests_spread_over_several_servers_and_a_dead_one_is_skipped(scripted, caplog):
    import logging

    first, second = scripted([]), scripted([])
    spread = backend([first.url, second.url], concurrency=2)
    questions = [f"q{i}" for i in range(12)]
    out = spread.generate(questions, PromptTemplate.paper(), GenerationParams())
    assert len(out) == 12 and sum(spread.server_counts.values()) == 12
    assert spread.server_counts[first.url] >= 3 and spread.server_counts[second.url] >= 3  # both take work
    assert backend(f"{first.url},{second.url}").base_urls == [first.url, second.url]  # the CLI's comma form

    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with caplog.at_level(logging.WARNING):
        survivor = backend([nowhere, second.url])
        assert len(survivor.generate(questions, PromptTemplate.paper(), GenerationParams())) == 12
    assert survivor.server_counts == {nowhere: 0, second.url: 12} and "does not answer" in caplog.text


def test_a_dropped_connection_sends_the_question_to_another_server_without_using_a_retry(scripted):
    dropping, steady = scripted([DROP]), scripted([])
    spread = backend([dropping.url, steady.url], concurrency=1, max_retries=0)
    assert spread.generate(["why?"], PromptTemplate.paper(), GenerationParams())[0].startswith("re: ")
    assert len(dropping.requests) == 1 and spread.server_counts == {dropping.url: 0, steady.url: 1}
    alone = backend(scripted([DROP]).url, max_retries=0)  # no other server: the retry budget decides
    with pytest.raises(BackendUnavailableError, match="failed 1 times in a row"):
        alone.generate(["why?"], PromptTemplate.paper(), GenerationParams())


def test_a_server_that_dies_mid_run_hands_its_questions_to_the_others(scripted):
    first, second = scripted([]), scripted([])
    spread = backend([first.url, second.url], concurrency=1, max_retries=0)
    seen: dict[int, list[str]] = {}

    def on_result(i, text):
        seen.setdefault(i, []).append(text)
        if len(seen) == 4:
            first.close()  # the first server goes away with work left

    questions = [f"question {i}" for i in range(16)]
    out = spread.generate(questions, PromptTemplate.paper(), GenerationParams(), on_result)
    assert all(out) and sorted(seen) == list(range(16)) and all(len(v) == 1 for v in seen.values())
    assert spread.server_counts[second.url] >= 8 and sum(spread.server_counts.values()) == 16


# --- a real OpenAI-compatible server (transformers serve) with the embedded model ---------------------------


@pytest.fixture(scope="module")
def served_model_dir(smol_backend):
    return smol_backend.source.path  # converted once by the session fixture


def start_transformers_server(model_dir, port, log):
    from tongsearch_qr.serving import LocalServer

    return LocalServer("transformers", model_dir, port=port, log=log, startup_timeout=180).start()


def served_posts(log) -> int:
    return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', log.read_text(errors="replace")))


@pytest.mark.slow
def test_reasoner_through_a_real_local_server_keeps_input_order(served_model_dir, tmp_path):
    server = start_transformers_server(served_model_dir, free_port(), tmp_path / "server.log")
    try:
        params = GenerationParams.greedy(16)

        def reasoner(concurrency):
            return QRReasoner(
                server.model_name,
                backend="openai",
                base_url=server.base_url,
                concurrency=concurrency,
                sampling_extras=False,
                generation=params,
            )

        parallel = reasoner(4).reason(QUESTIONS[:6])
        one_by_one = reasoner(1).reason(QUESTIONS[:6])
    finally:
        server.stop()
    assert parallel == one_by_one
    assert all(text.strip() for text in parallel) and len(set(parallel)) == 6


@pytest.mark.slow
def test_server_killed_mid_run_then_restarted_loses_and_recomputes_nothing(served_model_dir, tmp_path, counting_wrapper):
    port = free_port()
    cache = ReasoningCache(tmp_path / "cache.sqlite")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    def reasoner():
        return QRReasoner(
            served_model_dir,
            backend="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            concurrency=2,
            max_retries=2,
            backoff=0.2,
            sampling_extras=False,
            cache=cache,
            generation=GenerationParams(max_new_tokens=24, seed=7),
        )

    server = start_transformers_server(served_model_dir, port, first_log)
    errors: list[BaseException] = []

    def run():
        try:
            reasoner().reason(QUESTIONS)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while len(cache) < 4 and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.1)
        assert len(cache) >= 4, "the server finished too few items before the kill"
        server.kill()
    finally:
        worker.join(timeout=120)
        server.stop()
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BackendUnavailableError), errors
    assert "kept in the reasoning cache" in str(errors[0])

    finished = len(cache)
    assert 4 <= finished < len(QUESTIONS), "kill the server while work is left"
    assert finished == served_posts(first_log), "every completion the server sent is in the cache: 0 lost"
    conn = cache._connection()
    before = dict(conn.execute("SELECT key, completion || '|' || created FROM reasoning").fetchall())

    server = start_transformers_server(served_model_dir, port, second_log)
    try:
        resumed = reasoner()
        counting = counting_wrapper(resumed.backend)
        resumed.backend = counting
        out = resumed.reason(QUESTIONS)
    finally:
        server.stop()
    after = dict(conn.execute("SELECT key, completion || '|' || created FROM reasoning").fetchall())
    assert len(out) == len(QUESTIONS) and all(text.strip() for text in out)
    assert len(counting.generated) == len(QUESTIONS) - finished, "0 recomputed"
    assert served_posts(second_log) == len(QUESTIONS) - finished
    assert all(after[key] == value for key, value in before.items()), "earlier rows untouched"
    assert len(after) == len(QUESTIONS)


@pytest.mark.slow
def test_two_real_servers_one_killed_mid_run_lose_and_duplicate_nothing(served_model_dir, tmp_path):
    ports = [free_port()]
    while len(ports) < 2:
        ports += [p for p in [free_port()] if p not in ports]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    servers = [start_transformers_server(served_model_dir, port, log) for port, log in zip(ports, logs)]
    cache = ReasoningCache(tmp_path / "cache.sqlite")
    reasoner = QRReasoner(
        served_model_dir,
        backend="openai",
        base_url=[s.base_url for s in servers],
        concurrency=1,
        max_retries=2,
        backoff=0.2,
        sampling_extras=False,
        cache=cache,
        generation=GenerationParams(max_new_tokens=24, seed=7),
    )
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.update(out=reasoner.reason(QUESTIONS)))
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while len(cache) < 3 and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.1)
        servers[0].kill()
        worker.join(timeout=300)
    finally:
        for server in servers:
            server.stop()
    assert not worker.is_alive() and "out" in outcome, "the run must finish on the surviving server"
    out = outcome["out"]
    assert len(out) == len(QUESTIONS) and all(text.strip() for text in out)
    assert len(cache) == len(QUESTIONS), "nothing lost, nothing stored twice"
    counts = reasoner.backend.server_counts
    assert sum(counts.values()) == len(QUESTIONS) and counts[servers[1].base_url] > counts[servers[0].base_url]
    assert [served_posts(log) for log in logs] == [counts[s.base_url] for s in servers]
