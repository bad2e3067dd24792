"""Rewrite modes: how the original query and the reasoning are combined for a retriever.

A mode is data: how many copies of the original query come first, and whether the reasoning follows.
Modes are named by strings: ``replace`` (the paper: reasoning only), ``concat`` (query, then
reasoning), ``weighted`` (the query 5 times, then reasoning) or ``weighted:K`` (the query K times),
and ``original`` (the query alone, a baseline).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewriteMode:
    """``query_repeats`` copies of the query, then the reasoning if ``with_reasoning``."""

    name: str
    query_repeats: int
    with_reasoning: bool = True
    separator: str = "\n"

    def __post_init__(self) -> None:
        if self.query_repeats < 0:
            raise ValueError(f"query_repeats must be >= 0, got {self.query_repeats}")
        if self.query_repeats == 0 and not self.with_reasoning:
            raise ValueError("a rewrite mode must keep the query or the reasoning")

    def apply(self, query: str, reasoning: str | None) -> str:
        """The text to send to a retriever."""
        parts = [query] * self.query_repeats
        if self.with_reasoning:
            if reasoning is None:
                raise ValueError(f"mode {self.name!r} needs the reasoning of query {query[:80]!r}")
            parts.append(reasoning)
        return self.separator.join(parts)


MODES: dict[str, RewriteMode] = {
    "replace": RewriteMode("replace", query_repeats=0),
    "concat": RewriteMode("concat", query_repeats=1),
    "weighted": RewriteMode("weighted", query_repeats=5),
    "original": RewriteMode("original", query_repeats=1, with_reasoning=False),
}


def get_mode(mode: str | RewriteMode) -> RewriteMode:
    """Resolve a mode name (``replace``, ``concat``, ``weighted``, ``weighted:K``, ``original``)."""
    if isinstance(mode, RewriteMode):
        return mode
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string or RewriteMode, got {type(mode).__name__}")
    name, _, arg = mode.partition(":")
    if name == "weighted" and arg:
        try:
            repeats = int(arg)
        except ValueError:
            repeats = -1
        if repeats < 1:
            raise ValueError(f"mode {mode!r}: K in 'weighted:K' must be a whole number >= 1")
        return RewriteMode(mode, query_repeats=repeats)
    if arg or name not in MODES:
        raise ValueError(f"unknown rewrite mode {mode!r}; choose one of: {', '.join(mode_names())}")
    return MODES[name]


def mode_names() -> list[str]:
    """Names accepted by :func:`get_mode`."""
    return [*MODES, "weighted:K"]
