"""Rank fusion: one ranking per query from the rankings of several formulations of it (the question,
its reasoning, several sampled reasonings). The maths is ranx's (``pip install 'tongsearch-qr[fusion]'``).

Fusion is a choice per use, never a default: it limits a weak reasoner's damage but can cost a strong one
(the published 7B's reasoning on a BRIGHT pool: 0.484 nDCG@10 alone, 0.421 fused with the question).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from .modes import RewriteMode
from .retrieval.base import Ranking

METHODS = ("rrf", "score")


@dataclass(frozen=True)
class Fusion:
    """How rankings are fused.

    ``rrf``: reciprocal rank fusion (Cormack et al., 2009), a document's score is the sum over rankings of
    ``weight / (k + rank)`` with ranks from 1. ``score``: each ranking's scores min-max normalised per query,
    then summed with the weights. ``weights`` (default: all 1) hold one value per ranking, in the order
    :func:`fused_search` makes them: the question's ranking first when ``with_query``, then one per
    reasoning sample.
    """

    method: str = "rrf"
    k: int = 60
    weights: tuple[float, ...] | None = None
    with_query: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fusion method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"the RRF constant k must be a whole number >= 1, got {self.k!r}")
        if self.weights is not None:
            weights = tuple(self.weights)
            if not weights or any(
                isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0 for w in weights
            ):  # numbers.Real: Python's and numpy's ints and floats
                raise ValueError(f"fusion weights must be finite numbers >= 0, got {list(weights)}")
            if not any(weights):
                raise ValueError("fusion weights are all 0: at least one ranking must count")
            object.__setattr__(self, "weights", tuple(float(w) for w in weights))

    @classmethod
    def parse(cls, spec: str, weights: str | Sequence[float] | None = None, *, with_query: bool = True) -> Fusion:
        """``rrf``, ``rrf:K`` or ``score``, with ``weights`` as numbers or a comma-separated string."""
        name, _, arg = spec.partition(":")
        if arg and name != "rrf":
            raise ValueError(f"fusion {spec!r}: only rrf takes a parameter (rrf:K)")
        try:
            k = int(arg) if arg else 60
        except ValueError:
            raise ValueError(f"fusion {spec!r}: K in 'rrf:K' must be a whole number >= 1") from None
        if isinstance(weights, str):
            try:
                weights = [float(w) for w in weights.split(",")]
            except ValueError:
                raise ValueError(f"fusion weights must be comma-separated numbers, got {weights!r}") from None
        return cls(name, k, tuple(weights) if weights is not None else None, with_query)

    @property
    def name(self) -> str:
        """``rrf:K`` or ``score``, with the weights when set."""
        name = f"rrf:{self.k}" if self.method == "rrf" else self.method
        return name + (f"[{','.join(f'{w:g}' for w in self.weights)}]" if self.weights else "")

    def weights_for(self, runs: int, described: str = "") -> list[float]:
        """The weights of ``runs`` rankings (all 1 by default); a clear error when they do not fit."""
        if self.weights is None:
            return [1.0] * runs
        if len(self.weights) != runs:
            raise ValueError(f"{len(self.weights)} fusion weights for {runs} rankings{described}: give one weight per ranking")
        return list(self.weights)

    def sample_weights(self, samples: int) -> list[float]:
        """The weights of the rankings :func:`fused_search` makes for ``samples`` reasoning samples (the
        question's first when ``with_query``); a clear error when they do not fit."""
        described = f"the question, then {samples} reasoning sample(s)" if self.with_query else f"{samples} reasoning sample(s)"
        return self.weights_for(int(self.with_query) + samples, f" ({described})")

    def fuse(self, runs: Sequence[Sequence[Ranking]], depth: int, weights: Sequence[float] | None = None) -> list[Ranking]:
        """``runs[r][q]`` is ranking ``r`` of query ``q``; the fused ranking of each query, best ``depth`` first
        (``weights``: already checked ones, else :meth:`weights_for` the runs); no queries, no rankings out."""
        if not runs:
            raise ValueError("nothing to fuse: no rankings")
        queries = len(runs[0])
        if any(len(run) != queries for run in runs):
            raise ValueError(f"rankings of different query counts: {[len(run) for run in runs]}")
        weights = self.weights_for(len(runs)) if weights is None else list(weights)
        if not queries:
            return []
        from ranx import Run
        from ranx.fusion import rrf, wsum
        from ranx.normalization import min_max_norm

        # ranx needs every query in every run and at least one document per query
        placeholder = "\0no document"
        ranx_runs = [Run({str(q): dict(ranking) or {placeholder: 0.0} for q, ranking in enumerate(run)}) for run in runs]
        with warnings.catch_warnings():  # numba's notes about its own integer casts
            warnings.simplefilter("ignore")
            normalised = [rrf([run], k=self.k) if self.method == "rrf" else min_max_norm(run) for run in ranx_runs]
            fused = wsum(normalised, weights).to_dict()
        out = []
        for q in range(queries):
            scores = [(doc, float(score)) for doc, score in fused.get(str(q), {}).items() if doc != placeholder]
            out.append(sorted(scores, key=lambda item: (-item[1], item[0]))[:depth])
        return out


def fused_search(
    retriever: Any,
    queries: Sequence[str],
    reasoner: Any,
    fusion: Fusion,
    *,
    k: int = 1000,
    mode: str | RewriteMode | None = None,
    exclude: Sequence[Collection[str]] | None = None,
    progress: bool | None = None,
    as_terms: bool = False,
) -> list[Ranking]:
    """Search ``retriever`` with the question (when ``fusion.with_query``) and with each of the reasoner's
    sampled rewrites under ``mode`` (as text, or with ``as_terms`` as term queries), each ``k`` deep, and fuse the
    rankings into the best ``k`` per query."""
    weights = fusion.sample_weights(reasoner.samples)  # before any reasoning or search
    rewrites = reasoner.rewrite_samples(queries, mode, progress=progress, as_terms=as_terms)
    runs = [retriever.search(list(queries), k=k, exclude=exclude)] if fusion.with_query else []
    for sample in range(reasoner.samples):
        runs.append(retriever.search([texts[sample] for texts in rewrites], k=k, exclude=exclude))
    return fusion.fuse(runs, k, weights)
