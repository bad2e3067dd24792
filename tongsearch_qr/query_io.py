"""Reading query files (JSONL, TSV, BRIGHT examples; optionally gzipped) and writing reasoning JSONL."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InputFormatError


@dataclass(frozen=True)
class QueryRecord:
    """One query of an input file; ``query`` may be unusable (validated later), ``line`` is 1-based."""

    id: str
    query: object
    line: int


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".json", ".ndjson"))


def read_queries(path: str | os.PathLike[str]) -> list[QueryRecord]:
    """Queries of a JSONL file (``{"id","query"}``, ``{"_id","text"}`` or a BRIGHT examples file) or a
    TSV file (``id<TAB>query``). Raises :class:`InputFormatError` with the line number of any bad line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFormatError(f"query file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with _open_text(path) as handle:
            records = _read_jsonl(handle, path) if _is_jsonl(path) else _read_tsv(handle, path)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise InputFormatError(f"{path} cannot be read as UTF-8 text: {exc}") from exc
    if not records:
        raise InputFormatError(f"query file {path} holds no queries")
    seen: dict[str, int] = {}
    for record in records:
        if record.id in seen:
            raise InputFormatError(f"{path}:{record.line}: duplicate query id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = record.line
    return records


def jsonl_objects(handle: Iterable[str], path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL stream; a clear error naming
    ``path:line`` for a line that is not JSON or not a JSON object."""
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputFormatError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def _read_jsonl(handle: Iterable[str], path: Path) -> list[QueryRecord]:
    records = []
    for number, obj in jsonl_objects(handle, path):
        if "id" in obj and "query" in obj:
            qid, query = obj["id"], obj["query"]
        elif "_id" in obj and "text" in obj:
            qid, query = obj["_id"], obj["text"]
        else:
            raise InputFormatError(f"{path}:{number}: needs fields 'id' and 'query' (or '_id' and 'text'); has {sorted(obj)}")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise InputFormatError(f"{path}:{number}: query id must be a string or integer, got {qid!r}")
        records.append(QueryRecord(str(qid), query, number))
    return records


def _read_tsv(handle: Iterable[str], path: Path) -> list[QueryRecord]:
    records = []
    for number, line in enumerate(handle, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        qid, sep, query = line.partition("\t")
        if not sep:
            raise InputFormatError(f"{path}:{number}: expected 'id<TAB>query'; no tab found")
        if not qid.strip():
            raise InputFormatError(f"{path}:{number}: empty query id")
        records.append(QueryRecord(qid.strip(), query, number))
    return records


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write rows as JSON lines atomically (a temporary file renamed into place)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
