"""Retrieval collections: BRIGHT (hub, local parquet, shared jsonl), BEIR layout, Q/A JSONL, TREC files."""

from .beir import load_beir
from .bright import BRIGHT_TASKS, EVALUATION_ONLY_TASKS, STACKEXCHANGE_TASKS, bright_answers, load_bright, load_bright_answers
from .collection import Collection
from .qa import load_qa, read_qa_pairs
from .trec import read_qrels, read_run, write_qrels, write_run

__all__ = [
    "BRIGHT_TASKS",
    "EVALUATION_ONLY_TASKS",
    "STACKEXCHANGE_TASKS",
    "bright_answers",
    "Collection",
    "load_beir",
    "load_bright",
    "load_bright_answers",
    "load_qa",
    "read_qa_pairs",
    "read_qrels",
    "read_run",
    "write_qrels",
    "write_run",
]
