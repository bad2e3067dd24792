"""Retrievers that take the (rewritten) queries: ranked (doc id, score) lists per query."""

from .bm25 import BM25Retriever

__all__ = ["BM25Retriever"]
