"""Validation of query texts before they reach a model."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import InvalidQueryError


def query_problem(query: object) -> str | None:
    """Why ``query`` cannot be reasoned about, or ``None`` when it is usable text."""
    if query is None:
        return "None"
    if isinstance(query, float) and math.isnan(query):
        return "NaN"
    if not isinstance(query, str):
        return f"not a string ({type(query).__name__})"
    if not query.strip():
        return "empty or whitespace only"
    return None


def validate_queries(queries: Sequence[object]) -> list[str]:
    """Return ``queries`` as a list of strings, or raise :class:`InvalidQueryError` naming every bad one."""
    if isinstance(queries, str):
        raise TypeError("pass a list of queries, not a single string (wrap it: [query])")
    queries = list(queries)
    problems = [(i, why) for i, q in enumerate(queries) if (why := query_problem(q)) is not None]
    if problems:
        raise InvalidQueryError(problems)
    return queries  # type: ignore[return-value]
