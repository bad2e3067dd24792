"""BRIGHT (Su et al. 2024): 12 reasoning-intensive retrieval tasks, from the hub or local copies.

Local sources: a directory in the Hugging Face parquet layout (``examples/<task>-00000-of-00001.parquet``,
``documents/…``, ``long_documents/…``, columns ``id, content`` for documents) or the layout of the
shared data (``examples/<task>.jsonl.gz`` and TREC ``qrels/<task>.txt``). ``excluded_ids`` are kept
per query so retrievers can remove them from every ranking, exactly as BRIGHT does.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataNotAvailableError, InputFormatError
from ..query_io import jsonl_objects
from .collection import Collection
from .trec import read_qrels

HUB_ID = "xlangai/BRIGHT"
BRIGHT_TASKS = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "leetcode",
    "pony",
    "aops",
    "theoremqa_theorems",
    "theoremqa_questions",
]
#: the tasks whose ``gold_answer`` is a StackExchange accepted answer (the others have none)
STACKEXCHANGE_TASKS = BRIGHT_TASKS[:7]
#: tasks this project only ever evaluates on: never trained, validated or chosen on (training refuses them)
EVALUATION_ONLY_TASKS = ("sustainable_living", "theoremqa_questions", "theoremqa_theorems")
LOCAL_HELP = (
    "use a local copy instead: examples and qrels as in the shared data (examples/<task>.jsonl.gz, "
    "qrels/<task>.txt) or the hub's parquet layout (examples/, documents/, long_documents/ holding "
    "<task>-00000-of-00001.parquet), e.g. `--bright-dir DIR --documents DIR` or "
    "load_bright(task, source=DIR, documents=DIR)"
)


def load_bright(
    task: str,
    *,
    source: str | os.PathLike[str] | None = None,
    documents: str | os.PathLike[str] | None = None,
    long: bool = False,
) -> Collection:
    """Load one BRIGHT task.

    ``source``: a local directory (parquet or shared layout) or ``None``/``"hub"`` for ``xlangai/BRIGHT``.
    ``documents``: a directory in the parquet layout holding the documents, if not in ``source`` (with a
    hub ``source`` and no ``documents`` the hub's documents are used). ``long`` selects
    ``long_documents`` and ``gold_ids_long``.
    """
    split = "long_documents" if long else "documents"
    root = _local_root(source)
    examples = _examples(task, source, ["id", "query", "gold_ids", "gold_ids_long", "excluded_ids"])
    qrels_file = None if root is None or long else root / "qrels" / f"{task}.txt"

    queries: dict[str, str] = {}
    excluded: dict[str, set[str]] = {}
    gold: dict[str, dict[str, int]] = {}
    for row in examples:
        qid = str(row["id"])
        queries[qid] = row["query"]
        excluded[qid] = {d for d in row.get("excluded_ids") or [] if d != "N/A"}
        gold[qid] = {d: 1 for d in row["gold_ids_long" if long else "gold_ids"]}
    qrels = read_qrels(qrels_file) if qrels_file is not None and qrels_file.is_file() else gold

    doc_dir = Path(documents) if documents is not None else root
    if doc_dir is not None and _parquet_files(doc_dir / split, task):
        stream: Any = lambda: _parquet_documents(doc_dir / split, task)  # noqa: E731
    elif documents is not None:
        raise DataNotAvailableError(f"BRIGHT {task}: no {split}/{task}-*.parquet under {documents}")
    elif root is None:
        stream = lambda: ((str(r["id"]), r["content"]) for r in _hub_rows(split, task))  # noqa: E731
    else:
        stream = None  # only examples and qrels are available locally
    return Collection(f"bright:{task}{':long' if long else ''}", queries, qrels, stream, excluded)


def bright_answers(task: str, *, source: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """``(query, gold_answer)`` of each example of a BRIGHT StackExchange task (the accepted answer, BRIGHT's
    ``gold_answer``); ``source`` as in :func:`load_bright`. The other tasks have no gold answers: an error."""
    rows = _examples(task, source, ["query", "gold_answer"])
    pairs = [
        (row["query"], row["gold_answer"])
        for row in rows
        if isinstance(row.get("gold_answer"), str) and row["gold_answer"].strip() not in ("", "N/A")
    ]
    if not pairs:
        raise InputFormatError(
            f"BRIGHT {task} has no gold answers (only the StackExchange tasks do: {', '.join(STACKEXCHANGE_TASKS)})"
        )
    return pairs


def load_bright_answers(task: str, *, source: str | os.PathLike[str] | None = None) -> Collection:
    """A BRIGHT StackExchange task's gold-answer pool as a collection (``bright-answers:<task>``): every
    question against every distinct ``gold_answer`` of the task, its own accepted answer the one relevant
    document. Real questions and real answers, no documents split needed (offline with the shared examples)."""
    rows = _examples(task, source, ["id", "query", "gold_answer"])
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    doc_ids: dict[str, str] = {}
    for row in rows:
        answer = row.get("gold_answer")
        if not isinstance(answer, str) or answer.strip() in ("", "N/A"):
            continue
        qid = str(row["id"])
        queries[qid] = row["query"]
        qrels[qid] = {doc_ids.setdefault(answer, f"answer-{len(doc_ids)}"): 1}
    if not queries:
        raise InputFormatError(
            f"BRIGHT {task} has no gold answers (only the StackExchange tasks do: {', '.join(STACKEXCHANGE_TASKS)})"
        )
    answers = [(doc_id, text) for text, doc_id in doc_ids.items()]
    return Collection(f"bright-answers:{task}", queries, qrels, lambda: iter(answers))


def _examples(task: str, source: str | os.PathLike[str] | None, columns: list[str]) -> Any:
    """A task's example rows from the hub (``source`` ``None``/``"hub"``) or a local copy (there only ``columns``)."""
    if task not in BRIGHT_TASKS:
        raise ValueError(f"unknown BRIGHT task {task!r}; choose one of: {', '.join(BRIGHT_TASKS)} (or 'all')")
    root = _local_root(source)
    if root is None:
        return _hub_rows("examples", task)
    return _local_examples(root, task, columns)


def _local_root(source: str | os.PathLike[str] | None) -> Path | None:
    """The local directory ``source`` names, or ``None`` for the hub (``source`` ``None`` or ``"hub"``)."""
    return None if source is None or str(source) == "hub" else Path(source)


def _local_examples(root: Path, task: str, columns: list[str]) -> list[dict]:
    """The task's examples from a local copy (parquet: only ``columns``, which must exist except gold_ids_long)."""
    if not root.is_dir():
        raise DataNotAvailableError(f"BRIGHT directory {root} does not exist")
    parquet = _parquet_files(root / "examples", task)
    if parquet:
        return [row for path in parquet for row in _read_parquet(path, columns)]
    for name in (f"{task}.jsonl.gz", f"{task}.jsonl"):
        path = root / "examples" / name
        if path.is_file():
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as handle:
                try:
                    return [obj for _, obj in jsonl_objects(handle, path)]
                except (OSError, EOFError) as exc:
                    raise InputFormatError(f"{path}: unreadable BRIGHT examples ({exc})") from exc
    raise DataNotAvailableError(f"BRIGHT {task}: no examples/{task}-*.parquet or examples/{task}.jsonl(.gz) in {root}")


def _parquet_files(folder: Path, task: str) -> list[Path]:
    return sorted(folder.glob(f"{task}-*.parquet")) if folder.is_dir() else []


def _read_parquet(path: Path, columns: list[str]) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        missing = [c for c in columns if c not in handle.schema_arrow.names]
        if missing and set(missing) != {"gold_ids_long"}:
            raise InputFormatError(f"{path}: missing columns {missing}; has {handle.schema_arrow.names}")
        present = [c for c in columns if c in handle.schema_arrow.names]
        for batch in handle.iter_batches(columns=present, batch_size=4096):
            yield from batch.to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFormatError(f"{path}: not a readable parquet file ({exc})") from exc


def _parquet_documents(folder: Path, task: str) -> Iterator[tuple[str, str]]:
    for path in _parquet_files(folder, task):
        for row in _read_parquet(path, ["id", "content"]):
            yield str(row["id"]), row["content"]


def _hub_rows(config: str, task: str):
    from ..hub import hub_offline, hub_unreachable

    reason = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set" if hub_offline() else hub_unreachable()
    if reason:
        raise DataNotAvailableError(f"cannot load {HUB_ID} ({config}, {task}) from the hub: {reason}; {LOCAL_HELP}")
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise DataNotAvailableError(f"loading {HUB_ID} from the hub needs `pip install datasets`; {LOCAL_HELP}") from exc
    try:
        return load_dataset(HUB_ID, config, split=task)
    except (OSError, ConnectionError, ValueError) as exc:
        raise DataNotAvailableError(f"cannot load {HUB_ID} ({config}, {task}) from the hub: {exc}; {LOCAL_HELP}") from exc
