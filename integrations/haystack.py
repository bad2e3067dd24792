"""Haystack adapter: the reasoner as a pipeline component.

    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from tongsearch_qr.integrations.haystack import QRQueryRewriter

    p = Pipeline()
    p.add_component("reasoner", QRQueryRewriter(mode="concat"))
    p.add_component("bm25", InMemoryBM25Retriever(document_store=store))
    p.connect("reasoner.query", "bm25.query")
    p.run({"reasoner": {"query": "why can't humans drink sea water?"}})

Fusing the question's ranking with the reasoning's, Haystack's way: both retrievers feed a
``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` (RRF with k=60, weighted), see :func:`rank_queries`::

    p.add_component("question_bm25", InMemoryBM25Retriever(document_store=store))
    p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", weights=[1, 1]))
    p.connect("reasoner.original_query", "question_bm25.query")
    p.connect("question_bm25.documents", "joiner.documents")
    p.connect("bm25.documents", "joiner.documents")

``__init__`` stores JSON-serialisable settings only; the model loads in ``warm_up`` (pipelines call it).
This module registers itself on Haystack's deserialization allowlist, so pipelines that use it load
from YAML without extra flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.serialization_security import allow_deserialization_module

from .. import GenerationParams, QRReasoner
from ..fusion import Fusion
from ..methods import get_method
from ..modes import get_mode
from ..retrieval import make_retriever

allow_deserialization_module(__name__)


@component
class QRQueryRewriter:
    """Turns a query into the reasoner's rewrite.

    Outputs: ``query`` (the rewrite, for text retrievers), ``queries`` (for multi-query retrievers:
    the rewrite, preceded by the original when ``include_original``), ``original_query`` and ``reasoning``.
    ``method`` names a method of the bank (``hyde``, ``query2doc``, ...; not the corpus-feedback ``lamer``);
    ``mode`` and ``generation`` default to the method's (else the reasoner's).
    """

    def __init__(self, model: str | None = None, *, mode: str | None = None, think: bool = False,
                 generation: dict[str, Any] | None = None, reasoning_file: str | None = None,
                 cache: str | None = None, include_original: bool = False, backend_options: dict[str, Any] | None = None,
                 method: str | None = None):
        if mode is not None:
            get_mode(mode)  # fail early on a bad mode
        if method is not None and get_method(method).template is not None and get_method(method).template.passages:
            raise ValueError("corpus-feedback methods (lamer) need a first-stage ranking: run them with the core or "
                             "PyTerrier")
        self.model, self.mode, self.think, self.method = model, mode, think, method
        self.generation = dict(generation or {})
        GenerationParams(**self.generation)  # fail early on bad settings
        self.reasoning_file, self.cache = reasoning_file, cache
        self.include_original = include_original
        self.backend_options = dict(backend_options or {})
        self._reasoner: QRReasoner | None = None

    @classmethod
    def from_reasoner(cls, reasoner: QRReasoner, *, mode: str | None = None,
                      include_original: bool = False) -> QRQueryRewriter:
        """A rewriter around a ready :class:`tongsearch_qr.QRReasoner` (for programmatic use; not serialisable)."""
        rewriter = cls(mode=mode, include_original=include_original)
        rewriter._reasoner = reasoner
        return rewriter

    def warm_up(self) -> None:
        """Load the model (or the reasoning file)."""
        if self._reasoner is not None:
            return
        common = dict(think=self.think, generation=GenerationParams(**self.generation) if self.generation else None,
                      cache=self.cache)
        if self.reasoning_file:
            self._reasoner = QRReasoner.from_file(self.reasoning_file, **common)
        else:
            self._reasoner = QRReasoner(self.model, method=self.method, **common, **self.backend_options)

    @component.output_types(query=str, queries=list[str], original_query=str, reasoning=str)
    def run(self, query: str) -> dict[str, Any]:
        """Rewrite one query."""
        if self._reasoner is None:
            raise RuntimeError("QRQueryRewriter is not warmed up: call warm_up() (pipelines do it on run)")
        return self._outputs([query])[0]

    def _outputs(self, queries: list[str]) -> list[dict[str, Any]]:
        assert self._reasoner is not None
        mode = self._reasoner.mode if self.mode is None else get_mode(self.mode)
        reasoning = self._reasoner.reason(queries) if mode.with_reasoning else [""] * len(queries)
        out = []
        for query, text in zip(queries, reasoning):
            rewritten = mode.apply(query, text)
            variants = [query, rewritten] if self.include_original else [rewritten]
            out.append({"query": rewritten, "queries": variants, "original_query": query, "reasoning": text})
        return out

    @component.output_types(query=str, queries=list[str], original_query=str, reasoning=str)
    async def run_async(self, query: str) -> dict[str, Any]:
        """Rewrite one query without blocking the event loop."""
        return await asyncio.to_thread(self.run, query)

    def run_batch(self, queries: list[str]) -> list[dict[str, Any]]:
        """Rewrite many queries with one batched reasoning call (outside pipelines)."""
        if self._reasoner is None:
            self.warm_up()
        assert self._reasoner is not None
        return self._outputs(list(queries))

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, model=self.model, method=self.method, mode=self.mode, think=self.think,
                               generation=self.generation,
                               reasoning_file=self.reasoning_file, cache=self.cache,
                               include_original=self.include_original, backend_options=self.backend_options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QRQueryRewriter:
        return default_from_dict(cls, data)


@component
class CoreRetrieverComponent:
    """A tongsearch-qr retriever over Haystack ``Document``s (``bm25``, ``bm25-bright``, ``dense``,
    ``pyserini``): ``query`` in, ``documents`` (with ``score``) out. Documents are indexed in ``warm_up``."""

    def __init__(self, documents: list[Document], kind: str = "bm25", top_k: int = 10,
                 options: dict[str, Any] | None = None):
        self.kind, self.top_k, self.options = kind, top_k, dict(options or {})
        self._documents = {doc.id: doc for doc in documents}
        self._retriever = None

    def warm_up(self) -> None:
        if self._retriever is None:
            pairs = ((doc_id, doc.content or "") for doc_id, doc in self._documents.items())
            self._retriever = make_retriever(self.kind, **self.options).index(pairs)

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None, exclude: list[str] | None = None) -> dict[str, Any]:
        """The best ``top_k`` documents for ``query``, without the ``exclude`` ids (BRIGHT's excluded ids)."""
        if self._retriever is None:
            raise RuntimeError("CoreRetrieverComponent is not warmed up: call warm_up() (pipelines do it on run)")
        ranking = self._retriever.search([query], k=top_k or self.top_k, exclude=[set(exclude or ())])[0]
        return {"documents": [replace(self._documents[doc_id], score=score) for doc_id, score in ranking]}


def rank_queries(docs: Iterable[tuple[str, str]], queries: Mapping[str, str], reasoner: QRReasoner, mode: str,
                 k: int, kind: str = "bm25", fusion: Fusion | None = None,
                 exclude: Mapping[str, Collection[str]] | None = None, **options: Any) -> dict[str, list[tuple[str, float]]]:
    """Run a Pipeline ``QRQueryRewriter -> CoreRetrieverComponent`` per query (``eval --via haystack``); with
    ``fusion`` (RRF, k=60, weights allowed) a second retriever searches the original query and a
    ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` fuses the two. Each query's ``exclude`` ids are
    left out by every retriever, before any fusion."""
    from haystack import Pipeline
    from haystack.components.joiners import DocumentJoiner

    documents = [Document(id=d, content=t) for d, t in docs]
    pipeline = Pipeline()
    pipeline.add_component("reasoner", QRQueryRewriter.from_reasoner(reasoner, mode=mode))
    pipeline.add_component("retriever", CoreRetrieverComponent(documents, kind, k, options))
    pipeline.connect("reasoner.query", "retriever.query")
    last = "retriever"
    if fusion is not None:
        if not fusion.with_query or reasoner.samples > 1 or fusion.method != "rrf" or fusion.k != 60:
            raise ValueError(f"Haystack's DocumentJoiner fuses the question's ranking with one reasoning ranking by "
                             f"RRF with k=60 (weights allowed), not {fusion.name}"
                             f"{' over samples' if reasoner.samples > 1 else ''}; use the core for other fusions")
        pipeline.add_component("question_retriever", CoreRetrieverComponent(documents, kind, k, options))
        pipeline.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=k,
                                                        weights=fusion.weights_for(2, " (the question, then the reasoning)")))
        pipeline.connect("reasoner.original_query", "question_retriever.query")
        pipeline.connect("question_retriever.documents", "joiner.documents")
        pipeline.connect("retriever.documents", "joiner.documents")
        last = "joiner"
    retrievers = ["retriever", "question_retriever"] if fusion is not None else ["retriever"]
    rankings = {}
    for qid, query in queries.items():
        excluded = sorted((exclude or {}).get(qid, ()))
        inputs = {"reasoner": {"query": query}, **{name: {"exclude": excluded} for name in retrievers}}
        rankings[qid] = [(d.id, float(d.score or 0.0)) for d in pipeline.run(inputs)[last]["documents"]]
    return rankings
