"""LlamaIndex adapter: the reasoner as a ``BaseQueryTransform``.

    from llama_index.core.retrievers import TransformRetriever
    from tongsearch_qr.integrations.llama_index import QRQueryTransform

    retriever = TransformRetriever(bm25_retriever, QRQueryTransform())                         # BM25: query_str
    retriever = TransformRetriever(vector_retriever, QRQueryTransform(target="embedding",
                                                                      include_original=True))  # vectors

BM25 retrievers tokenize ``query_str``, so by default the rewrite goes there as its strongest words
(:class:`~tongsearch_qr.query_terms.TermQuery`), each repeated in proportion to its weight: ``BM25Retriever``
(bm25s) sums a query's repeated words, so the weights (and a ``weighted:K`` mode's emphasis on the question)
count. ``query_format="words"`` sends each word once, ``"text"`` the rewrite's text. Vector retrievers embed
``custom_embedding_strs``: with ``target="embedding"`` the rewrite's text goes there (``query_str`` is left as
asked), and ``include_original`` keeps the original embedding strings too, as HyDE does. The reasoning prompt is
exposed through the PromptMixin as ``reasoning_prompt`` (variable ``question``).

Async: LlamaIndex's ``TransformRetriever.aretrieve`` runs a transform's synchronous ``run`` on the event loop;
:class:`QRTransformRetriever` (a ``TransformRetriever``) awaits :meth:`QRQueryTransform.arun` instead, so many
requests reason at once on one engine without blocking the loop. A query whose reasoning fails or is late
(``timeout=`` seconds) is sent as the question alone (``on_error="question"``, the default here; ``"raise"``
raises).

Fusing the question's ranking with the reasoning's, LlamaIndex's way (:func:`fused_with_question`, a
``QueryFusionRetriever`` over the plain and the transformed retriever)::

    from tongsearch_qr.fusion import Fusion
    retriever = fused_with_question(bm25_retriever, QRQueryTransform(), Fusion("rrf", k=59), similarity_top_k=10)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.retrievers import TransformRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle

from .. import QRReasoner
from ..fusion import Fusion
from ..modes import RewriteMode, get_mode
from ..reasoner import Rewrite
from ..retrieval import Retriever, make_retriever
from ..retrieval.base import search_depth
from . import core_reasoner

#: how ``query_str`` carries the rewrite (see the module docstring)
QUERY_FORMATS = ("repeated", "words", "text")


class QRQueryTransform(BaseQueryTransform):
    """Rewrites a query with the reasoner's reasoning (``model``/options such as ``method=`` or ``terms=`` build a
    :class:`tongsearch_qr.QRReasoner`, or pass a ready ``reasoner``); ``mode`` defaults to the reasoner's.
    ``query_format``: how ``query_str`` carries the rewrite (``repeated``, ``words`` or ``text``). ``on_error`` and
    ``timeout`` (reasoner options; they also change a ready reasoner, for this transform only): see the module
    docstring. :meth:`arun` is the async path."""

    def __init__(
        self,
        model: str | None = None,
        *,
        reasoner: QRReasoner | None = None,
        mode: str | RewriteMode | None = None,
        target: Literal["query_str", "embedding"] = "query_str",
        include_original: bool = False,
        query_format: str = "repeated",
        **reasoner_options: Any,
    ):
        super().__init__()
        if target not in ("query_str", "embedding"):
            raise ValueError(f"target must be 'query_str' or 'embedding', got {target!r}")
        if query_format not in QUERY_FORMATS:
            raise ValueError(f"query_format must be one of {', '.join(QUERY_FORMATS)}, got {query_format!r}")
        if reasoner is not None and "terms" in reasoner_options:
            reasoner = reasoner.with_(terms=reasoner_options.pop("terms"))
        self._reasoner = core_reasoner(reasoner, model, reasoner_options)
        self._query_format = query_format
        if self._reasoner.template.passages:
            raise ValueError(
                "corpus-feedback methods (lamer) need a first-stage ranking: run them with the core "
                "or PyTerrier (bm25 >> QRReasoner(method='lamer') >> bm25)"
            )
        self._mode = self._reasoner.mode if mode is None else get_mode(mode)
        self._target = target
        self._include_original = include_original

    @property
    def reasoner(self) -> QRReasoner:
        return self._reasoner

    def _get_prompts(self) -> PromptDictType:
        return {"reasoning_prompt": PromptTemplate(self._reasoner.template.user)}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        """Use the new prompt in this transform only: a reasoner shared with other pipelines is left as it is."""
        if "reasoning_prompt" in prompts:
            template = replace(self._reasoner.template, user=prompts["reasoning_prompt"].get_template())
            self._reasoner = self._reasoner.with_(template=template)

    def _run(self, query_bundle: QueryBundle, metadata: dict) -> QueryBundle:
        return self.run_many([query_bundle])[0]

    def run_many(self, queries: Sequence[str | QueryBundle]) -> list[QueryBundle]:
        """Transform many queries with one batched reasoning call."""
        bundles = _bundles(queries)
        return self._transformed(bundles, self._reasoner.rewrites([b.query_str for b in bundles], mode=self._mode))

    async def arun(self, query_bundle_or_str: str | QueryBundle, metadata: dict | None = None) -> QueryBundle:
        """:meth:`run` for a coroutine: awaits the reasoner (its engine shared with every other request)."""
        return (await self.arun_many([query_bundle_or_str]))[0]

    async def arun_many(self, queries: Sequence[str | QueryBundle]) -> list[QueryBundle]:
        """:meth:`run_many` for a coroutine."""
        bundles = _bundles(queries)
        return self._transformed(bundles, await self._reasoner.arewrites([b.query_str for b in bundles], mode=self._mode))

    def _transformed(self, bundles: list[QueryBundle], rewrites: list[Rewrite]) -> list[QueryBundle]:
        out = []
        for bundle, rewrite in zip(bundles, rewrites):
            if self._target == "query_str":
                out.append(
                    QueryBundle(
                        query_str=_query_str(rewrite, self._query_format),
                        custom_embedding_strs=bundle.custom_embedding_strs,
                        image_path=bundle.image_path,
                        embedding=bundle.embedding,
                    )
                )
            else:
                strings = [rewrite.text, *(bundle.embedding_strs if self._include_original else [])]
                out.append(QueryBundle(query_str=bundle.query_str, custom_embedding_strs=strings, image_path=bundle.image_path))
        return out


def _bundles(queries: Sequence[str | QueryBundle]) -> list[QueryBundle]:
    return [q if isinstance(q, QueryBundle) else QueryBundle(query_str=q, custom_embedding_strs=[q]) for q in queries]


class QRTransformRetriever(TransformRetriever):
    """LlamaIndex's ``TransformRetriever`` whose async path awaits the transform's ``arun`` (a
    :class:`QRQueryTransform`'s does not block the event loop) and then the retriever's ``aretrieve``;
    ``TransformRetriever`` itself runs the transform synchronously there. Other transforms run as it runs them."""

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        transform = self._query_transform
        if isinstance(transform, QRQueryTransform):
            query_bundle = await transform.arun(query_bundle, metadata=self._transform_metadata)
        else:
            query_bundle = transform.run(query_bundle, metadata=self._transform_metadata)
        return await self._retriever.aretrieve(query_bundle)


def _query_str(rewrite: Rewrite, query_format: str) -> str:
    if query_format == "text" or not rewrite.terms.weights:
        return rewrite.text
    return rewrite.terms.as_repeated() if query_format == "repeated" else rewrite.terms.as_set()


class CoreLlamaRetriever(BaseRetriever):
    """A tongsearch-qr retriever (``bm25``, ``bm25-bright``, ``dense``, ``pyserini``) as a LlamaIndex
    retriever over ``TextNode``s (node ids are the document ids); it searches ``query_str``, leaving out the
    ``exclude`` ids (see :meth:`excluding`)."""

    def __init__(
        self,
        retriever: Retriever,
        nodes: Sequence[BaseNode] | Mapping[str, BaseNode],
        similarity_top_k: int = 10,
        exclude: Collection[str] = (),
    ):
        super().__init__()
        self._retriever, self._top_k, self._exclude = retriever, similarity_top_k, exclude
        self._nodes = nodes if isinstance(nodes, Mapping) else {node.node_id: node for node in nodes}

    @classmethod
    def from_nodes(
        cls, nodes: Sequence[BaseNode], kind: str = "bm25", *, similarity_top_k: int = 10, **options: Any
    ) -> CoreLlamaRetriever:
        """Index the nodes' text with the core retriever ``kind``."""
        nodes = list(nodes)
        retriever = make_retriever(kind, **options).index((n.node_id, n.get_content()) for n in nodes)
        return cls(retriever, nodes, similarity_top_k)

    def excluding(self, exclude: Collection[str]) -> CoreLlamaRetriever:
        """The same index and nodes, leaving the ``exclude`` document ids out of every result (BRIGHT's
        excluded ids of one query)."""
        return CoreLlamaRetriever(self._retriever, self._nodes, self._top_k, exclude)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ranking = self._retriever.search([query_bundle.query_str], k=self._top_k, exclude=[self._exclude])[0]
        return [NodeWithScore(node=self._nodes[doc_id], score=score) for doc_id, score in ranking]


def fused_with_question(
    retriever: BaseRetriever, transform: QRQueryTransform, fusion: Fusion, *, similarity_top_k: int = 10
) -> BaseRetriever:
    """A ``QueryFusionRetriever`` over ``retriever`` (the question) and ``TransformRetriever(retriever,
    transform)`` (the reasoning), with no generated queries. Its ``reciprocal_rerank`` mode is RRF with
    k=60 on ranks counted from 0, i.e. ``Fusion("rrf", k=59)``, unweighted; its ``relative_score`` mode is
    min-max score fusion with weights (``Fusion("score", weights=...)``). Nodes are merged by content hash."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.retrievers.fusion_retriever import FUSION_MODES

    if not fusion.with_query:
        raise ValueError("fused_with_question fuses the question's ranking: fusion.with_query must be on")
    if transform.reasoner.samples > 1:
        raise ValueError(
            "in LlamaIndex the samples of a reasoner are joined as text; fuse per-sample rankings "
            "with the core (tongsearch_qr.fusion.fused_search)"
        )
    weights = fusion.weights_for(2, " (the question, then the reasoning)")
    if fusion.method == "rrf" and (fusion.k != 59 or fusion.weights is not None):
        raise ValueError(
            f"LlamaIndex's reciprocal_rerank fusion is unweighted RRF with k=60 from rank 0 "
            f"(tongsearch-qr's rrf:59), not {fusion.name}; use rrf:59 or score through LlamaIndex, or use the core"
        )
    mode = FUSION_MODES.RECIPROCAL_RANK if fusion.method == "rrf" else FUSION_MODES.RELATIVE_SCORE
    return QueryFusionRetriever(
        [retriever, QRTransformRetriever(retriever, transform)],
        llm=MockLLM(),
        mode=mode,
        similarity_top_k=similarity_top_k,
        num_queries=1,
        use_async=False,
        retriever_weights=weights,
    )


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
    """Run ``TransformRetriever(CoreLlamaRetriever, QRQueryTransform)`` (``kind="native"``: LlamaIndex's own
    ``BM25Retriever.from_defaults``; with ``fusion``: :func:`fused_with_question`) per query (``eval --via
    llama-index``); each query's ``exclude`` ids are left out of every ranking, before any fusion."""
    from llama_index.core.retrievers import TransformRetriever
    from llama_index.core.schema import TextNode

    exclude = exclude or {}
    nodes = [TextNode(text=text, id_=doc_id) for doc_id, text in docs]
    if kind == "native":
        from llama_index.retrievers.bm25 import BM25Retriever

        depth = min(search_depth(k, list(exclude.values())), len(nodes))
        own = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=depth, **options)
    else:
        index = CoreLlamaRetriever.from_nodes(nodes, kind, similarity_top_k=k, **options)
    transform = QRQueryTransform(
        reasoner=reasoner, mode=mode, query_format="text" if query_form == "text" or kind == "dense" else "repeated"
    )
    rankings = {}
    for qid, query in queries.items():
        base = _Leaving(own, exclude.get(qid, ()), k) if kind == "native" else index.excluding(exclude.get(qid, ()))
        retriever = (
            TransformRetriever(base, transform)
            if fusion is None
            else fused_with_question(base, transform, fusion, similarity_top_k=k)
        )
        rankings[qid] = [(n.node.node_id, float(n.score or 0.0)) for n in retriever.retrieve(query)]
    return rankings


class _Leaving(BaseRetriever):
    """Another retriever's results without some node ids, at most ``top_k``."""

    def __init__(self, inner: BaseRetriever, exclude: Collection[str], top_k: int):
        super().__init__()
        self._inner, self._exclude, self._top_k = inner, exclude, top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        found = self._inner.retrieve(query_bundle)
        return [n for n in found if n.node.node_id not in self._exclude][: self._top_k]
