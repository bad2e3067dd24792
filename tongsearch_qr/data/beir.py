"""Collections in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputFormatError
from ..query_io import jsonl_objects
from .collection import Collection

log = logging.getLogger(__name__)


def load_beir(directory: str | os.PathLike[str], split: str = "test", *, ignore_identical_ids: bool = True) -> Collection:
    """Load a BEIR-layout collection; documents are ``title + " " + text``, the judged queries of ``split``.

    ``ignore_identical_ids``: BEIR's evaluation rule (``EvaluateRetrieval.evaluate``'s default): a document whose
    id is the query's id is never ranked for that query (the collection's ``excluded``), which collections whose
    queries are also documents (ArguAna, Quora) depend on."""
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

    name = f"beir:{root.name}"
    if ignore_identical_ids:
        log.info(
            "%s: as in BEIR's evaluation, a document whose id is the query's id is left out of that query's "
            "ranking (--keep-identical-ids keeps it)",
            name,
        )
    else:
        log.info("%s: a document whose id is the query's id is ranked like any other (BEIR's evaluation leaves it out)", name)
    excluded = {qid: {qid} for qid in queries} if ignore_identical_ids else {}
    return Collection(name, queries, qrels, documents, excluded)


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as handle:
        for _, obj in jsonl_objects(handle, path):
            yield obj
