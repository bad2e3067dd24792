"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def bright_queries(task: str = "biology", limit: int | None = None) -> list[str]:
    """Query texts of a BRIGHT task from ../shared/data/bright/examples (real data)."""
    path = SHARED_DATA / "bright" / "examples" / f"{task}.jsonl.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmarks read the shared data beside the repository")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        queries = [json.loads(line)["query"] for line in handle]
    return queries[:limit] if limit else queries


def load_collection(name: str, limit: int | None = None):
    """SciFact test (``scifact``) or a StackExchange site's Q/A (e.g. ``matheducators``), its first ``limit``
    queries when given."""
    from tongsearch_qr.data import Collection, load_beir, load_qa

    collection = load_beir(SHARED_DATA / "scifact") if name == "scifact" else \
        load_qa(SHARED_DATA / "stackexchange-qa" / name / "qa_pairs.jsonl")
    if limit:
        kept = list(collection.queries)[:limit]
        collection = Collection(collection.name, {q: collection.queries[q] for q in kept},
                                {q: collection.qrels[q] for q in kept if q in collection.qrels}, collection.documents,
                                collection.excluded)
    return collection
