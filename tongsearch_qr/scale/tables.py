"""Query files in (JSONL, TSV or Parquet) and reasoning files out (JSONL or Parquet), the same fields either way."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import InputFormatError
from ..modes import RewriteMode
from ..query_io import QueryRecord, read_queries, write_jsonl

#: the column pairs a query table may hold: (id, query)
QUERY_COLUMNS = (("id", "query"), ("_id", "text"))


def query_columns(names: Sequence[str], source: str) -> tuple[str, str]:
    """The ``(id, query)`` pair of :data:`QUERY_COLUMNS` that a table with columns ``names`` holds, or an error
    naming ``source``."""
    columns = next((pair for pair in QUERY_COLUMNS if set(pair) <= set(names)), None)
    if columns is None:
        raise InputFormatError(f"{source} needs columns 'id' and 'query' (or '_id' and 'text'); has {list(names)}")
    return columns


def is_parquet(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in (".parquet", ".pq")


def read_query_file(path: str | os.PathLike[str]) -> list[QueryRecord]:
    """The queries of a JSONL/TSV file (see :func:`~tongsearch_qr.query_io.read_queries`) or of a Parquet file
    with columns ``id, query`` (or ``_id, text``); ``line`` of a Parquet query is its row number, from 1."""
    if not is_parquet(path):
        return read_queries(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFormatError(f"query file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        columns = query_columns(pq.read_schema(path).names, str(path))
        table = pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise InputFormatError(f"{path} cannot be read as Parquet: {exc}") from exc
    return query_records(zip(*(table.column(name).to_pylist() for name in columns)), str(path))


def query_records(pairs: Iterable[tuple[object, object]], source: str) -> list[QueryRecord]:
    """Records of ``(id, query)`` pairs (``line``: the position, from 1), checked as a query file is: ids are
    strings or integers, none twice, and there is at least one."""
    records: list[QueryRecord] = []
    seen: dict[str, int] = {}
    for line, (qid, query) in enumerate(pairs, 1):
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise InputFormatError(f"{source}: row {line}: query id must be a string or integer, got {qid!r}")
        if str(qid) in seen:
            raise InputFormatError(f"{source}: row {line}: duplicate query id {qid!r} (first on row {seen[str(qid)]})")
        seen[str(qid)] = line
        records.append(QueryRecord(str(qid), query, line))
    if not records:
        raise InputFormatError(f"{source} holds no queries")
    return records


def reasoning_rows(
    records: Sequence[QueryRecord], samples: Sequence[Sequence[str]], mode: RewriteMode
) -> list[dict[str, object]]:
    """One output row per query: ``id, query, reasoning, rewritten`` and, with several samples, ``samples``."""
    rows: list[dict[str, object]] = []
    for record, texts in zip(records, samples, strict=True):
        query, reasoning = str(record.query), "\n".join(texts)
        rows.append(
            {
                "id": record.id,
                "query": query,
                "reasoning": reasoning,
                "rewritten": mode.apply(query, reasoning),
                **({"samples": list(texts)} if len(texts) > 1 else {}),
            }
        )
    return rows


def write_reasoning(path: str | os.PathLike[str], rows: Sequence[Mapping[str, object]]) -> None:
    """Write reasoning rows atomically: Parquet for a ``.parquet``/``.pq`` path, else JSON lines."""
    if not is_parquet(path):
        write_jsonl(path, rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
