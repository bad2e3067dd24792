"""Chat-templated prompt token ids that fit a model's context, shared by the local backends."""

from __future__ import annotations

import logging
from typing import Any

from ..prompts import PromptTemplate

log = logging.getLogger(__name__)


def render(tokenizer: Any, template: PromptTemplate, question: str) -> list[int]:
    """Token ids of ``question`` in ``template``'s chat turns, ending with the assistant header."""
    out = tokenizer.apply_chat_template(template.messages(question), add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def fit_prompt(tokenizer: Any, template: PromptTemplate, question: str, context_length: int, max_new_tokens: int) -> list[int]:
    """Prompt ids for ``question``, cut to fit the context as :func:`fit_question` cuts it."""
    return fit_question(tokenizer, template, question, context_length, max_new_tokens)[1]


def fit_question(
    tokenizer: Any, template: PromptTemplate, question: str, context_length: int, max_new_tokens: int
) -> tuple[str, list[int]]:
    """``question``, cut (and a warning logged) when its prompt plus ``max_new_tokens`` would not fit in
    ``context_length`` tokens, and its prompt ids. Only the question is cut: the template, the generation prompt at
    its end included, always stays whole."""
    budget = context_length - max_new_tokens
    ids = render(tokenizer, template, question)
    if len(ids) <= budget:
        return question, ids
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    keep = budget - (len(ids) - len(q_ids))
    while keep >= 1:
        cut = tokenizer.decode(q_ids[:keep], skip_special_tokens=True)
        ids = render(tokenizer, template, cut)
        if len(ids) <= budget:  # decoding and re-encoding the cut question can merge or split tokens
            log.warning(
                "query of %d characters truncated to %d tokens to fit the model's %d-token context (with %d new tokens)",
                len(question),
                keep,
                context_length,
                max_new_tokens,
            )
            return cut, ids
        keep -= len(ids) - budget
    raise ValueError(
        f"max_new_tokens={max_new_tokens} leaves no room for the prompt in the model's {context_length}-token context"
    )
