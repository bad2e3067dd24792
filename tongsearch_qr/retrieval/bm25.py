"""BM25 over bm25s sparse matrices, with English stemming and stopwords."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Ranking = list[tuple[str, float]]


class BM25Retriever:
    """BM25 (Lucene variant by default) with Snowball English stemming and English stopwords."""

    def __init__(self, k1: float = 0.9, b: float = 0.4, method: str = "lucene", stemmer: str | None = "english",
                 stopwords: str | None = "en"):
        self.k1, self.b, self.method = k1, b, method
        self.stopwords = stopwords
        self._stemmer_lang = stemmer
        self._model = None
        self.doc_ids: list[str] = []

    def _stemmer(self):
        if self._stemmer_lang is None:
            return None
        import Stemmer

        return Stemmer.Stemmer(self._stemmer_lang)

    def _tokenize(self, texts: list[str], show_progress: bool = False):
        import bm25s

        return bm25s.tokenize(texts, stopwords=self.stopwords, stemmer=self._stemmer(), show_progress=show_progress)

    def index(self, ids: Iterable[str], texts: Iterable[str], *, show_progress: bool = False) -> "BM25Retriever":
        """Index documents (``ids`` and ``texts`` in the same order); ids must be unique."""
        import bm25s

        ids, texts = [str(i) for i in ids], list(texts)
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} document ids but {len(texts)} texts")
        if not ids:
            raise ValueError("cannot index an empty corpus")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate document id {dup!r} in corpus")
        self._model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._model.index(self._tokenize(texts, show_progress), show_progress=show_progress)
        self.doc_ids = ids
        return self

    def search(self, queries: Sequence[str], k: int = 10, *, show_progress: bool = False) -> list[Ranking]:
        """Top-``k`` (doc id, score) per query, best first; documents scoring 0 are left out."""
        if self._model is None:
            raise RuntimeError("index documents before searching")
        k = min(k, len(self.doc_ids))
        tokens = self._tokenize(list(queries), show_progress)
        docs, scores = self._model.retrieve(tokens, k=k, show_progress=show_progress, n_threads=1)
        return [
            [(self.doc_ids[d], float(s)) for d, s in zip(row_docs, row_scores) if s > 0]
            for row_docs, row_scores in zip(docs, scores)
        ]
