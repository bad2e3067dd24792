"""PyTerrier adapters: the reasoner as a query-rewriting transformer, and the core retrievers as
retrieval transformers that need no Java.

    import pyterrier as pt
    from tongsearch_qr.integrations.pyterrier import QRReasoner, CoreRetriever

    bm25 = CoreRetriever.from_corpus(corpus_iter)          # dicts with docno, text
    pipeline = QRReasoner() >> bm25 % 10                   # or QRReasoner(mode="concat") >> PisaIndex(...).bm25()
    pt.Experiment([bm25, pipeline], topics, qrels, ["ndcg_cut_10"])

The rewritten text replaces ``query``; the previous one is kept in ``query_0`` (``pt.model.push_queries``).
Terrier's own (Java) retrievers work too; pass ``clean=True`` so the reasoning contains no characters
Terrier's query parser rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pyterrier as pt

from .. import QRReasoner as CoreReasoner
from ..modes import RewriteMode, get_mode
from ..retrieval import Retriever, make_retriever
from . import core_reasoner

_PARSER_UNSAFE = re.compile(r"[^\w\s]+")


class QRReasoner(pt.Transformer):
    """Query -> query transformer: each ``query`` becomes the reasoner's rewrite under ``mode``.

    ``model`` and keyword options go to :class:`tongsearch_qr.QRReasoner`; or pass a ready ``reasoner``.
    The whole frame is reasoned about in one batch.
    """

    def __init__(self, model: str | None = None, *, mode: str | RewriteMode = "replace",
                 reasoner: CoreReasoner | None = None, clean: bool = False, **reasoner_options: Any):
        self.mode = get_mode(mode)
        self.reasoner = core_reasoner(reasoner, model, reasoner_options)
        self.clean = clean

    @classmethod
    def from_file(cls, path: str, *, mode: str | RewriteMode = "replace", clean: bool = False,
                  **options: Any) -> QRReasoner:
        """A transformer over precomputed reasoning (e.g. the paper's published JSON)."""
        return cls(mode=mode, clean=clean, reasoner=CoreReasoner.from_file(path, **options))

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        queries = inp["query"].tolist()
        rewritten = self.reasoner.rewrite(queries, mode=self.mode) if queries else []
        if self.clean:
            rewritten = [" ".join(_PARSER_UNSAFE.sub(" ", text).split()) for text in rewritten]
        out = pt.model.push_queries(inp)
        out["query"] = rewritten
        return out

    def __repr__(self) -> str:
        return f"QRReasoner({self.reasoner.backend.cache_id!r}, mode={self.mode.name!r})"


class CoreRetriever(pt.Transformer):
    """A tongsearch-qr retriever (``bm25``, ``bm25-bright``, ``dense``, ``pyserini``) as a query ->
    results transformer (``qid, query, docno, score, rank``)."""

    def __init__(self, retriever: Retriever, num_results: int = 1000):
        self.retriever, self.num_results = retriever, num_results

    @classmethod
    def from_corpus(cls, corpus: Iterable[Mapping[str, Any]], kind: str = "bm25", *, num_results: int = 1000,
                    text_field: str = "text", **options: Any) -> CoreRetriever:
        """Index an iterable of dicts with ``docno`` and ``text_field`` using the core retriever ``kind``."""
        def pairs():
            for position, doc in enumerate(corpus):
                if "docno" not in doc or text_field not in doc:
                    raise KeyError(f"document #{position} needs 'docno' and {text_field!r} fields; has {sorted(doc)}")
                yield doc["docno"], doc[text_field]

        return cls(make_retriever(kind, **options).index(pairs()), num_results)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        rankings = self.retriever.search(inp["query"].tolist(), k=self.num_results) if len(inp) else []
        rows = [
            {**query_row, "docno": docno, "score": score, "rank": rank}
            for query_row, ranking in zip(inp.to_dict("records"), rankings)
            for rank, (docno, score) in enumerate(ranking)
        ]
        columns = [*inp.columns, "docno", "score", "rank"]
        return pd.DataFrame(rows, columns=columns)


def rank_queries(docs: Iterable[tuple[str, str]], queries: Mapping[str, str], reasoner: CoreReasoner, mode: str,
                 k: int, kind: str = "bm25", **options: Any) -> dict[str, list[tuple[str, float]]]:
    """Run ``QRReasoner >> CoreRetriever`` over a topics frame (what ``tongsearch-qr eval --via pyterrier`` does)."""
    stage = CoreRetriever.from_corpus(({"docno": d, "text": t} for d, t in docs), kind, num_results=k, **options)
    topics = pd.DataFrame({"qid": list(queries), "query": list(queries.values())})
    res = (QRReasoner(reasoner=reasoner, mode=mode) >> stage).transform(topics)
    ranked = {qid: group.sort_values("rank") for qid, group in res.groupby("qid", sort=False)}
    return {qid: list(zip(ranked[qid].docno, ranked[qid].score)) if qid in ranked else [] for qid in queries}
