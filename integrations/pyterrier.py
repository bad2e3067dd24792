"""PyTerrier adapters: the reasoner as a query-rewriting transformer, and the core retrievers as
retrieval transformers that need no Java.

    import pyterrier as pt
    from pyterrier_pisa import PisaIndex
    from tongsearch_qr.integrations.pyterrier import QRReasoner, CoreRetriever

    index = PisaIndex("./idx", text_field="text")           # or CoreRetriever.from_corpus(corpus_iter)
    pipeline = QRReasoner() >> index.bm25(query_weighted=True)
    pt.Experiment([index.bm25(), pipeline], topics, qrels, ["ndcg_cut_10"])

Each query becomes two columns: ``query_toks``, the rewrite's strongest words with their weights
(:class:`~tongsearch_qr.query_terms.TermQuery`), which PISA, Terrier and :class:`CoreRetriever` score instead of
``query``; and ``query``, the rewrite's text, for stages that read text (dense retrievers, rerankers). The
question is kept in ``query_0`` (``pt.model.push_queries``). PISA's ``bm25()`` scores ``query_toks`` as a set of
words unless built with ``query_weighted=True``: the words are then still the rewrite's strongest, but their
weights (and a ``weighted:K`` mode's emphasis on the question) are dropped, which :class:`QRReasoner` says once
when it is composed with such a retriever. ``weights=False`` leaves ``query_toks`` out (text only); Terrier's
query parser then needs ``clean=True``.

Fusing the question's ranking with the reasoning's, PyTerrier's way (:func:`fused_with_question`)::

    from tongsearch_qr.fusion import Fusion
    fused = fused_with_question(bm25, QRReasoner(), Fusion("rrf", k=60))    # pyterrier_alpha's RRFusion
    fused = fused_with_question(bm25, QRReasoner(), Fusion("score", weights=(1, 2)))  # w * (... >> min-max) + ...
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Collection, Iterable, Mapping
from types import EllipsisType
from typing import Any

import pandas as pd
import pyterrier as pt

from .. import QRReasoner as CoreReasoner
from ..fusion import Fusion
from ..modes import RewriteMode, get_mode
from ..query_terms import TermQuery
from ..retrieval import Retriever, make_retriever
from ..retrieval.base import search_depth
from . import ADAPTER_ON_ERROR, core_reasoner

_PARSER_UNSAFE = re.compile(r"[^\w\s]+")
_WARNED: set[tuple[str, str]] = set()


class QRReasoner(pt.Transformer):
    """Query -> query transformer: each query becomes the reasoner's rewrite under ``mode`` (default: the
    reasoner's, e.g. a ``method``'s), as ``query_toks`` (words and weights, for PISA, Terrier and
    :class:`CoreRetriever`; ``weights=False`` leaves it out) and as ``query`` (the text).

    ``model`` and keyword options (``method=``, ``samples=``, ``terms=``, ...) go to
    :class:`tongsearch_qr.QRReasoner`; or pass a ready ``reasoner`` (``terms=`` then overrides how many words it
    keeps). A query whose reasoning fails or is late is sent as the question alone (``on_error="question"``, the
    default here; ``on_error="raise"`` raises), within ``timeout`` seconds per frame when given; both also change a
    ready reasoner, for this transformer only. The whole frame is reasoned about in one batch. A corpus-feedback
    method (``method="lamer"``) reads each query's top passages from the results of a first stage, the way RM3
    does in PyTerrier:
    ``bm25 >> pt.text.get_text(bm25) >> QRReasoner(method="lamer") >> bm25`` (the results need a ``text`` column).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        mode: str | RewriteMode | None = None,
        reasoner: CoreReasoner | None = None,
        weights: bool = True,
        clean: bool = False,
        terms: int | None | EllipsisType = ...,
        **reasoner_options: Any,
    ):
        if reasoner is None and not isinstance(terms, EllipsisType):
            reasoner_options["terms"] = terms
        self.reasoner = core_reasoner(reasoner, model, reasoner_options)
        if reasoner is not None and not isinstance(terms, EllipsisType):
            self.reasoner = self.reasoner.with_(terms=terms)
        self.mode = self.reasoner.mode if mode is None else get_mode(mode)
        self.weights, self.clean = weights, clean

    @classmethod
    def from_file(
        cls,
        path: str,
        *,
        mode: str | RewriteMode | None = None,
        weights: bool = True,
        clean: bool = False,
        terms: int | None | EllipsisType = ...,
        **options: Any,
    ) -> QRReasoner:
        """A transformer over precomputed reasoning (e.g. the paper's published JSON)."""
        reasoner = CoreReasoner.from_file(path, **{"on_error": ADAPTER_ON_ERROR, **options})
        return cls(mode=mode, weights=weights, clean=clean, terms=terms, reasoner=reasoner)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        reasoner = self.reasoner
        if reasoner.template.passages:
            pt.validate.result_frame(inp, extra_columns=["query", "text"])
            inp, reasoner = self._with_feedback(inp)
        else:
            pt.validate.query_frame(inp, extra_columns=["query"])
        rewrites = reasoner.rewrites(inp["query"].tolist(), mode=self.mode) if len(inp) else []
        texts = [r.text for r in rewrites]
        if self.clean:
            texts = [" ".join(_PARSER_UNSAFE.sub(" ", text).split()) for text in texts]
        out = pt.model.push_queries(inp)
        out["query"] = texts
        if self.weights:
            out["query_toks"] = [dict(r.terms.weights) for r in rewrites]
        return out

    def __rshift__(self, right: Any) -> pt.Transformer:
        """Compose as PyTerrier does, saying once when ``right`` is PISA scoring ``query_toks`` as a set of words."""
        if self.weights and type(right).__name__ == "PisaRetrieve" and not getattr(right, "query_weighted", True):
            key = (repr(right.scorer), self.mode.name)
            if key not in _WARNED:
                _WARNED.add(key)
                emphasis = (
                    f" and the question's weight in mode {self.mode.name!r}"
                    if self.mode.with_reasoning and self.mode.query_repeats > 1
                    else ""
                )
                warnings.warn(
                    f"PISA's retriever without query_weighted scores the rewrite as a set of words: it uses "
                    f"the {self.reasoner.terms or 'all'} strongest words but not their weights{emphasis}; "
                    f"build it with index.bm25(query_weighted=True) to use them",
                    stacklevel=2,
                )
        return super().__rshift__(right)

    def _with_feedback(self, res: pd.DataFrame) -> tuple[pd.DataFrame, CoreReasoner]:
        """One row per query from a result frame, and the reasoner reading each query's top passages from it."""
        ranked = pt.model.add_ranks(res.copy()).sort_values(["qid", "rank"])
        depth = self.reasoner.template.passages
        top = {query: group["text"].head(depth).tolist() for query, group in ranked.groupby("query", sort=False)}
        topics = ranked[pt.model.query_columns(ranked)].drop_duplicates("qid").reset_index(drop=True)
        return topics, self.reasoner.with_(feedback=lambda queries: [top[q] for q in queries])

    def __repr__(self) -> str:
        return f"QRReasoner({self.reasoner.backend.cache_id!r}, mode={self.mode.name!r})"


class CoreRetriever(pt.Transformer):
    """A tongsearch-qr retriever (``bm25``, ``bm25-bright``, ``dense``, ``pyserini``) as a query ->
    results transformer (``qid, query, docno, score, rank``). It searches ``query_toks`` (words and weights) where
    the frame has them and the retriever takes them (not ``dense``), else ``query``. Built :meth:`from_corpus`, it also loads
    documents' text for ``pt.text.get_text(retriever)``. ``exclude`` maps a qid to document ids its results
    leave out (BRIGHT's excluded ids), as the core retriever's ``search(exclude=...)`` does."""

    def __init__(
        self,
        retriever: Retriever,
        num_results: int = 1000,
        texts: Mapping[str, str] | None = None,
        exclude: Mapping[str, Collection[str]] | None = None,
    ):
        self.retriever, self.num_results, self.texts = retriever, num_results, texts
        self.exclude = exclude or {}

    @classmethod
    def from_corpus(
        cls,
        corpus: Iterable[Mapping[str, Any]],
        kind: str = "bm25",
        *,
        num_results: int = 1000,
        text_field: str = "text",
        exclude: Mapping[str, Collection[str]] | None = None,
        **options: Any,
    ) -> CoreRetriever:
        """Index an iterable of dicts with ``docno`` and ``text_field`` using the core retriever ``kind``."""
        texts: dict[str, str] = {}

        def pairs():
            for position, doc in enumerate(corpus):
                if "docno" not in doc or text_field not in doc:
                    raise KeyError(f"document #{position} needs 'docno' and {text_field!r} fields; has {sorted(doc)}")
                texts[str(doc["docno"])] = doc[text_field]
                yield doc["docno"], doc[text_field]

        return cls(make_retriever(kind, **options).index(pairs()), num_results, texts, exclude)

    def text_loader(self, fields: list[str] | str = "*", *, verbose: bool = False) -> pt.Transformer:
        """A transformer adding each result's ``text`` (PyTerrier's ``HasTextLoader``)."""
        if self.texts is None:
            raise ValueError("this retriever holds no texts: build it with CoreRetriever.from_corpus")
        if fields not in ("*", "text", ["text"]):
            raise ValueError(f"CoreRetriever holds only the 'text' field, not {fields!r}")
        texts = self.texts
        return pt.apply.generic(lambda res: res.assign(text=[texts[d] for d in res["docno"]]))

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        exclude = [self.exclude.get(qid, ()) for qid in inp["qid"]] if self.exclude else None
        if "query_toks" in inp.columns and self.retriever.takes_terms:
            queries: list[Any] = [TermQuery(dict(toks)) for toks in inp["query_toks"]]
        else:
            queries = inp["query"].tolist()
        rankings = self.retriever.search(queries, k=self.num_results, exclude=exclude) if len(inp) else []
        rows = [
            {**query_row, "docno": docno, "score": score, "rank": rank}
            for query_row, ranking in zip(inp.to_dict("records"), rankings)
            for rank, (docno, score) in enumerate(ranking)
        ]
        columns = [*inp.columns, "docno", "score", "rank"]
        return pd.DataFrame(rows, columns=columns)


def fused_with_question(
    retriever: pt.Transformer, reasoner: QRReasoner, fusion: Fusion, num_results: int = 1000
) -> pt.Transformer:
    """``retriever`` on the question fused with ``reasoner >> retriever`` (whose results get the question back,
    ``pt.model.pop_queries``, without ``query_toks``, so both rankings describe the same query), built from PyTerrier's own parts:
    unweighted RRF is ``pyterrier_alpha``'s ``RRFusion`` (it scores ``1 / (k + rank)`` with ranks from 0, so it is
    given ``k + 1``); weighted RRF and score fusion are ``w * (... >> normalise) + ...`` with PyTerrier's
    operators, the normalisers being ``pt.apply`` transformers (``pyterrier_alpha``'s ``PerQueryMaxMinScore`` fails to
    import its validator in pyterrier-alpha 0.16.5)."""
    import pyterrier_alpha as pta

    if not fusion.with_query:
        raise ValueError("fused_with_question fuses the question's ranking: fusion.with_query must be on")
    if reasoner.reasoner.samples > 1:
        raise ValueError(
            "in PyTerrier the samples of a reasoner are joined as text; fuse per-sample rankings "
            "with the core (tongsearch_qr.fusion.fused_search)"
        )
    runs = [retriever, reasoner >> retriever >> pt.apply.generic(_question_back)]
    weights = fusion.weights_for(len(runs), " (the question, then the reasoning)")
    if fusion.method == "rrf" and fusion.weights is None:
        return pta.RRFusion(*runs, k=fusion.k + 1, num_results=num_results)
    normalise = pt.apply.generic(_reciprocal_ranks(fusion.k) if fusion.method == "rrf" else _min_max)
    parts = [w * (run >> normalise) for w, run in zip(weights, runs)]
    combined = parts[0]
    for part in parts[1:]:
        combined = combined + part
    return combined % num_results


def _question_back(res: pd.DataFrame) -> pd.DataFrame:
    """Results with the question back in ``query`` and the rewrite's ``query_toks`` gone."""
    return pt.model.pop_queries(res).drop(columns="query_toks", errors="ignore")


def _reciprocal_ranks(k: int):
    def score(res: pd.DataFrame) -> pd.DataFrame:
        res = pt.model.add_ranks(res.copy())
        res["score"] = 1.0 / (k + res["rank"] + 1)
        return res

    return score


def _min_max(res: pd.DataFrame) -> pd.DataFrame:
    """Each query's scores scaled to [0, 1] (all equal: 0)."""
    res = res.copy()
    scores = res.groupby("qid")["score"]
    low, high = scores.transform("min"), scores.transform("max")
    res["score"] = (res["score"] - low) / (high - low).clip(lower=1e-9)
    return res


def rank_queries(
    docs: Iterable[tuple[str, str]],
    queries: Mapping[str, str],
    reasoner: CoreReasoner,
    mode: str,
    k: int,
    kind: str = "bm25",
    fusion: Fusion | None = None,
    exclude: Mapping[str, Collection[str]] | None = None,
    query_form: str = "terms",
    **options: Any,
) -> dict[str, list[tuple[str, float]]]:
    """Run ``QRReasoner >> CoreRetriever`` (``kind="native"``: ``>> PisaIndex(...).bm25()``, PISA at its defaults;
    with ``fusion``: :func:`fused_with_question`) over a topics frame (what ``tongsearch-qr eval --via pyterrier``
    does), with ``query_toks`` unless ``query_form="text"``; each query's ``exclude`` ids are left out of every
    ranking, before any fusion."""
    exclude = exclude or {}
    topics = pd.DataFrame({"qid": list(queries), "query": list(queries.values())})
    rewriter = QRReasoner(reasoner=reasoner, mode=mode, weights=query_form == "terms")
    with tempfile.TemporaryDirectory(prefix="tongsearch-qr-pisa-") as folder:
        if kind == "native":
            from pyterrier_pisa import PisaIndex

            index = PisaIndex(folder, text_field="text", **options)
            index.index({"docno": d, "text": t} for d, t in docs)
            stage = index.bm25(num_results=search_depth(k, list(exclude.values())))
            stage = stage >> pt.apply.generic(_leaving_out(exclude))
        else:
            stage = CoreRetriever.from_corpus(
                ({"docno": d, "text": t} for d, t in docs), kind, num_results=k, exclude=exclude, **options
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PISA's retriever without query_weighted")
            pipeline = rewriter >> stage if fusion is None else fused_with_question(stage, rewriter, fusion, k)
        res = pipeline.transform(topics)
    ranked = {qid: group.sort_values("rank").head(k) for qid, group in res.groupby("qid", sort=False)}
    return {qid: list(zip(ranked[qid].docno, ranked[qid].score)) if qid in ranked else [] for qid in queries}


def _leaving_out(exclude: Mapping[str, Collection[str]]):
    """Results without each query's ``exclude`` ids, ranks renumbered."""

    def drop(res: pd.DataFrame) -> pd.DataFrame:
        keep = [docno not in exclude.get(qid, ()) for qid, docno in zip(res["qid"], res["docno"])]
        return pt.model.add_ranks(res[keep].drop(columns="rank"))

    return drop
