"""Question/answer JSONL files (e.g. ``stackexchange-qa/<site>/qa_pairs.jsonl``): one reader for training
examples and for evaluation collections, where each question must find its accepted answer among all the
file's answers (the shape of BRIGHT's StackExchange tasks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputFormatError
from ..query_io import jsonl_objects
from .collection import Collection

QUESTION_FIELDS = ("title", "question_body")
ANSWER_FIELD = "answer_body"


@dataclass(frozen=True)
class QAPair:
    """One question (its ``question_fields`` joined by a blank line), its answer, and their ids in the file."""

    question_id: str
    question: str
    answer_id: str
    answer: str


def read_qa_pairs(
    path: str | os.PathLike[str], *, question_fields: Sequence[str] = QUESTION_FIELDS, answer_field: str = ANSWER_FIELD
) -> list[QAPair]:
    """The pairs of a Q/A JSONL file; a missing field is an error naming ``path:line``. Ids default to the
    line number when the file has no ``question_id`` / ``answer_id``."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"Q/A file {path} does not exist")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for line_no, row in jsonl_objects(handle, path):
            missing = [f for f in (*question_fields, answer_field) if f not in row]
            if missing:
                raise InputFormatError(f"{path}:{line_no}: missing field(s) {missing}")
            question = "\n\n".join(str(row[f]).strip() for f in question_fields if str(row[f] or "").strip())
            pairs.append(
                QAPair(
                    str(row.get("question_id", line_no)),
                    question,
                    str(row.get("answer_id", f"a{line_no}")),
                    str(row[answer_field] or ""),
                )
            )
    return pairs


def load_qa(path: str | os.PathLike[str]) -> Collection:
    """A Q/A JSONL file as a collection: every answer is a document, every question is judged against its own."""
    path = Path(path).expanduser()
    pairs = read_qa_pairs(path)
    if not pairs:
        raise InputFormatError(f"Q/A file {path} holds no pairs")
    queries = {p.question_id: p.question for p in pairs}
    qrels = {p.question_id: {p.answer_id: 1} for p in pairs}
    if len(queries) != len(pairs):
        raise InputFormatError(f"{path}: question ids repeat")
    return Collection(f"qa:{path.parent.name}", queries, qrels, lambda: ((p.answer_id, p.answer) for p in pairs))
