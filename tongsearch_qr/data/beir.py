"""Collections in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputFormatError
from ..query_io import jsonl_objects
from .collection import Collection


def load_beir(directory: str | os.PathLike[str], split: str = "test") -> Collection:
    """Load a BEIR-layout collection; documents are ``title + " " + text``, the judged queries of ``split``."""
    root = Path(directory).expanduser()
    corpus, queries_file, qrels_file = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    for required in (corpus, queries_file, qrels_file):
        if not required.is_file():
            raise InputFormatError(f"BEIR collection {root}: missing {required.relative_to(root)}")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if reader.fieldnames is None or not {"query-id", "corpus-id", "score"} <= set(reader.fieldnames):
            raise InputFormatError(f"{qrels_file}: header must be 'query-id corpus-id score'")
        for row in reader:
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    all_queries = {str(q["_id"]): q["text"] for q in _jsonl(queries_file)}
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}

    def documents() -> Iterator[tuple[str, str]]:
        for doc in _jsonl(corpus):
            yield str(doc["_id"]), f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()

    return Collection(f"beir:{root.name}", queries, qrels, documents)


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as handle:
        for _, obj in jsonl_objects(handle, path):
            yield obj
