"""Retrievers that take the (rewritten) queries and return ranked (doc id, score) lists per query.

Created by name with :func:`make_retriever`; each imports its libraries only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Ranking, Retriever
from .bm25 import BM25Retriever

#: retriever name -> "module:class" in this package
RETRIEVERS: dict[str, str] = {
    "bm25": "bm25:BM25Retriever",
    "bm25-bright": "bm25_bright:BrightBM25Retriever",
    "dense": "dense:DenseRetriever",
    "pyserini": "pyserini:PyseriniRetriever",
}


def make_retriever(name: str, **options: Any) -> Retriever:
    """Create the retriever registered as ``name``."""
    try:
        module_name, _, cls_name = RETRIEVERS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown retriever {name!r}; choose one of: {', '.join(RETRIEVERS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), cls_name)(**options)


__all__ = ["RETRIEVERS", "BM25Retriever", "Ranking", "Retriever", "make_retriever"]
