"""What every retriever provides, and helpers they share."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import InputFormatError
from ..query_terms import TermQuery

#: ranked (doc id, score) pairs, best first
Ranking = list[tuple[str, float]]
#: what a retriever searches: a text, or (BM25 retrievers) words with weights
Query = str | TermQuery


@runtime_checkable
class Retriever(Protocol):
    """Index ``(doc id, text)`` pairs, then search batches of queries; saveable to a directory. Retrievers whose
    ``takes_terms`` is true (the BM25 ones) also search :class:`~tongsearch_qr.query_terms.TermQuery` queries."""

    takes_terms: bool

    def index(self, docs: Iterable[tuple[str, str]]) -> "Retriever": ...

    def search(
        self, queries: Sequence[Query], k: int = 1000, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Ranking]: ...

    def save(self, directory: str | os.PathLike[str]) -> None: ...


def collect_documents(docs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Materialise ``(id, text)`` pairs as two lists, rejecting an empty corpus, duplicate ids and non-text."""
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for position, pair in enumerate(docs):
        try:
            doc_id, text = pair
        except (TypeError, ValueError):
            raise InputFormatError(f"document #{position} is not an (id, text) pair: {pair!r:.80}") from None
        doc_id = str(doc_id)
        if doc_id in seen:
            raise InputFormatError(f"duplicate document id {doc_id!r} (document #{position})")
        if not isinstance(text, str):
            raise InputFormatError(f"document {doc_id!r} has no text ({type(text).__name__})")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise InputFormatError("cannot index an empty corpus")
    return ids, texts


def check_search_args(queries: Sequence[Query], k: int, exclude: Sequence[Collection[str]] | None, terms: bool = True) -> None:
    """Validate the arguments of ``search`` (``terms``: whether the retriever takes :class:`TermQuery` queries)."""
    if isinstance(queries, (str, TermQuery)):
        raise TypeError("pass a list of queries, not a single query")
    wrong = next((q for q in queries if not isinstance(q, (str, TermQuery) if terms else str)), None)
    if wrong is not None:
        kind = "texts or TermQuery objects" if terms else "texts (this retriever embeds text: pass the rewrite's text)"
        raise TypeError(f"queries must be {kind}, not {type(wrong).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None and len(exclude) != len(queries):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")


def query_text(query: Query) -> str:
    """The text a retriever that counts repeated words analyses: a text as it is, a :class:`TermQuery`'s words
    repeated in proportion to their weights."""
    return query.as_repeated() if isinstance(query, TermQuery) else query


def search_depth(k: int, exclude: Sequence[Collection[str]] | None) -> int:
    """How deep to search so that ``k`` results are left after removing any query's excluded ids."""
    return k + max((len(e) for e in exclude), default=0) if exclude else k


def drop_excluded(candidates: Iterable[tuple[str, float]], excluded: Collection[str], k: int) -> Ranking:
    """The first ``k`` candidates not in ``excluded``."""
    ranking: Ranking = []
    for doc_id, score in candidates:
        if doc_id not in excluded:
            ranking.append((doc_id, score))
            if len(ranking) == k:
                break
    return ranking


def write_index_meta(directory: str | os.PathLike[str], kind: str, **fields: Any) -> Path:
    """Create ``directory`` and write ``retriever.json`` (the index kind and its settings) into it."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "retriever.json").write_text(json.dumps({"type": kind, **fields}))
    return path


def read_index_meta(directory: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """The settings saved by :func:`write_index_meta`, checking the index is of ``kind``."""
    path = Path(directory)
    meta_file = path / "retriever.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no saved {kind} index (retriever.json missing)")
    meta = json.loads(meta_file.read_text())
    if meta.pop("type", None) != kind:
        raise ValueError(f"{path} holds another kind of index, not {kind}")
    return meta
