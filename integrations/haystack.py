"""Haystack adapter: the reasoner as a pipeline component.

    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from tongsearch_qr.integrations.haystack import QRQueryRewriter

    p = Pipeline()
    p.add_component("reasoner", QRQueryRewriter())
    p.add_component("bm25", InMemoryBM25Retriever(document_store=store))
    p.connect("reasoner.query", "bm25.query")
    p.run({"reasoner": {"query": "why can't humans drink sea water?"}})

``query`` is the rewrite as a BM25 retriever should get it (:class:`~tongsearch_qr.query_terms.TermQuery`): by
default its strongest words once each, as the in-memory store scores a query (a set of words, stopwords
included); ``query_format="repeated"`` repeats each word by its weight (Elasticsearch's and OpenSearch's BM25
count a query's repeated words), ``"lucene"`` writes ``word^weight`` for a ``query_string`` query, ``"text"``
sends the rewrite's text. ``text`` is always the text (connect it to an embedder), ``term_weights`` the words
and weights (for a custom query), ``original_query`` the question.

Elasticsearch or OpenSearch, with the weights (:func:`opensearch_query` builds the custom query)::

    QRQueryRewriter(query_format="lucene")  ->  OpenSearchBM25Retriever(document_store=store,
                                                                        custom_query=opensearch_query())
    QRQueryRewriter(query_format="repeated")  ->  ElasticsearchBM25Retriever(document_store=store, fuzziness=0)

Fusing the question's ranking with the reasoning's, Haystack's way: both retrievers feed a
``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` (RRF with k=60, weighted), see :func:`rank_queries`::

    p.add_component("question_bm25", InMemoryBM25Retriever(document_store=store))
    p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", weights=[1, 1]))
    p.connect("reasoner.original_query", "question_bm25.query")
    p.connect("question_bm25.documents", "joiner.documents")
    p.connect("bm25.documents", "joiner.documents")

``__init__`` stores JSON-serialisable settings only; the model loads in ``warm_up`` (pipelines call it;
``AsyncPipeline``-style ``run_async`` runs use ``warm_up_async`` and ``run_async``, which awaits the reasoner without
blocking the event loop). On a request's path the component never fails a search for its reasoning: a query whose
reasoning fails or is late (``timeout`` seconds) goes on as the question alone (``on_error="question"``;
``"raise"`` raises instead).
This module registers itself on Haystack's deserialization allowlist, so pipelines that use it load
from YAML without extra flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from types import EllipsisType
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.serialization_security import allow_deserialization_module

from .. import GenerationParams, QRReasoner
from ..fusion import Fusion
from ..methods import get_method
from ..modes import RewriteMode, get_mode
from ..online import check_on_error, check_timeout
from ..query_terms import TermQuery
from ..reasoner import Rewrite
from ..retrieval import make_retriever
from . import ADAPTER_ON_ERROR

allow_deserialization_module(__name__)

#: how ``query`` carries the rewrite's words (see the module docstring)
QUERY_FORMATS = ("words", "repeated", "lucene", "text")


def opensearch_query(field: str = "content") -> dict[str, Any]:
    """An ``OpenSearchBM25Retriever`` ``custom_query`` that scores ``QRQueryRewriter(query_format="lucene")``'s
    ``word^weight`` query with the weights (a ``query_string`` query on ``field``)."""
    return {"query": {"query_string": {"query": "$query", "default_field": field, "default_operator": "OR"}}}


def query_for(rewrite: Rewrite, query_format: str) -> str:
    """The ``query`` string of ``rewrite`` in ``query_format`` (one of :data:`QUERY_FORMATS`)."""
    terms: TermQuery = rewrite.terms
    if query_format == "text" or not terms.weights:
        return rewrite.text
    return {"words": terms.as_set, "repeated": terms.as_repeated, "lucene": terms.as_lucene}[query_format]()


@component
class QRQueryRewriter:
    """Turns a query into the reasoner's rewrite.

    Outputs: ``query`` (the rewrite for a BM25 retriever, in ``query_format``), ``text`` (the rewrite's text,
    for embedders), ``term_weights`` (its words and weights), ``queries`` (for multi-query retrievers: ``query``,
    preceded by the original when ``include_original``), ``original_query`` and ``reasoning``.
    ``method`` names a method of the bank (``hyde``, ``query2doc``, ...; not the corpus-feedback ``lamer``);
    ``mode`` and ``generation`` default to the method's (else the reasoner's). ``terms``: how many words the
    rewrite keeps (default: the reasoner's). ``on_error`` and ``timeout``: what a query gets when its reasoning
    fails or is late, and the seconds a run may wait (see the module docstring).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        mode: str | None = None,
        think: bool = False,
        generation: dict[str, Any] | None = None,
        reasoning_file: str | None = None,
        cache: str | None = None,
        include_original: bool = False,
        backend_options: dict[str, Any] | None = None,
        method: str | None = None,
        query_format: str = "words",
        terms: int | None = None,
        on_error: str = ADAPTER_ON_ERROR,
        timeout: float | None = None,
    ):
        if mode is not None:
            get_mode(mode)  # fail early on a bad mode
        if method is not None and get_method(method).template is not None and get_method(method).template.passages:
            raise ValueError("corpus-feedback methods (lamer) need a first-stage ranking: run them with the core or PyTerrier")
        if query_format not in QUERY_FORMATS:
            raise ValueError(f"query_format must be one of {', '.join(QUERY_FORMATS)}, got {query_format!r}")
        if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int) or terms < 1):
            raise ValueError(f"terms must be a whole number >= 1, got {terms!r}")
        self.model, self.mode, self.think, self.method = model, mode, think, method
        self.generation = dict(generation or {})
        GenerationParams(**self.generation)  # fail early on bad settings
        self.reasoning_file, self.cache = reasoning_file, cache
        self.include_original = include_original
        self.backend_options = dict(backend_options or {})
        self.query_format, self.terms = query_format, terms
        self.on_error, self.timeout = check_on_error(on_error), check_timeout(timeout)
        self._reasoner: QRReasoner | None = None

    @classmethod
    def from_reasoner(
        cls,
        reasoner: QRReasoner,
        *,
        mode: str | None = None,
        include_original: bool = False,
        query_format: str = "words",
        terms: int | None = None,
        on_error: str | None = None,
        timeout: float | None | EllipsisType = ...,
    ) -> QRQueryRewriter:
        """A rewriter around a ready :class:`tongsearch_qr.QRReasoner` (for programmatic use; not serialisable),
        with the reasoner's ``on_error`` and ``timeout`` unless given."""
        rewriter = cls(
            mode=mode,
            include_original=include_original,
            query_format=query_format,
            terms=terms,
            on_error=on_error or reasoner.on_error,
            timeout=reasoner.timeout if isinstance(timeout, EllipsisType) else timeout,
        )
        changes: dict[str, Any] = {} if terms is None else {"terms": terms}
        if rewriter.on_error != reasoner.on_error:
            changes["on_error"] = rewriter.on_error
        if rewriter.timeout != reasoner.timeout:
            changes["timeout"] = rewriter.timeout
        rewriter._reasoner = reasoner.with_(**changes) if changes else reasoner
        return rewriter

    def warm_up(self) -> None:
        """Load the model (or the reasoning file)."""
        if self._reasoner is not None:
            return
        common: dict[str, Any] = dict(
            think=self.think,
            cache=self.cache,
            on_error=self.on_error,
            timeout=self.timeout,
            generation=GenerationParams(**self.generation) if self.generation else None,
        )
        if self.reasoning_file:
            reasoner = QRReasoner.from_file(self.reasoning_file, **common)
        else:
            reasoner = QRReasoner(self.model, method=self.method, **common, **self.backend_options)
        self._reasoner = reasoner if self.terms is None else reasoner.with_(terms=self.terms)

    @component.output_types(
        query=str, text=str, term_weights=dict[str, float], queries=list[str], original_query=str, reasoning=str
    )
    def run(self, query: str) -> dict[str, Any]:
        """Rewrite one query."""
        if self._reasoner is None:
            raise RuntimeError("QRQueryRewriter is not warmed up: call warm_up() (pipelines do it on run)")
        return self._output(self._reasoner.rewrites([query], self._mode())[0])

    def _mode(self) -> RewriteMode | None:
        return None if self.mode is None else get_mode(self.mode)

    def _output(self, rewrite: Rewrite) -> dict[str, Any]:
        query = query_for(rewrite, self.query_format)
        variants = [rewrite.question, query] if self.include_original else [query]
        return {
            "query": query,
            "text": rewrite.text,
            "term_weights": dict(rewrite.terms.weights),
            "queries": variants,
            "original_query": rewrite.question,
            "reasoning": rewrite.reasoning or "",
        }

    async def warm_up_async(self) -> None:
        """:meth:`warm_up` off the event loop (the model loads in a thread)."""
        await asyncio.to_thread(self.warm_up)

    @component.output_types(
        query=str, text=str, term_weights=dict[str, float], queries=list[str], original_query=str, reasoning=str
    )
    async def run_async(self, query: str) -> dict[str, Any]:
        """Rewrite one query, awaiting the reasoner (its engine shared with every other run) without blocking the
        event loop."""
        if self._reasoner is None:
            raise RuntimeError("QRQueryRewriter is not warmed up: call warm_up() (pipelines do it on run)")
        return self._output((await self._reasoner.arewrites([query], self._mode()))[0])

    def run_batch(self, queries: list[str]) -> list[dict[str, Any]]:
        """Rewrite many queries with one batched reasoning call (outside pipelines)."""
        if self._reasoner is None:
            self.warm_up()
        assert self._reasoner is not None
        return [self._output(rewrite) for rewrite in self._reasoner.rewrites(list(queries), self._mode())]

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            model=self.model,
            method=self.method,
            mode=self.mode,
            think=self.think,
            generation=self.generation,
            reasoning_file=self.reasoning_file,
            cache=self.cache,
            include_original=self.include_original,
            backend_options=self.backend_options,
            query_format=self.query_format,
            terms=self.terms,
            on_error=self.on_error,
            timeout=self.timeout,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QRQueryRewriter:
        return default_from_dict(cls, data)


@component
class CoreRetrieverComponent:
    """A tongsearch-qr retriever over Haystack ``Document``s (``bm25``, ``bm25-bright``, ``dense``,
    ``pyserini``): ``query`` (or, for the BM25 ones, ``term_weights``: words and weights, which win) in, ``documents``
    (with ``score``) out. Documents are indexed in ``warm_up``."""

    def __init__(self, documents: list[Document], kind: str = "bm25", top_k: int = 10, options: dict[str, Any] | None = None):
        self.kind, self.top_k, self.options = kind, top_k, dict(options or {})
        self._documents = {doc.id: doc for doc in documents}
        self._retriever = None

    def warm_up(self) -> None:
        if self._retriever is None:
            pairs = ((doc_id, doc.content or "") for doc_id, doc in self._documents.items())
            self._retriever = make_retriever(self.kind, **self.options).index(pairs)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, term_weights: dict[str, float] | None = None, top_k: int | None = None, exclude: list[str] | None = None
    ) -> dict[str, Any]:
        """The best ``top_k`` documents for ``term_weights`` (when given and the retriever takes them) or ``query``,
        without the ``exclude`` ids (BRIGHT's excluded ids)."""
        if self._retriever is None:
            raise RuntimeError("CoreRetrieverComponent is not warmed up: call warm_up() (pipelines do it on run)")
        searched: str | TermQuery = TermQuery(term_weights) if term_weights and self._retriever.takes_terms else query
        ranking = self._retriever.search([searched], k=top_k or self.top_k, exclude=[set(exclude or ())])[0]
        return {"documents": [replace(self._documents[doc_id], score=score) for doc_id, score in ranking]}


def rank_queries(
    docs: Iterable[tuple[str, str]],
    queries: Mapping[str, str],
    reasoner: QRReasoner,
    mode: str,
    k: int,
    kind: str = "bm25",
    fusion: Fusion | None = None,
    exclude: Mapping[str, Collection[str]] | None = None,
    query_form: str = "terms",
    **options: Any,
) -> dict[str, list[tuple[str, float]]]:
    """Run a Pipeline ``QRQueryRewriter -> CoreRetrieverComponent`` per query (``eval --via haystack``), the
    rewriter's ``term_weights`` going to the retriever (``query_form="text"``: its ``text``); ``kind="native"``:
    ``QRQueryRewriter -> InMemoryBM25Retriever`` over a default ``InMemoryDocumentStore`` (Haystack's own BM25,
    given the rewrite's ``query``). With ``fusion`` (RRF, k=60, weights allowed) a second retriever searches the
    original query and a ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` fuses the two. Each query's
    ``exclude`` ids are left out by every retriever, before any fusion."""
    from haystack import Pipeline
    from haystack.components.joiners import DocumentJoiner

    documents = [Document(id=d, content=t) for d, t in docs]
    native = kind == "native"
    if native:
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        store = InMemoryDocumentStore(**options)
        store.write_documents(documents)

    def retriever() -> Any:
        return (
            InMemoryBM25Retriever(document_store=store, top_k=k)
            if native
            else CoreRetrieverComponent(documents, kind, k, options)
        )

    pipeline = Pipeline()
    pipeline.add_component(
        "reasoner",
        QRQueryRewriter.from_reasoner(
            reasoner, mode=mode, query_format="text" if query_form == "text" or kind == "dense" else "words"
        ),
    )
    pipeline.add_component("retriever", retriever())
    pipeline.connect("reasoner.query", "retriever.query")
    if query_form == "terms" and not native:
        pipeline.connect("reasoner.term_weights", "retriever.term_weights")
    last = "retriever"
    if fusion is not None:
        if not fusion.with_query or reasoner.samples > 1 or fusion.method != "rrf" or fusion.k != 60:
            raise ValueError(
                f"Haystack's DocumentJoiner fuses the question's ranking with one reasoning ranking by "
                f"RRF with k=60 (weights allowed), not {fusion.name}"
                f"{' over samples' if reasoner.samples > 1 else ''}; use the core for other fusions"
            )
        pipeline.add_component("question_retriever", retriever())
        pipeline.add_component(
            "joiner",
            DocumentJoiner(
                join_mode="reciprocal_rank_fusion", top_k=k, weights=fusion.weights_for(2, " (the question, then the reasoning)")
            ),
        )
        pipeline.connect("reasoner.original_query", "question_retriever.query")
        pipeline.connect("question_retriever.documents", "joiner.documents")
        pipeline.connect("retriever.documents", "joiner.documents")
        last = "joiner"
    retrievers = ["retriever", "question_retriever"] if fusion is not None else ["retriever"]
    rankings = {}
    for qid, query in queries.items():
        excluded = sorted((exclude or {}).get(qid, ()))
        leave_out = (
            ({"filters": {"field": "id", "operator": "not in", "value": excluded}} if excluded else {})
            if native
            else {"exclude": excluded}
        )
        inputs = {"reasoner": {"query": query}, **{name: leave_out for name in retrievers}}
        rankings[qid] = [(d.id, float(d.score or 0.0)) for d in pipeline.run(inputs)[last]["documents"]]
    return rankings
