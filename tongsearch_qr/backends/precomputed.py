"""Reasoning read from a file instead of generated: the paper's published JSON (query text -> reasoning)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputFormatError, MissingReasoningError
from ..generation import GenerationParams
from ..prompts import PromptTemplate
from .base import Backend, ResultCallback, generate_rows, sample_indices


def load_reasoning_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a JSON object mapping each original query text to its reasoning."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFormatError(f"reasoning file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"reasoning file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputFormatError(f"reasoning file {path} must hold a JSON object (query -> reasoning), got {type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise InputFormatError(f"reasoning file {path}: {len(bad)} values are not strings, e.g. for key {bad[0][:80]!r}")
    return data


class PrecomputedBackend:
    """Looks each question up by its exact text; missing ones go to ``fallback`` or raise
    :class:`~tongsearch_qr.errors.MissingReasoningError` naming them."""

    def __init__(self, reasoning: Mapping[str, str], *, source: str = "precomputed reasoning", fallback: Backend | None = None):
        self.reasoning = dict(reasoning)
        self.source = source
        self.fallback = fallback
        digest = hashlib.sha256(json.dumps(self.reasoning, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_id = f"precomputed:{digest}" + (f"|{fallback.cache_id}" if fallback else "")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], fallback: Backend | None = None) -> "PrecomputedBackend":
        """Load the seed's JSON format (``{"<original query>": "<reasoning>", ...}``)."""
        return cls(load_reasoning_file(path), source=str(path), fallback=fallback)

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """The stored reasoning of each question (its sample 0), generating missing ones and further samples
        with the fallback."""
        samples = sample_indices(questions, samples)
        missing = [i for i, q in enumerate(questions) if samples[i] > 0 or q not in self.reasoning]
        if missing and self.fallback is None:
            if any(samples[i] > 0 for i in missing):
                raise ValueError(
                    f"{self.source} holds one reasoning per query; more samples per query need a "
                    "fallback model that generates them (fallback= / --fallback MODEL)"
                )
            raise MissingReasoningError([questions[i] for i in missing], self.source)
        results = [self.reasoning.get(q, "") for q in questions]
        missing_set = set(missing)
        if on_result is not None:
            for i, text in enumerate(results):
                if i not in missing_set:
                    on_result(i, text)
        if missing:
            assert self.fallback is not None

            def forward(j: int, text: str) -> None:
                results[missing[j]] = text
                if on_result is not None:
                    on_result(missing[j], text)

            generated = generate_rows(
                self.fallback, [questions[i] for i in missing], template, params, forward, [samples[i] for i in missing]
            )
            for i, text in zip(missing, generated):
                results[i] = text
        return results
