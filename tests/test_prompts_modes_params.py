import math

import pytest

from tongsearch_qr import GenerationParams, PromptTemplate, RewriteMode, get_mode
from tongsearch_qr.modes import mode_names
from tongsearch_qr.prompts import PAPER_USER_TEMPLATE, THINK_SYSTEM_PROMPT, parse_think_answer

ISSUE_PROMPT = (
    "Instructions:\n1. Identify the essential problem.\n2. Think step by step to reason and describe what "
    "information could be relevant and helpful to address the questions in detail.\n3. Draft an answer with as "
    "many thoughts as you have.\nQuery: {question}\n\n"
)


def test_paper_prompt_byte_for_byte():
    assert PAPER_USER_TEMPLATE == ISSUE_PROMPT
    messages = PromptTemplate.paper().messages("Why is the sea salty?")
    assert messages == [
        {"role": "system", "content": ""},
        {"role": "user", "content": ISSUE_PROMPT.replace("{question}", "Why is the sea salty?")},
    ]


def test_question_with_braces_is_inserted_verbatim():
    text = "What does {x} or {question} mean in str.format?"
    assert PromptTemplate.paper().messages(text)[-1]["content"].endswith(f"Query: {text}\n\n")


def test_think_mode_uses_r1_system_prompt_and_extracts_answer():
    template = PromptTemplate.paper(think=True)
    assert template.messages("q")[0] == {"role": "system", "content": THINK_SYSTEM_PROMPT}
    assert template.extract("<think> salt pulls water </think>\n<answer> osmosis, kidneys </answer>") == "osmosis, kidneys"


@pytest.mark.parametrize(
    "completion",
    [
        "no tags at all, just reasoning",
        "<think> started thinking but ran out of tokens",
        "<answer> answer without think </answer>",
        "",
    ],
)
def test_think_mode_without_tags_uses_the_whole_completion_like_the_paper(completion):
    assert parse_think_answer(completion) is None
    assert PromptTemplate.paper(think=True).extract(completion) == completion.strip()


def test_keywords_template_keeps_each_term_once_in_order():
    template = PromptTemplate(user="Keywords for: {question}", system=None, keywords=True)
    completion = " teaching, Logic, teaching,\nlogic , set theory\n\n, Teaching, proofs "
    assert template.extract(completion) == "teaching, Logic, set theory, proofs"
    assert PromptTemplate(user="Keywords for: {question}", system=None).extract(completion) == completion.strip()
    assert template.key()["keywords"] is True and "keywords" not in PromptTemplate().key()
    assert PromptTemplate(**template.key()) == template  # saved settings load back


def test_template_needs_placeholder():
    with pytest.raises(ValueError, match="placeholder"):
        PromptTemplate(user="no placeholder")


def test_system_none_leaves_system_turn_to_chat_template():
    assert PromptTemplate(system=None).messages("q") == [{"role": "user", "content": ISSUE_PROMPT.replace("{question}", "q")}]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("replace", "R"),
        ("concat", "Q\nR"),
        ("weighted", "Q\nQ\nQ\nQ\nQ\nR"),
        ("weighted:2", "Q\nQ\nR"),
        ("original", "Q"),
    ],
)
def test_modes(name, expected):
    assert get_mode(name).apply("Q", "R") == expected


@pytest.mark.parametrize("bad", ["nope", "weighted:0", "weighted:x", "replace:3", ""])
def test_unknown_modes_are_clear_errors(bad):
    with pytest.raises(ValueError, match="weighted"):
        get_mode(bad)


def test_mode_objects_and_validation():
    mode = RewriteMode("double", query_repeats=2, separator=" ")
    assert get_mode(mode).apply("q", "r") == "q q r"
    with pytest.raises(ValueError):
        RewriteMode("nothing", query_repeats=0, with_reasoning=False)
    with pytest.raises(ValueError, match="needs the reasoning"):
        get_mode("replace").apply("q", None)
    with pytest.raises(TypeError):
        get_mode(3)  # type: ignore[arg-type]
    assert "weighted:K" in mode_names()


def test_generation_defaults_are_the_papers():
    p = GenerationParams()
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.do_sample) == (
        500,
        0.7,
        0.8,
        20,
        1.05,
        True,
    )
    greedy = GenerationParams.greedy()
    assert not greedy.do_sample and "temperature" not in greedy.key()
    assert GenerationParams().key() != GenerationParams(seed=1).key()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"temperature": 0.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"repetition_penalty": 0.0},
        {"temperature": -math.inf},
    ],
)
def test_generation_params_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        GenerationParams(**kwargs)


def test_fast_sampler_draws_from_the_same_distribution_as_transformers():
    import torch
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from tongsearch_qr.backends.sampling import TopKTopPSampler

    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 3
    ids = torch.zeros(1, 1, dtype=torch.long)
    expected = logits.clone()
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(20), TopPLogitsWarper(0.8)):
        expected = warper(ids, expected)
    expected = expected.softmax(-1)[0]

    draws = 40000
    sampler = TopKTopPSampler(temperature=0.7, top_k=20, top_p=0.8)
    out = sampler(ids.repeat(draws, 1), logits.repeat(draws, 1))
    assert torch.isfinite(out).sum(-1).eq(1).all()  # exactly one token left per row
    freq = torch.bincount(out.argmax(-1), minlength=500).float() / draws
    support = expected > 0
    assert set(freq.nonzero().flatten().tolist()) <= set(support.nonzero().flatten().tolist())
    assert support.sum() >= 2  # the case is not degenerate
    assert (freq - expected).abs().max() < 0.012
