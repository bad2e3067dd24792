"""Distillation targets from a stronger model's reasoning (the paper's published 7B and 1.5B reasoning, or any
``{question: reasoning}`` JSON file), shaped for a small student and kept only where they help BM25.

A 135M student will not write 335 good words, so a target is the part of the teacher's reasoning that does the
retrieval work:

- ``text``: the teacher's sentences (Markdown stripped), each scored by how clearly it points BM25 at the
  positives on its own; the best ones, in the teacher's order, up to ``max_words`` words;
- ``terms``: the question's key terms (:mod:`.key_terms`), then the teacher's words that BM25 matches in the
  positives and that the question lacks, rarest first: the vocabulary the question does not name.

With ``filter: gain`` a target is dropped when, sent in the trained mode, it ranks the positives lower than the
question alone does (nDCG@10 in the question's source pool).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.modes import get_mode

from .data import TrainingExample
from .key_terms import KeyTerms, words_of
from .rewards import BM25Rank

log = logging.getLogger(__name__)

_MARKDOWN = re.compile(r"^\s*(#+\s*|[-*+]\s+|\d+[.)]\s+|>\s*)|\*\*|__|`")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def read_teacher(path: Path) -> dict[str, str]:
    """A teacher file: a JSON object mapping question text -> reasoning text."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"cannot read teacher file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputFormatError(f"{path}: a teacher file maps each question text to its reasoning text")
    return data


def sentences(text: str) -> list[str]:
    """The sentences of a teacher's reasoning, Markdown headings, list markers and emphasis removed."""
    found = []
    for line in text.splitlines():
        plain = _MARKDOWN.sub("", line).replace("**", "").strip()
        if plain:
            found += [s.strip() for s in _SENTENCE_END.split(plain) if s.strip()]
    return found


class TargetMaker:
    """Targets of one shape (``text`` or ``terms``) for questions with known positives, scored in ``mode`` over
    each question's source pool (``pools``) or its own pool (positives + negatives) without one."""

    def __init__(
        self,
        target: str,
        *,
        corpus: Sequence[str],
        pools: dict[str, list[str]] | None,
        mode: str,
        question_terms: int = 10,
        teacher_terms: int = 10,
        max_words: int = 64,
    ):
        if target not in ("text", "terms"):
            raise ValueError(f"target must be text or terms, got {target!r}")
        self.target, self.mode = target, get_mode(mode)
        self.question_terms, self.teacher_terms, self.max_words = question_terms, teacher_terms, max_words
        self.terms = KeyTerms(corpus)
        self.ranker = BM25Rank(mode="original", metric="ndcg", gain=False, corpus=pools)

    def gain(self, ex: TrainingExample, question: str, target: str) -> float:
        """nDCG@10 of the positives for the question with ``target`` (in ``mode``) minus the question alone's."""
        with_target, alone = self.ranker.score(
            [self.mode.apply(question, target), question], ex.question, ex.positives, ex.negatives, ex.source
        )
        return with_target - alone

    def of(self, ex: TrainingExample, question: str, teacher: str | None) -> str:
        """The target for ``ex`` (``question`` as the model sees it) from ``teacher``'s reasoning ("" if none)."""
        if self.target == "terms":
            own = self.terms.of(question, ex.positives, self.question_terms) if self.question_terms else ""
            extra = self.teacher_words(question, ex.positives, teacher) if teacher else ""
            words = [w for part in (own, extra) if part for w in part.split(", ")]
            return ", ".join(dict.fromkeys(words))  # a word that carries two terms is said once
        return self.best_sentences(ex, question, teacher) if teacher else ""

    def teacher_words(self, question: str, positives: Sequence[str], teacher: str) -> str:
        """The teacher's words whose BM25 term occurs in a positive and not in the question, rarest first."""
        if not self.teacher_terms:
            return ""
        answer = self.terms.term_set(positives)
        asked = self.terms.term_set([question])
        chosen: dict[str, str] = {}
        for word, term in words_of(teacher, self.terms):
            if term in answer and term not in asked and term not in chosen:
                chosen[term] = word
        return ", ".join(chosen[t] for t in self.terms.rarest_first(chosen)[: self.teacher_terms])

    def best_sentences(self, ex: TrainingExample, question: str, teacher: str) -> str:
        """The teacher's sentences that point at the positives most clearly (the positive's BM25 score over the
        best other document's, with the sentence alone as the query; earlier first on ties), kept in the
        teacher's order up to ``max_words`` words."""
        found = sentences(teacher)
        if not found:
            return ""
        margin = self.ranker.margins(found, ex.question, ex.positives, ex.negatives, ex.source)
        order = sorted(range(len(found)), key=lambda i: (-margin[i], i))
        kept, words = [], 0
        for i in order:
            size = len(found[i].split())
            if words + size > self.max_words:
                if not kept:  # a first sentence longer than the budget: its first max_words words
                    return " ".join(found[i].split()[: self.max_words])
                continue
            kept.append(i)
            words += size
        return " ".join(found[i] for i in sorted(kept))


def distil_targets(
    examples: Sequence[TrainingExample],
    questions: Sequence[str],
    teachers: list[dict[str, str]],
    maker: TargetMaker,
    *,
    filter_gain: bool,
) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """(example index, target) pairs: one per teacher that has the question (two teachers, two targets), kept
    where ``filter_gain`` is off or the target does not lower the positives' nDCG@10; with ``terms`` targets,
    an example no teacher target is kept for gets its key terms alone (when ``question_terms`` > 0)."""
    pairs: list[tuple[int, str]] = []
    stats = {
        "distil/questions": len(examples),
        "distil/teacher_texts": 0,
        "distil/dropped_by_gain": 0,
        "distil/key_terms_only": 0,
        "distil/mean_gain": 0.0,
    }
    gains = []
    for n, (ex, question) in enumerate(zip(examples, questions)):
        kept = 0
        for teacher in teachers:
            text = teacher.get(ex.question)
            if text is None:
                continue
            stats["distil/teacher_texts"] += 1
            target = maker.of(ex, question, text)
            if not target:
                continue
            gain = maker.gain(ex, question, target)
            if filter_gain and gain < 0:
                stats["distil/dropped_by_gain"] += 1
                continue
            gains.append(gain)
            pairs.append((n, target))
            kept += 1
        if not kept and maker.target == "terms" and maker.question_terms:
            target = maker.of(ex, question, None)
            if target:
                pairs.append((n, target))
                stats["distil/key_terms_only"] += 1
    stats["distil/targets"] = len(pairs)
    stats["distil/mean_gain"] = sum(gains) / len(gains) if gains else 0.0
    return pairs, stats


def distil_rows(
    examples: Sequence[TrainingExample],
    questions: Sequence[str],
    teacher_files: Sequence[Path],
    maker: TargetMaker,
    template: Any,
    *,
    filter_gain: bool,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """SFT rows (conversational prompt/completion) of :func:`distil_targets`."""
    teachers = [read_teacher(path) for path in teacher_files]
    known = set().union(*teachers) if teachers else set()
    if not any(ex.question in known for ex in examples):
        raise InputFormatError(
            "distil: no training question has a teacher text (the teacher files map question "
            f"texts exactly as the data has them): {', '.join(map(str, teacher_files))}"
        )
    pairs, stats = distil_targets(examples, questions, teachers, maker, filter_gain=filter_gain)
    rows = [
        {"prompt": template.messages(questions[n]), "completion": [{"role": "assistant", "content": target}]}
        for n, target in pairs
    ]
    log.info(
        "distil: %d targets for %d questions (%d teacher texts, %d dropped for lowering the rank)",
        len(rows),
        len(examples),
        stats["distil/teacher_texts"],
        stats["distil/dropped_by_gain"],
    )
    return rows, stats
