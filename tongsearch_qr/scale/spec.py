"""What each Ray worker builds its reasoner from, and what the driver learns from one such build."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from ..backends import Backend
from ..generation import GenerationParams
from ..modes import RewriteMode
from ..prompts import PromptTemplate
from ..reasoner import QRReasoner

#: arguments of QRReasoner that belong to the driver (the one cache, the retriever, the progress bar)
DRIVER_ONLY = ("cache", "feedback", "progress")


class ReasonerSpec:
    """The arguments of :class:`~tongsearch_qr.QRReasoner`, for each worker to build the reasoner where it runs.

    ``ReasonerSpec(model, backend="auto", **kwargs)`` takes what ``QRReasoner(model, backend=...,
    **kwargs)`` takes (backend options such as ``device``/``dtype``/``batch_size``, and ``think``, ``template``,
    ``generation``, ``mode``, ``method``, ``samples``) except what belongs to the driver: ``cache``, ``feedback``
    and ``progress``. ``backend`` may also be a picklable callable returning a
    :class:`~tongsearch_qr.backends.Backend`, called on each worker (``model`` then stays ``None``).
    """

    def __init__(
        self, model: str | os.PathLike[str] | None = None, *, backend: str | Callable[[], Backend] = "auto", **kwargs: Any
    ):
        driver_only = sorted(set(DRIVER_ONLY) & set(kwargs))
        if driver_only:
            raise ValueError(
                f"{', '.join(driver_only)} belong to the driver: give them to ray_reasoner or "
                "reason_dataset, not to the ReasonerSpec"
            )
        if not isinstance(backend, str) and not callable(backend):
            raise TypeError(f"backend must be a backend name or a callable returning a Backend, got {backend!r}")
        if callable(backend) and model is not None:
            raise ValueError("a backend factory loads its own model: leave model=None")
        self.model = model
        self.backend = backend
        self.kwargs = dict(kwargs)

    def __repr__(self) -> str:
        options = "".join(f", {name}={value!r}" for name, value in self.kwargs.items())
        return f"ReasonerSpec({self.model!r}, backend={self.backend!r}{options})"

    def build(self) -> QRReasoner:
        """The reasoner this spec describes (without a cache), its model loaded here."""
        if isinstance(self.backend, str):
            return QRReasoner(self.model, backend=self.backend, **self.kwargs)
        return QRReasoner(backend=self.backend(), **self.kwargs)

    def with_options(self, **options: Any) -> ReasonerSpec:
        """This spec with some backend options (or reasoner arguments) set."""
        return ReasonerSpec(self.model, backend=self.backend, **{**self.kwargs, **options})


class ResolvedSettings(NamedTuple):
    """What a built reasoner settled on (a trained model's or a method's defaults applied): the driver's
    reasoner takes these, so its cache keys and outputs are those of one process."""

    cache_id: str
    template: PromptTemplate
    generation: GenerationParams
    mode: RewriteMode
    samples: int


def resolve_settings(spec: ReasonerSpec) -> ResolvedSettings:
    """Build ``spec``'s reasoner and return its settings (run on a worker: it loads the model)."""
    reasoner = spec.build()
    return ResolvedSettings(reasoner.backend.cache_id, reasoner.template, reasoner.generation, reasoner.mode, reasoner.samples)
