"""The protocol every generating backend implements."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

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

    A backend may also offer ``submit(questions, template, params, samples=None) -> list[Future[str]]``: one future
    per row, returned at once, so that concurrent callers share its engine (:mod:`.engine`); the reasoner runs the
    ``generate`` of a backend without it in a thread of its own per call.
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


def generate_rows(
    backend: Backend,
    questions: Sequence[str],
    template: PromptTemplate,
    params: GenerationParams,
    on_result: ResultCallback | None,
    samples: Sequence[int],
) -> list[str]:
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


class EngineRequest(NamedTuple):
    """One request to an engine that draws ``n`` completions at once: ``rows`` pairs each choice index with the row
    it answers; a seeded request draws with the seed of sample index ``sample`` (``None`` unseeded)."""

    question: str
    n: int
    rows: list[tuple[int, int]]
    sample: int | None


def requests_with_n(questions: Sequence[str], samples: Sequence[int], seeded: bool) -> list[EngineRequest]:
    """Rows grouped into requests for engines that draw ``n`` samples at once. Seeded, each (question, sample
    index) is a request of its own (``n=1``; rows asking the same pair share its draw), to be drawn with
    :func:`row_seed` of that index: engines seed choice ``j`` of a request with ``seed + j``, so one seed sent with
    ``n`` would make seed 1's sample 1 seed 2's sample 0. Unseeded, any choices will do: one request per question,
    ``n`` its number of rows."""
    groups: dict[tuple[str, int | None], list[int]] = {}
    for row, question in enumerate(questions):
        groups.setdefault((question, samples[row] if seeded else None), []).append(row)
    if seeded:
        return [EngineRequest(q, 1, [(0, row) for row in rows], sample) for (q, sample), rows in groups.items()]
    return [EngineRequest(q, len(rows), list(enumerate(rows)), None) for (q, _), rows in groups.items()]


def row_seed(seed: int, prompt: Sequence[object], params_key: object, sample: int = 0, *, bits: int = 32) -> int:
    """The seed of one row's random stream, from (``seed``, the prompt: its token ids, or the chat messages sent to
    a server, the generation parameters and, above 0, the sample index): the same draw whatever else is generated
    with it, and another for every seed and sample index. Every backend seeds its draws with it."""
    key = [seed, params_key, list(prompt)] + ([sample] if sample else [])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)
