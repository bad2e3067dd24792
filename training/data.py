"""Training data for GRPO: questions with positive documents (and BM25-mined hard negatives), in TRL's
conversational format (``prompt`` messages plus the columns the rewards read).

Sources: a JSON mapping question -> positive text(s) (the seed's format), Q/A JSONL files such as
``stackexchange-qa/<site>/qa_pairs.jsonl`` (the accepted answer is the positive: the paper's V2 data),
BRIGHT's StackExchange tasks (their ``gold_answer``), and, online, the hub dataset
``HuggingFaceH4/stack-exchange-preferences`` (the paper's sampler).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tongsearch_qr.data.bright import bright_answers
from tongsearch_qr.data.qa import ANSWER_FIELD, QUESTION_FIELDS, read_qa_pairs
from tongsearch_qr.errors import DataNotAvailableError, InputFormatError
from tongsearch_qr.prompts import PromptTemplate

PREFERENCES_DATASET = "HuggingFaceH4/stack-exchange-preferences"


@dataclass
class TrainingExample:
    """One question, the documents that answer it, and hard negatives (filled by :func:`mine_negatives`)."""

    question: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    source: str = ""


def check_examples(examples: Sequence[TrainingExample], where: str) -> list[TrainingExample]:
    """Fail clearly on an empty data set, a blank question or a question without positives."""
    if not examples:
        raise InputFormatError(f"{where}: no training examples")
    for n, ex in enumerate(examples):
        if not isinstance(ex.question, str) or not ex.question.strip():
            raise InputFormatError(f"{where}: example #{n} has an empty question")
        if not ex.positives or not all(isinstance(p, str) and p.strip() for p in ex.positives):
            raise InputFormatError(f"{where}: question #{n} ({ex.question[:80]!r}) has no positive document text")
    return list(examples)


def from_mapping(source: str | os.PathLike[str] | dict[str, Any]) -> list[TrainingExample]:
    """Examples from ``{"question": "positive" | ["positive", ...]}`` (a dict or a JSON file of one)."""
    where = "mapping" if isinstance(source, dict) else str(source)
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFormatError(f"cannot read training mapping {source}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputFormatError(f"{where}: expected a JSON object mapping question -> positive text(s)")
    examples = [TrainingExample(q, [p] if isinstance(p, str) else list(p or []), source=where) for q, p in data.items()]
    return check_examples(examples, where)


def from_qa_jsonl(
    paths: Iterable[str | os.PathLike[str]],
    *,
    question_fields: Sequence[str] = QUESTION_FIELDS,
    answer_field: str = ANSWER_FIELD,
    limit_per_file: int | None = None,
) -> list[TrainingExample]:
    """Examples from Q/A JSONL files (:func:`tongsearch_qr.data.read_qa_pairs`): question = the
    ``question_fields`` joined by a blank line, positive = ``answer_field``. The file's parent directory name
    is kept as ``source`` (the StackExchange site)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    examples: list[TrainingExample] = []
    for path in paths:
        rows = [
            TrainingExample(p.question, [p.answer], source=path.parent.name)
            for p in read_qa_pairs(path, question_fields=question_fields, answer_field=answer_field)
        ]
        examples += rows[:limit_per_file] if limit_per_file else rows
    return check_examples(examples, ", ".join(map(str, paths)) or "Q/A files")


def from_bright(tasks: Sequence[str], source: str | os.PathLike[str] | None = None) -> list[TrainingExample]:
    """Examples from BRIGHT's StackExchange tasks: each query with its accepted answer (``gold_answer``) as the
    positive; ``source`` a local BRIGHT copy (as :func:`tongsearch_qr.data.load_bright`) or ``None`` for the hub.
    The task name is kept as ``source``."""
    if isinstance(tasks, str) or not tasks:
        raise InputFormatError(f"BRIGHT training data needs a list of tasks, got {tasks!r}")
    examples = [
        TrainingExample(query, [answer], source=task) for task in tasks for query, answer in bright_answers(task, source=source)
    ]
    return check_examples(examples, f"BRIGHT {', '.join(tasks)}")


def site_of(domain_url: str) -> str:
    """``https://coffee.stackexchange.com`` -> ``coffee``. (The seed used ``str.strip('https://')``, which strips
    those *characters* from both ends: ``'https://superuser.com'.strip('https://')`` is ``'uperuser.com'``.)"""
    host = domain_url.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return host.removesuffix(".stackexchange.com").removesuffix(".com")


def from_stack_exchange_preferences(
    per_domain: int = 100, *, seed: int = 0, domains: Sequence[str] | None = None, min_score: int = 1
) -> list[TrainingExample]:
    """The paper's sampler over ``HuggingFaceH4/stack-exchange-preferences`` (needs the hub): per site at most
    ``per_domain`` questions, seeded; the positive is the best-scored answer with score >= ``min_score``."""
    from tongsearch_qr.hub import hub_offline, hub_unreachable

    problem = "HF_HUB_OFFLINE is set" if hub_offline() else hub_unreachable()
    if problem:
        raise DataNotAvailableError(
            f"{PREFERENCES_DATASET} needs the Hugging Face hub ({problem}); use local Q/A "
            "JSONL (from_qa_jsonl) or a question->answer JSON mapping instead"
        )
    from datasets import load_dataset

    by_site: dict[str, list[TrainingExample]] = {}
    for row in load_dataset(PREFERENCES_DATASET, split="train", streaming=True):
        site = site_of(row["metadata"][0] if row.get("metadata") else "")
        if domains and site not in domains:
            continue
        answers = [a for a in row.get("answers", []) if a.get("pm_score", 0) >= min_score and a.get("text")]
        if not answers or not row.get("question"):
            continue
        best = max(answers, key=lambda a: a["pm_score"])
        by_site.setdefault(site, []).append(TrainingExample(row["question"], [best["text"]], source=site))
    rng = random.Random(seed)
    examples = []
    for site in sorted(by_site):
        pool = by_site[site]
        examples += rng.sample(pool, min(per_domain, len(pool)))
    return check_examples(examples, PREFERENCES_DATASET)


def mine_negatives(examples: list[TrainingExample], n: int = 30, *, corpus: Sequence[str] | None = None) -> None:
    """Give each example ``n`` hard negatives: the top BM25 hits for its question in ``corpus`` (default: every
    positive of every example) that are not its own positives. In place."""
    from tongsearch_qr.retrieval.bm25 import BM25Retriever

    docs = list(dict.fromkeys(corpus if corpus is not None else (p for ex in examples for p in ex.positives)))
    retriever = BM25Retriever().index((str(i), text) for i, text in enumerate(docs))
    hits = retriever.search([ex.question for ex in examples], k=min(len(docs), n + 8))
    for ex, ranked in zip(examples, hits):
        own = set(ex.positives)
        ex.negatives = [docs[int(doc_id)] for doc_id, _ in ranked if docs[int(doc_id)] not in own][:n]


def split(
    examples: list[TrainingExample], validation_fraction: float = 0.1, *, validation_size: int | None = None
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Deterministic train/validation split by a hash of each question (stable across runs and machines)."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ranked = sorted(examples, key=lambda ex: hashlib.sha256(ex.question.encode()).hexdigest())
    size = validation_size if validation_size is not None else round(len(ranked) * validation_fraction)
    if size >= len(ranked):
        raise ValueError(f"validation size {size} leaves no training examples out of {len(ranked)}")
    return ranked[size:], ranked[:size]


def truncate_question(question: str, tokenizer: Any, max_tokens: int) -> str:
    """``question`` cut to ``max_tokens`` tokens (TRL 1.x no longer truncates prompts)."""
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    return question if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def source_pools(examples: Iterable[TrainingExample]) -> dict[str, list[str]]:
    """Every distinct positive of each source (a StackExchange site, a BRIGHT task): the pool a question ranks
    in with ``pool: source``, as ``eval --dataset qa:FILE`` / ``bright-answers:TASK`` rank."""
    pools: dict[str, dict[str, None]] = {}
    for ex in examples:
        pools.setdefault(ex.source, {}).update(dict.fromkeys(ex.positives))
    return {source: list(docs) for source, docs in pools.items()}


def prompt_dataset(
    examples: Sequence[TrainingExample], template: PromptTemplate, tokenizer: Any, max_question_tokens: int = 384
) -> Any:
    """A ``datasets.Dataset`` in TRL's conversational format: ``prompt`` (chat messages with the question cut
    to ``max_question_tokens``), and ``question``, ``positives``, ``negatives``, ``source`` for the rewards."""
    from datasets import Dataset

    check_examples(examples, "dataset")
    prompts = [template.messages(truncate_question(ex.question, tokenizer, max_question_tokens)) for ex in examples]
    return Dataset.from_dict({"prompt": prompts, **reward_columns(examples)})


def reward_columns(examples: Sequence[TrainingExample]) -> dict[str, list[Any]]:
    """The columns a reward reads, one row per example: ``question``, ``positives``, ``negatives``, ``source``."""
    return {
        "question": [ex.question for ex in examples],
        "positives": [list(ex.positives) for ex in examples],
        "negatives": [list(ex.negatives) for ex in examples],
        "source": [ex.source for ex in examples],
    }


def write_beir(examples: Sequence[TrainingExample], directory: str | os.PathLike[str], split_name: str = "test") -> Path:
    """Write ``examples`` as a BEIR-layout collection (corpus = every pool document, qrels = positives), so
    ``tongsearch-qr eval --dataset beir:<directory>`` scores a trained reasoner on them."""
    root = Path(directory)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    doc_ids: dict[str, str] = {}
    for ex in examples:
        for text in (*ex.positives, *ex.negatives):
            doc_ids.setdefault(text, f"d{len(doc_ids)}")
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for text, doc_id in doc_ids.items():
            handle.write(json.dumps({"_id": doc_id, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for n, ex in enumerate(examples):
            handle.write(json.dumps({"_id": f"q{n}", "text": ex.question}, ensure_ascii=False) + "\n")
    with (root / "qrels" / f"{split_name}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for n, ex in enumerate(examples):
            for text in dict.fromkeys(ex.positives):
                handle.write(f"q{n}\t{doc_ids[text]}\t1\n")
    return root
