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
