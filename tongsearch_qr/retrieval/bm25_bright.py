"""BRIGHT's exact BM25: pyserini's Lucene analyzer and gensim's ``LuceneBM25Model(k1=0.9, b=0.4)``
weights on BOTH documents and queries, scored by dot product, on sparse matrices.

BRIGHT (and the TongSearch-QR paper) build a gensim ``Dictionary``, weight every document and query
with ``LuceneBM25Model`` and score with ``SparseMatrixSimilarity``: per query a dense pass over the
whole corpus, then a Python sort. Here the same arithmetic runs as sparse matrix products: term ids
are assigned in gensim's order and weights computed with the same float64 expression, stored as
float32 like gensim, so scores are bit-for-bit those of BRIGHT's code. Rankings sort by score, then
corpus order (BRIGHT's stable sort), and are padded with zero-score documents as BRIGHT's are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .base import Query, Ranking, check_search_args, collect_documents, query_text, read_index_meta, write_index_meta
from .lucene import analyze, analyze_ids


class BrightBM25Retriever:
    """BM25 exactly as BRIGHT scores it (needs the ``pyserini`` extra for the Lucene analyzer). A
    :class:`~tongsearch_qr.query_terms.TermQuery` is weighted as its words repeated by weight."""

    takes_terms = True

    def __init__(self, k1: float = 0.9, b: float = 0.4, query_batch_size: int = 256, show_progress: bool = False):
        self.k1, self.b, self.query_batch_size, self.show_progress = k1, b, query_batch_size, show_progress
        self.doc_ids: list[str] = []
        self.vocabulary: dict[str, int] = {}
        self.idfs: np.ndarray | None = None
        self.avgdl = 0.0
        self.weights: sp.csc_matrix | None = None  # terms x documents, float32

    def index(self, docs: Iterable[tuple[str, str]]) -> "BrightBM25Retriever":
        """Analyse and weight ``(doc id, text)`` pairs."""
        from .bm25_bright_kernels import count_terms, first_documents

        ids, texts = collect_documents(docs)
        terms, lengths, vocabulary = analyze_ids(texts, show_progress=self.show_progress)
        # gensim's Dictionary numbers new terms document by document, each document's new terms sorted
        first = first_documents(terms, lengths, len(vocabulary))
        order = np.lexsort((np.array(vocabulary, dtype=object).astype(str), first))
        order = order[first[order] < len(ids)]  # a term in no document (only in a piece the JVM redid) is none
        new_id = np.full(len(vocabulary), -1, dtype=np.int32)
        new_id[order] = np.arange(len(order), dtype=np.int32)
        self.vocabulary = {vocabulary[i]: k for k, i in enumerate(order.tolist())}

        indptr, indices, freq = count_terms(new_id[terms], lengths, len(order))
        tf = sp.csr_matrix((freq, indices, indptr), shape=(len(ids), len(order)))
        num_docs = len(ids)
        self.avgdl = float(lengths.sum()) / num_docs
        dfs = np.bincount(tf.indices, minlength=len(order))
        log_n = math.log(num_docs + 1.0)
        self.idfs = np.array([log_n - math.log(df + 0.5) for df in dfs.tolist()])
        self.weights = self._weigh(tf, lengths).T.tocsr()
        self.doc_ids = ids
        return self

    def _weigh(self, tf: sp.csr_matrix, lengths: np.ndarray) -> sp.csr_matrix:
        """gensim's LuceneBM25Model term weights (float32) of the rows of ``tf``, with their lengths."""
        from .bm25_bright_kernels import weigh

        weights = weigh(tf.indptr, tf.indices, tf.data, lengths, self.idfs, self.k1, self.b, self.avgdl)
        return sp.csr_matrix((weights, tf.indices, tf.indptr), shape=tf.shape)

    def _query_matrix(self, queries: Sequence[Query]) -> sp.csr_matrix:
        rows, cols = [], []
        for row, tokens in enumerate(analyze([query_text(q) for q in queries])):
            known = [self.vocabulary[t] for t in tokens if t in self.vocabulary]
            rows.extend([row] * len(known))
            cols.extend(known)
        tf = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(queries), len(self.vocabulary)))
        tf.sum_duplicates()
        tf.sort_indices()
        return self._weigh(tf, np.asarray(tf.sum(axis=1)).ravel())

    def search(self, queries: Sequence[Query], k: int = 1000, exclude: Sequence[Collection[str]] | None = None) -> list[Ranking]:
        """Top-``k`` (doc id, score) per query, BRIGHT's order, without each query's ``exclude`` ids."""
        if self.weights is None:
            raise RuntimeError("index documents (or load an index) before searching")
        check_search_args(queries, k, exclude)
        position = {doc: i for i, doc in enumerate(self.doc_ids)} if exclude else {}
        from tqdm.auto import tqdm

        rankings: list[Ranking] = []
        batches = range(0, len(queries), self.query_batch_size)
        for start in tqdm(batches, desc="searching", unit="batch", disable=not self.show_progress):
            scores = (self._query_matrix(queries[start : start + self.query_batch_size]) @ self.weights).tocsr()
            for offset in range(scores.shape[0]):
                row = start + offset
                banned = {position[d] for d in exclude[row] if d in position} if exclude else set()
                rankings.append(self._rank(scores, offset, banned, k))
        return rankings

    def _rank(self, scores: sp.csr_matrix, row: int, banned: set[int], k: int) -> Ranking:
        lo, hi = scores.indptr[row], scores.indptr[row + 1]
        docs, values = scores.indices[lo:hi], scores.data[lo:hi]
        keep = values != 0
        if banned:
            keep &= ~np.isin(docs, np.fromiter(banned, dtype=np.int64))
        docs, values = docs[keep], values[keep]
        if len(docs) > k:
            top = np.argpartition(-values, k - 1)[:k]
            cutoff = values[top].min()  # keep every document tied with the k-th, then order
            top = np.flatnonzero(values >= cutoff)
            docs, values = docs[top], values[top]
        order = np.lexsort((docs, -values))[:k]
        ranking = list(zip(map(self.doc_ids.__getitem__, docs[order].tolist()), values[order].tolist()))
        if len(ranking) < k:  # BRIGHT ranks every document: zero scores follow in corpus order
            taken = set(docs.tolist()) | banned
            for d in range(len(self.doc_ids)):
                if len(ranking) == k:
                    break
                if d not in taken:
                    ranking.append((self.doc_ids[d], 0.0))
        return ranking

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write weights, vocabulary, statistics and document ids to ``directory``."""
        if self.weights is None or self.idfs is None:
            raise RuntimeError("nothing to save: the retriever has no index")
        path = write_index_meta(
            directory, "bm25-bright", k1=self.k1, b=self.b, avgdl=self.avgdl, doc_ids=self.doc_ids, vocabulary=self.vocabulary
        )
        sp.save_npz(path / "weights.npz", self.weights)
        np.save(path / "idfs.npy", self.idfs)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "BrightBM25Retriever":
        """Load an index written by :meth:`save`."""
        meta = read_index_meta(directory, "bm25-bright")
        path = Path(directory)
        retriever = cls(meta["k1"], meta["b"])
        retriever.avgdl, retriever.doc_ids, retriever.vocabulary = meta["avgdl"], meta["doc_ids"], meta["vocabulary"]
        retriever.idfs = np.load(path / "idfs.npy")
        retriever.weights = sp.load_npz(path / "weights.npz").tocsr()
        return retriever
