"""The protocol every generating backend implements."""

from __future__ import annotations

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
    ``cache_id`` identifies the model behind the backend in cache keys.
    """

    cache_id: str

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
    ) -> list[str]: ...
