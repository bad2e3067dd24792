"""The protocol every generating backend implements."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..generation import GenerationParams
from ..prompts import PromptTemplate

#: Called with (position in the request, raw completion) as soon as each completion is ready.
ResultCallback = Callable[[int, str], None]


@runtime_checkable
class Backend(Protocol):
    """Generates raw completions for questions rendered with a prompt template.

    ``generate`` must return one completion per question, in input order, and should call
    ``on_result`` for each as soon as it is ready (so callers can persist finished work early).
    ``samples[i]`` (default: all 0) is the sample index of row ``i``: rows of one question with different
    indices are independent draws, and with a seed, index ``j`` of a question is the same draw whatever else
    is asked for. ``cache_id`` identifies the model behind the backend in cache keys.
    """

    cache_id: str

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]: ...


def generate_rows(backend: Backend, questions: Sequence[str], template: PromptTemplate, params: GenerationParams,
                  on_result: ResultCallback | None, samples: Sequence[int]) -> list[str]:
    """``backend.generate`` for rows with sample indices; a backend written before samples existed is still
    called the old way when only sample 0 is asked for."""
    extra = {"samples": list(samples)} if any(samples) else {}
    return backend.generate(questions, template, params, on_result, **extra)


def sample_indices(questions: Sequence[str], samples: Sequence[int] | None) -> list[int]:
    """``samples`` checked against ``questions`` (default: all 0)."""
    if samples is None:
        return [0] * len(questions)
    samples = list(samples)
    if len(samples) != len(questions) or any(not isinstance(s, int) or s < 0 for s in samples):
        raise ValueError(f"samples must hold one index >= 0 per question ({len(questions)}), got {samples[:10]}")
    return samples


def requests_with_n(questions: Sequence[str], samples: Sequence[int],
                    seeded: bool) -> list[tuple[str, int, list[tuple[int, int]]]]:
    """Rows grouped into one request per question for engines that draw ``n`` samples at once:
    ``(question, n, [(choice index, row), ...])``. Seeded, choice ``j`` is sample ``j`` (so ``n`` is the
    highest index asked + 1, and rows asking the same index share its draw); unseeded, any choices will do
    and ``n`` is the number of rows."""
    rows: dict[str, list[int]] = {}
    for row, question in enumerate(questions):
        rows.setdefault(question, []).append(row)
    if seeded:
        return [(q, max(samples[r] for r in positions) + 1, [(samples[r], r) for r in positions])
                for q, positions in rows.items()]
    return [(q, len(positions), list(enumerate(positions))) for q, positions in rows.items()]


def row_seed(seed: int, prompt: Sequence[int], params_key: object, sample: int = 0, *, bits: int = 32) -> int:
    """The seed of one row's random stream, from (``seed``, the prompt's token ids, the generation parameters and,
    above 0, the sample index): the same draw whatever else is generated with it."""
    key = [seed, params_key, list(prompt)] + ([sample] if sample else [])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)
