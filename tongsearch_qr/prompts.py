"""The paper's prompts and the parsing of think-mode completions."""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes chat messages.

    ``system`` is sent as a system turn even when empty, as the paper does (its no-think mode passes
    ``""``); ``None`` leaves the system turn to the model's chat template.
    """

    user: str = PAPER_USER_TEMPLATE
    system: str | None = ""
    think: bool = False

    def __post_init__(self) -> None:
        if "{question}" not in self.user:
            raise ValueError("a prompt template's user turn must contain the '{question}' placeholder")

    @classmethod
    def paper(cls, think: bool = False) -> "PromptTemplate":
        """The paper's prompt: plain (empty system turn) or think mode (R1 system prompt)."""
        return cls(system=THINK_SYSTEM_PROMPT if think else "", think=think)

    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for one question."""
        user = self.user.replace("{question}", question)
        turns = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*turns, {"role": "user", "content": user}]

    def extract(self, completion: str) -> str:
        """The reasoning to use from a completion.

        In think mode this is the text inside ``<answer>…</answer>`` after a ``<think>`` block; a
        completion without those tags is used whole, exactly as the paper's code does. Outside think
        mode the completion is used as is.
        """
        if not self.think:
            return completion.strip()
        answer = parse_think_answer(completion)
        return completion.strip() if answer is None else answer

    def key(self) -> dict[str, object]:
        """Identity of the template for cache keys."""
        return {"user": self.user, "system": self.system, "think": self.think}


def parse_think_answer(completion: str) -> str | None:
    """The ``<answer>`` text of a ``<think>…</think><answer>…</answer>`` completion, or ``None``."""
    match = _THINK_ANSWER.search(completion)
    return match.group(1).strip() if match else None
