"""The openai backend when a request cannot go as it is: prompts fitted to the server's context, a request the
server rejects failing alone, sampling extras a server refuses, and the health of busy and failing servers; all
against small real HTTP servers (fake_openai_server)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from conftest import EVERYDAY_QUESTIONS as QUESTIONS
from fake_openai_server import Sleep, echo_completion

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends.openai_backend import OpenAIBackend
from tongsearch_qr.cli import backend_options, build_parser, main
from tongsearch_qr.errors import RequestRejectedError
from tongsearch_qr.prompts import PromptTemplate

TEMPLATE = PromptTemplate.paper()
LONG = "Why does the ocean taste salty when the rivers that feed it are fresh? " * 120  # ~1,900 tokens


@pytest.fixture(scope="module")
def embedded_tokenizer():
    """The embedded model's directory and tokenizer (what `tongsearch-qr serve` serves by default)."""
    from transformers import AutoTokenizer

    from tongsearch_qr.models import embedded_model_dir

    folder = embedded_model_dir()
    return str(folder), AutoTokenizer.from_pretrained(folder)


def context_limited(tokenizer, context: int):
    """A server rule that rejects, as vLLM does, a prompt that does not fit ``context`` tokens with its max_tokens."""

    def rule(body):
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        if len(ids) + body["max_tokens"] > context:
            message = (
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{len(ids) + body['max_tokens']} tokens. Please reduce the length of the messages."
            )
            return 400, {}, json.dumps({"object": "error", "message": message, "type": "BadRequestError"})
        return None

    return rule


def prompt_tokens(tokenizer, body) -> int:
    return len(
        tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    )


def test_a_question_too_long_for_the_servers_context_is_cut_to_fit(scripted, embedded_tokenizer, caplog):
    folder, tokenizer = embedded_tokenizer
    # listed as tongsearch-qr serve lists it, with vLLM's max_model_len; no tokenizer given: the served model's own
    server = scripted(models=[{"id": f"{folder}@0123abcd", "max_model_len": 512}], rule=context_limited(tokenizer, 512))
    with caplog.at_level(logging.WARNING):
        out = OpenAIBackend(folder, base_url=server.url, backoff=0.01).generate(
            [LONG, "Why do cats purr?"], TEMPLATE, GenerationParams.greedy(100)
        )
    assert all(out) and "truncated" in caplog.text
    long_body = next(body for body in server.requests if "ocean" in body["messages"][-1]["content"])
    assert 412 - 8 < prompt_tokens(tokenizer, long_body) <= 412  # cut to the budget, not far below it
    short_body = next(body for body in server.requests if "cats" in body["messages"][-1]["content"])
    assert short_body["messages"] == TEMPLATE.messages("Why do cats purr?")  # a question that fits goes as it is


def test_max_prompt_tokens_is_the_budget_when_the_server_lists_no_context(scripted, embedded_tokenizer):
    folder, tokenizer = embedded_tokenizer
    server = scripted()
    OpenAIBackend("served-model", base_url=server.url, max_prompt_tokens=300, tokenizer=folder).generate(
        [LONG], TEMPLATE, GenerationParams.greedy(100)
    )
    assert 300 - 8 < prompt_tokens(tokenizer, server.requests[0]) <= 300
    with pytest.raises(ValueError, match="max_prompt_tokens must be >= 1"):
        OpenAIBackend("m", base_url=server.url, max_prompt_tokens=0)


def test_without_a_tokenizer_a_too_long_question_fails_alone(scripted, embedded_tokenizer, caplog, tmp_path):
    _, tokenizer = embedded_tokenizer
    server = scripted(models=[{"id": "hosted-model", "max_model_len": 512}], rule=context_limited(tokenizer, 512))
    with caplog.at_level(logging.WARNING), pytest.raises(RequestRejectedError, match="maximum context length") as info:
        OpenAIBackend("hosted-model", base_url=server.url).generate(
            [LONG, "Why do cats purr?"], TEMPLATE, GenerationParams.greedy(100)
        )
    assert list(info.value.rejected) == [LONG] and "not fitted to the server's context" in caplog.text
    with pytest.raises(ValueError, match="cannot measure prompts"):  # a tokenizer named but not found is an error
        OpenAIBackend("hosted-model", base_url=server.url, tokenizer=tmp_path / "no-model").generate(
            [LONG], TEMPLATE, GenerationParams.greedy(100)
        )


def test_a_request_the_server_rejects_fails_alone_and_the_rest_are_cached(scripted, tmp_path, capsys):
    bad = "Please reason about this forbidden topic?"

    def rule(body):
        if "forbidden" in body["messages"][-1]["content"]:
            return 400, {}, json.dumps({"error": {"message": "this prompt is not allowed", "type": "invalid_request"}})
        time.sleep(0.05)  # the others are still in flight when the bad one is refused
        return None

    server = scripted(rule=rule)
    questions = [bad] + QUESTIONS[:5]
    cache = tmp_path / "c.sqlite"
    reasoner = QRReasoner(
        "m", backend="openai", base_url=server.url, concurrency=2, cache=cache, generation=GenerationParams.greedy(16)
    )
    with pytest.raises(
        RequestRejectedError,
        match=r"rejected the requests of 1 of 6 questions.*forbidden topic.*"
        r"HTTP 400.*not allowed",
    ) as info:
        reasoner.reason(questions)
    assert list(info.value.rejected) == [bad]
    assert len(reasoner.cache) == 5, "every other question finished and is cached"
    # the CLI: exit 2, one line naming the question; the others come from the cache
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"id": str(i), "query": q}) + "\n" for i, q in enumerate(questions)))
    asked = len(server.requests)
    code = main(
        [
            "reason",
            "--input",
            str(queries),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--model",
            "m",
            "--greedy",
            "--max-new-tokens",
            "16",
            "--cache",
            str(cache),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "forbidden topic" in err and "not allowed" in err
    assert len(server.requests) == asked + 1, "only the rejected question was asked again"


def openai_like_strict(body):
    """OpenAI's API: unknown fields are refused."""
    named = [field for field in ("top_k", "repetition_penalty") if field in body]
    if named:
        message = f"Unrecognized request argument supplied: {named[0]}"
        return 400, {}, json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None}})
    return None


def transformers_serve_like_strict(body):
    named = {field for field in ("top_k", "repetition_penalty") if field in body}
    return (422, {}, json.dumps({"detail": f"Unexpected fields in the request: {named}"})) if named else None


@pytest.mark.parametrize("strict_rule", [openai_like_strict, transformers_serve_like_strict])
def test_sampling_extras_are_dropped_for_a_server_that_rejects_them(scripted, caplog, strict_rule):
    strict, lenient = scripted(rule=strict_rule), scripted()
    auto = OpenAIBackend("m", base_url=[strict.url, lenient.url], concurrency=1, backoff=0.01)
    with caplog.at_level(logging.WARNING):
        out = auto.generate(QUESTIONS[:8], TEMPLATE, GenerationParams(seed=1))
    assert all(out) and caplog.text.count("rejects") == 1
    refused = [body for body in strict.requests if "top_k" in body]
    assert len(refused) == 1, "retried without them, and remembered: later requests go without them at once"
    assert len(strict.requests) >= 3 and auto.server_counts[strict.url] == len(strict.requests) - 1
    assert all("top_k" in body and "repetition_penalty" in body for body in lenient.requests), "per server"
    forced = OpenAIBackend("m", base_url=strict.url, sampling_extras=True)
    with pytest.raises(RequestRejectedError, match="top_k"):
        forced.generate(["why?"], TEMPLATE, GenerationParams(seed=1))


def test_the_cli_passes_the_openai_options():
    def options(*flags):
        return backend_options(
            build_parser().parse_args(["reason", "--input", "q", "--output", "o", "--backend", "openai", *flags])
        )

    assert (options()["sampling_extras"], options()["max_prompt_tokens"]) == (None, None)
    assert options("--no-sampling-extras")["sampling_extras"] is False
    assert options("--sampling-extras", "--max-prompt-tokens", "3000")["sampling_extras"] is True
    assert options("--max-prompt-tokens", "3000")["max_prompt_tokens"] == 3000


def test_a_busy_server_whose_requests_time_out_stays_in_the_run(scripted):
    busy = scripted([Sleep(2.0), Sleep(2.0)])  # its first two requests outlast the timeout, then it is quick

    def slow(body):
        time.sleep(0.35)
        return echo_completion(body)

    steady = scripted(rule=slow)
    spread = OpenAIBackend(
        "m", base_url=[busy.url, steady.url], concurrency=1, request_timeout=0.5, backoff=0.01, max_server_failures=2
    )
    out = spread.generate(QUESTIONS[:10], TEMPLATE, GenerationParams.greedy(8))
    assert all(out) and len(busy.requests) >= 3
    assert spread.server_counts[busy.url] >= 1, "two timeouts in a row did not take the busy server out"


def test_a_server_answering_5xx_is_taken_out_of_the_run(scripted, caplog):
    broken = scripted(rule=lambda body: (500, {}, "internal error"))
    steady = scripted()
    spread = OpenAIBackend("m", base_url=[broken.url, steady.url], concurrency=1, backoff=0.01, max_server_failures=2)
    with caplog.at_level(logging.WARNING):
        out = spread.generate(QUESTIONS[:12], TEMPLATE, GenerationParams.greedy(8))
    assert all(out) and len(broken.requests) == 2 and "out of this run" in caplog.text
    assert spread.server_counts == {broken.url: 0, steady.url: 12}
