"""The paper's prompts and the parsing of think-mode completions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The user turn of TongSearch-QR, byte for byte as in the paper's evaluation code.
PAPER_USER_TEMPLATE = (
    "Instructions:\n"
    "1. Identify the essential problem.\n"
    "2. Think step by step to reason and describe what information could be relevant and helpful "
    "to address the questions in detail.\n"
    "3. Draft an answer with as many thoughts as you have.\n"
    "Query: {question}\n\n"
)

#: The R1-style system prompt used by the paper's think mode.
THINK_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. "
    "The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind "
    "and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)

_THINK_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>(.*?)</answer>", re.DOTALL)


_TERM_SEPARATORS = re.compile(r"[,\n]")
_PLACEHOLDER = re.compile(r"\{question\}|\{passages\}")


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes chat messages.

    ``system`` is sent as a system turn even when empty, as the paper does (its no-think mode passes
    ``""``); ``None`` leaves the system turn to the model's chat template. ``one_line``: newlines in the
    question become spaces first (BRIGHT's reasoning prompt does this). ``passages`` > 0: the user turn
    also shows that many retrieved passages (corpus feedback) in a ``{passages}`` placeholder, numbered
    ``1.<text>`` one per line, each cut to ``passage_words`` words. ``keywords``: the completion is a list of
    terms (separated by commas or line breaks); :meth:`extract` keeps each distinct term once, in order.
    """

    user: str = PAPER_USER_TEMPLATE
    system: str | None = ""
    think: bool = False
    one_line: bool = False
    passages: int = 0
    passage_words: int = 128
    keywords: bool = False

    def __post_init__(self) -> None:
        if "{question}" not in self.user:
            raise ValueError("a prompt template's user turn must contain the '{question}' placeholder")
        if (self.passages > 0) != ("{passages}" in self.user):
            raise ValueError(
                "a template shows retrieved passages exactly when passages > 0 and its user turn has the '{passages}' placeholder"
            )
        if self.passages < 0 or self.passage_words < 1:
            raise ValueError("passages must be >= 0 and passage_words >= 1")

    @classmethod
    def paper(cls, think: bool = False) -> "PromptTemplate":
        """The paper's prompt: plain (empty system turn) or think mode (R1 system prompt)."""
        return cls(system=THINK_SYSTEM_PROMPT if think else "", think=think)

    def fill(self, question: str, passages: Sequence[str] = ()) -> str:
        """The user turn for ``question`` (and, when the template shows them, its retrieved ``passages``)."""
        if self.one_line:
            question = question.replace("\n", " ")
        if self.passages and not passages:
            raise ValueError(
                "this prompt shows retrieved passages: give the reasoner a feedback retriever "
                "(QRReasoner.with_(feedback=...); eval does this itself)"
            )
        shown = "\n".join(
            f"{i}.{' '.join(text.split()[: self.passage_words])}" for i, text in enumerate(passages[: self.passages], 1)
        )
        return _PLACEHOLDER.sub(lambda m: question if m.group() == "{question}" else shown, self.user)

    def messages(self, question: str, passages: Sequence[str] = ()) -> list[dict[str, str]]:
        """Chat messages for one question."""
        turns = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*turns, {"role": "user", "content": self.fill(question, passages)}]

    def filled(self) -> "PromptTemplate":
        """The template a backend gets for user turns already :meth:`fill`-ed (sent as they are)."""
        return PromptTemplate(user="{question}", system=self.system, think=self.think)

    def extract(self, completion: str) -> str:
        """The reasoning to use from a completion.

        In think mode this is the text inside ``<answer>…</answer>`` after a ``<think>`` block; a
        completion without those tags is used whole, exactly as the paper's code does. Outside think
        mode the completion is used as is. A ``keywords`` template then keeps each term once (the first
        spelling, compared without case), joined by ``", "``.
        """
        answer = parse_think_answer(completion) if self.think else None
        text = completion.strip() if answer is None else answer
        return distinct_terms(text) if self.keywords else text

    def key(self) -> dict[str, object]:
        """Identity of the template for cache keys."""
        key: dict[str, object] = {"user": self.user, "system": self.system, "think": self.think}
        if self.one_line:
            key["one_line"] = True
        if self.passages:
            key.update(passages=self.passages, passage_words=self.passage_words)
        if self.keywords:
            key["keywords"] = True
        return key


def parse_think_answer(completion: str) -> str | None:
    """The ``<answer>`` text of a ``<think>…</think><answer>…</answer>`` completion, or ``None``."""
    match = _THINK_ANSWER.search(completion)
    return match.group(1).strip() if match else None


def distinct_terms(text: str) -> str:
    """The terms of a comma- or line-separated list, each once (first spelling, compared without case)."""
    terms: dict[str, str] = {}
    for item in _TERM_SEPARATORS.split(text):
        term = item.strip()
        if term:
            terms.setdefault(term.casefold(), term)
    return ", ".join(terms.values())
