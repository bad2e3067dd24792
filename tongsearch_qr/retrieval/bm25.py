"""BM25 over bm25s sparse matrices, with Snowball English stemming and English stopwords."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputFormatError
from .base import (
    Query,
    Ranking,
    check_search_args,
    collect_documents,
    drop_excluded,
    query_text,
    read_index_meta,
    search_depth,
    write_index_meta,
)


def _bm25s():
    """bm25s, imported without touching an accelerator, with its logger back at WARNING (bm25s sets it to DEBUG
    when imported). bm25s imports JAX when it is installed and runs a warm-up ``jax.lax.top_k`` at import, which
    initialises JAX on the GPU and preallocates 75% of its memory; unless the program imported JAX itself, bm25s
    is imported with JAX hidden, so it selects top-k with numpy (as :meth:`BM25Retriever.search` asks anyway)."""
    if "bm25s" not in sys.modules and "jax" not in sys.modules:
        sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` raises ImportError while this is set
        try:
            import bm25s
        finally:
            del sys.modules["jax"]
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25s_tokenize(texts: list[str], **options) -> Any:
    """``bm25s.tokenize`` (bm25s imported as :func:`_bm25s` does)."""
    return _bm25s().tokenize(texts, **options)


class BM25Retriever:
    """BM25 (Lucene scoring by default, k1=0.9, b=0.4 as in BRIGHT) through bm25s.

    Documents that share no term with a query score 0 and are not returned. A
    :class:`~tongsearch_qr.query_terms.TermQuery` is searched as its words repeated by weight (bm25s sums a
    query's repeated words).
    """

    takes_terms = True

    def __init__(
        self,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        show_progress: bool = False,
    ):
        self.config = {"k1": k1, "b": b, "method": method, "stemmer": stemmer, "stopwords": stopwords}
        self.show_progress = show_progress
        self._model: Any = None  # a bm25s.BM25 once indexed (bm25s has no type information)
        self.doc_ids: list[str] = []

    def _tokenize(self, texts: list[str]):
        bm25s = _bm25s()
        stemmer = None
        if self.config["stemmer"]:
            import Stemmer

            stemmer = Stemmer.Stemmer(self.config["stemmer"])
        return bm25s.tokenize(texts, stopwords=self.config["stopwords"], stemmer=stemmer, show_progress=self.show_progress)

    def index(self, docs: Iterable[tuple[str, str]]) -> "BM25Retriever":
        """Index ``(doc id, text)`` pairs (ids unique, corpus non-empty)."""
        bm25s = _bm25s()
        ids, texts = collect_documents(docs)
        tokens = self._tokenize(texts)
        if not tokens.vocab:
            raise InputFormatError("the corpus has no indexable terms (every token is a stopword or too short)")
        self._model = bm25s.BM25(k1=self.config["k1"], b=self.config["b"], method=self.config["method"])
        self._model.index(tokens, show_progress=self.show_progress)
        self.doc_ids = ids
        return self

    def search(self, queries: Sequence[Query], k: int = 1000, exclude: Sequence[Collection[str]] | None = None) -> list[Ranking]:
        """Top-``k`` (doc id, score) per query, best first, without each query's ``exclude`` ids."""
        if self._model is None:
            raise RuntimeError("index documents (or load an index) before searching")
        check_search_args(queries, k, exclude)
        if not queries:
            return []
        depth = min(search_depth(k, exclude), len(self.doc_ids))
        docs, scores = self._model.retrieve(
            self._tokenize([query_text(q) for q in queries]),
            k=depth,
            backend_selection="numpy",
            show_progress=self.show_progress,
            n_threads=1,
        )
        rankings = []
        for row, (row_docs, row_scores) in enumerate(zip(docs, scores)):
            candidates = ((self.doc_ids[d], float(s)) for d, s in zip(row_docs, row_scores) if s > 0)
            rankings.append(drop_excluded(candidates, exclude[row] if exclude else (), k))
        return rankings

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index, document ids and settings to ``directory``."""
        if self._model is None:
            raise RuntimeError("nothing to save: the retriever has no index")
        path = write_index_meta(directory, "bm25", **self.config, doc_ids=self.doc_ids)
        self._model.save(str(path / "bm25s"))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "BM25Retriever":
        """Load an index written by :meth:`save`."""
        bm25s = _bm25s()
        meta = read_index_meta(directory, "bm25")
        doc_ids = meta.pop("doc_ids")
        retriever = cls(**meta)
        retriever._model = bm25s.BM25.load(str(Path(directory) / "bm25s"))
        retriever.doc_ids = doc_ids
        return retriever
