"""A retrieval collection: queries, judgments, per-query excluded documents and a document stream."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import InputFormatError

DocumentStream = Callable[[], Iterator[tuple[str, str]]]


@dataclass
class Collection:
    """``queries`` (id -> text), ``qrels`` (id -> {doc id: grade}), ``excluded`` (id -> doc ids that must
    never be ranked, as BRIGHT requires) and ``documents``, a callable yielding ``(doc id, text)``
    pairs (``None`` when the collection's documents are unavailable)."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    documents: DocumentStream | None = None
    excluded: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.qrels) - set(self.queries))
        if unknown:
            raise InputFormatError(f"{self.name}: qrels reference {len(unknown)} unknown queries, e.g. {unknown[:3]}")

    def exclusions(self, qids: Iterable[str]) -> list[set[str]]:
        """The excluded doc ids of each query in ``qids`` (empty sets where none are), for ``search(exclude=...)``."""
        return [self.excluded.get(q, set()) for q in qids]

    def iter_documents(self) -> Iterator[tuple[str, str]]:
        """The documents, with a clear error when the collection has none available."""
        if self.documents is None:
            raise InputFormatError(f"{self.name}: no documents available for this collection")
        return self.documents()
