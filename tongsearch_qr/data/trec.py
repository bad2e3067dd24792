"""TREC run and qrels files. Document ids may contain spaces (BRIGHT stackoverflow), so lines are
split from both ends, never on all whitespace."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputFormatError
from ..metrics import trec_ranking


def write_run(path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str = "tongsearch-qr") -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first per query; documents with equal scores keep
    the order they have in ``run`` (the retriever's tie order, e.g. BRIGHT's). Scores are written in full and
    strictly decreasing (:func:`~tongsearch_qr.metrics.trec_ranking`), so trec_eval ranks in this order too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in run.items():
            for rank, (doc, score) in enumerate(trec_ranking(docs, qid), 1):
                out.write(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")


def read_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run file."""
    run: dict[str, dict[str, float]] = {}
    for number, line in _lines(path):
        head = line.split(maxsplit=2)
        tail = head[2].rsplit(maxsplit=3) if len(head) == 3 else []
        if len(tail) != 4:
            raise InputFormatError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
        try:
            run.setdefault(head[0], {})[tail[0]] = float(tail[2])
        except ValueError:
            raise InputFormatError(f"{path}:{number}: score {tail[2]!r} is not a number") from None
    return run


def write_qrels(path: str | os.PathLike[str], qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Write ``qid 0 docid grade`` lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in qrels.items():
            for doc, grade in docs.items():
                out.write(f"{qid} 0 {doc} {grade}\n")


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a TREC qrels file (``qid iter docid grade``; tabs or spaces)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        head = line.split(maxsplit=2)
        tail = head[2].rsplit(maxsplit=1) if len(head) == 3 else []
        if len(tail) != 2:
            raise InputFormatError(f"{path}:{number}: expected 'qid 0 docid grade'")
        try:
            qrels.setdefault(head[0], {})[tail[0]] = int(tail[1])
        except ValueError:
            raise InputFormatError(f"{path}:{number}: grade {tail[1]!r} is not an integer") from None
    return qrels


def _lines(path: str | os.PathLike[str]):
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path} does not exist")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line.rstrip("\r\n")
