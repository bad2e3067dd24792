"""``tongsearch-qr demo``: BM25 with and without query reasoning, on Python's documentation and on BRIGHT tasks'
gold answers."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from .backends.precomputed import load_reasoning_file
from .data import EVALUATION_ONLY_TASKS, Collection, load_bright_answers
from .demo_data import demo_collection
from .errors import InputFormatError
from .metrics import evaluate, mean
from .modes import get_mode
from .reasoner import QRReasoner
from .retrieval import BM25Retriever

#: where ``make demo`` (run from the repository root) finds the shared BRIGHT examples and the paper's reasoning
SHARED_BRIGHT = Path("../shared/data/bright")
SHARED_PUBLISHED = Path("../shared/data/tongsearch-qr/TongSearch-QR-7B_reasoned_BRIGHT_queries.json")
#: the demo's BRIGHT tasks: where the paper's published 7B reasoning lifts BM25 the most (no training of the shipped
#: reasoner used any BRIGHT task)
BRIGHT_TASKS = ("biology", "earth_science", "psychology")
MEASURES = ("ndcg_cut.10", "recall.10", "recip_rank")


def backend_description(reasoner: QRReasoner) -> str:
    """The backend a reasoner runs on, with its device and dtype where the backend reports them."""
    backend = reasoner.backend
    name = type(backend).__name__.removesuffix("Backend").lower()
    device = getattr(backend, "device", None)
    dtype = getattr(backend, "dtype", None) or getattr(backend, "weights_type", None)
    details = [str(v).removeprefix("torch.") for v in (device, dtype) if v]
    return f"{name} ({', '.join(details)})" if details else name


def run_demo(
    reasoner: QRReasoner, modes: Sequence[str] | None = None, show: int = 3, depth: int = 100, untrained: QRReasoner | None = None
) -> dict[str, dict[str, float]]:
    """Reason about the demo questions, retrieve with BM25 under each mode, print rankings and nDCG@10.

    Rows: ``original`` (the question alone), then each of ``modes`` (default: the reasoner's own mode) with the
    reasoner's reasoning, and, with ``untrained`` (the untrained model, same prompt and decoding), the same modes
    with its reasoning as ``untrained/<mode>``. Returns per-row mean metrics.
    """
    chosen = [get_mode(m) for m in (modes or [reasoner.mode.name])]
    corpus, questions, qrels = demo_collection()
    print(
        f"corpus: {len(corpus)} Python documentation topics (pydoc_data); {len(questions)} questions; "
        f"reasoner on {backend_description(reasoner)}\n"
    )
    retriever = BM25Retriever().index(corpus.items())
    qids, texts = list(questions), list(questions.values())
    reasoners = {"": reasoner, **({"untrained/": untrained} if untrained is not None else {})}
    needed = any(m.with_reasoning for m in chosen)
    reasoning = {prefix: r.reason(texts) if needed else [None] * len(texts) for prefix, r in reasoners.items()}

    rows = {"original": [get_mode("original").apply(q, None) for q in texts]}
    for prefix in reasoners:
        rows.update(
            {
                prefix + mode.name: [mode.apply(q, r) for q, r in zip(texts, reasoning[prefix])]
                for mode in chosen
                if mode.with_reasoning
            }
        )
    runs, per_query = _search(retriever, qids, rows, qrels, depth)

    width = max(map(len, rows)) + 1
    for i, (qid, text) in enumerate(zip(qids, texts)):
        print(f"[{qid}] {text}")
        print(f"      relevant: {', '.join(sorted(qrels[qid]))}")
        for prefix, texts_of in reasoning.items():
            if (reasoned := texts_of[i]) is not None:
                snippet = textwrap.shorten(" ".join(reasoned.split()), 220, placeholder=" …")
                print(f"      {'untrained ' if prefix else ''}reasoning: {snippet}")
        for name in rows:
            top = sorted(runs[name][qid].items(), key=lambda kv: -kv[1])[:show]
            marked = ", ".join(f"{'*' if d in qrels[qid] else ''}{d}" for d, _ in top) or "(nothing)"
            score = per_query[name][qid]["ndcg_cut_10"]
            print(f"      {name:<{width}} nDCG@10 {score:.3f}  top: {marked}")
        print()

    print("mean over questions (* marks relevant documents above)")
    return _print_means(per_query)


class BrightDemoData(NamedTuple):
    """What the BRIGHT table needs, read before any reasoning so that a wrong path fails at once."""

    collections: list[Collection]  #: one per task; empty: the table is skipped (``notes`` says why)
    published: list[list[str]] | None  #: the paper's reasoning of each task's questions, in each collection's order
    published_file: Path | None
    notes: list[str]  #: a line for each part left out, saying how to get it


def bright_demo_data(
    tasks: Sequence[str] = BRIGHT_TASKS, bright_dir: str | Path | None = None, published: str | Path | None = None
) -> BrightDemoData:
    """The gold-answer pools of BRIGHT StackExchange tasks (``bright-answers:<task>``: each task's real questions
    against all its accepted answers, offline) and the paper's published reasoning of their questions.

    ``bright_dir`` (examples in the shared or hub parquet layout, or ``"hub"``) and ``published`` (a JSON object
    mapping each question to its reasoning, covering every question of the tasks) default to the shared copies
    :data:`SHARED_BRIGHT` and :data:`SHARED_PUBLISHED` when those exist; without them the table, or its published
    rows, are left out with a note saying how to get them. Paths given that cannot be read are errors.
    """
    if bright_dir is None and not SHARED_BRIGHT.is_dir():
        return BrightDemoData(
            [],
            None,
            None,
            [
                f"BRIGHT table skipped: no {SHARED_BRIGHT} here; pass --bright-dir DIR (BRIGHT examples as "
                "examples/<task>.jsonl.gz, or the hub's parquet layout) or --bright-dir hub (downloads xlangai/BRIGHT)"
            ],
        )
    collections = [load_bright_answers(task, source=SHARED_BRIGHT if bright_dir is None else bright_dir) for task in tasks]
    if published is None and not SHARED_PUBLISHED.is_file():
        return BrightDemoData(
            collections,
            None,
            None,
            [
                f"published rows skipped: no {SHARED_PUBLISHED} here; pass --published FILE (the paper's reasoning, "
                "TongSearch-QR-7B_reasoned_BRIGHT_queries.json from github.com/bigai-nlco/TongSearch-QR)"
            ],
        )
    path = SHARED_PUBLISHED if published is None else Path(published)
    reasoning = load_reasoning_file(path)
    texts = [q for c in collections for q in c.queries.values()]
    missing = [q for q in texts if q not in reasoning]
    if missing:
        raise InputFormatError(
            f"{path} has no reasoning for {len(missing)} of the {len(texts)} BRIGHT questions of "
            f"{', '.join(tasks)} (e.g. {missing[0][:80]!r}); pass the paper's published file with "
            "--published FILE"
        )
    return BrightDemoData(collections, [[reasoning[q] for q in c.queries.values()] for c in collections], path, [])


def run_bright_demo(
    reasoner: QRReasoner, data: BrightDemoData, stack: str = "haystack", depth: int = 100
) -> dict[str, dict[str, float]] | None:
    """nDCG@10 on the gold-answer pools of :func:`bright_demo_data`, one column per task: BM25 (bm25s) with the
    question alone, the paper's published reasoning (mode ``replace``) and the reasoner in its own mode, each
    rewrite as its term query; then ``stack``'s own BM25 at its defaults (Haystack's ``InMemoryBM25Retriever`` on a
    default store), the question sent as is and the published reasoning through the stack's adapter. Returns the
    mean nDCG@10 per row and task; ``None`` when the table is skipped (its note printed instead)."""
    for note in data.notes:
        print(note)
    if not data.collections:
        return None
    from .backends.precomputed import PrecomputedBackend
    from .evaluation import stacks

    tasks = [c.name.removeprefix("bright-answers:") for c in data.collections]
    held_out = [t for t in tasks if t in EVALUATION_ONLY_TASKS]
    print(
        f"BRIGHT gold-answer pools: each task's questions against all its accepted answers (no training of the "
        f"shipped reasoner used them{'; evaluation-only: ' + ', '.join(held_out) if held_out else ''}); reasoner "
        f"on {backend_description(reasoner)}, mode {reasoner.mode.name}"
    )
    if data.published_file is not None:
        print(f"published: {data.published_file} (the paper's 7B reasoning, mode replace)")
    table: dict[str, dict[str, float]] = {}
    rank_queries = stacks()[stack].load() if stack in stacks() else None
    for i, (task, c) in enumerate(zip(tasks, data.collections)):
        qids = list(c.queries)
        texts = [c.queries[q] for q in qids]
        answers = list(c.iter_documents())
        retriever = BM25Retriever().index(answers)
        rows: dict[str, list] = {"bm25: question": texts}
        published = None
        if data.published is not None:
            published = QRReasoner(
                backend=PrecomputedBackend(dict(zip(texts, data.published[i])), source="published"), mode="replace"
            )
            rows["bm25: published 7B"] = published.rewrite(texts, as_terms=True)
        rows[f"bm25: {'reasoner' if published is None else 'shipped reasoner'}"] = reasoner.rewrite(texts, as_terms=True)
        runs = {name: dict(zip(qids, retriever.search(queries, k=depth))) for name, queries in rows.items()}
        if rank_queries is not None:
            question = QRReasoner(backend=PrecomputedBackend({}, source="no reasoning"))
            runs[f"{stack}: question"] = rank_queries(
                answers, c.queries, question, "original", depth, kind="native", query_form="text"
            )
            if published is not None:
                runs[f"{stack}: published 7B"] = rank_queries(answers, c.queries, published, "replace", depth, kind="native")
        for name, run in runs.items():
            scores = evaluate({q: dict(r) for q, r in run.items()}, c.qrels, MEASURES)
            table.setdefault(name, {})[task] = mean(scores)["ndcg_cut_10"]
    if rank_queries is None:
        print(f"{stack} rows skipped: pip install 'tongsearch-qr[{stack}]'")
    width = max(map(len, table)) + 2
    print("nDCG@10" + " " * (width - 7) + "".join(f"{t:>16}" for t in tasks))
    for name, by_task in table.items():
        print(f"{name:<{width}}" + "".join(f"{by_task[t]:>16.3f}" for t in tasks))
    return table


def _search(
    retriever: BM25Retriever, qids: list[str], rows: Mapping[str, list[str]], qrels: Mapping[str, Mapping[str, int]], depth: int
) -> tuple[dict, dict]:
    """Each row's run (qid -> doc -> score) and per-query metrics."""
    runs, per_query = {}, {}
    for name, rewritten in rows.items():
        rankings = retriever.search(rewritten, k=depth)
        runs[name] = {qid: dict(ranking) for qid, ranking in zip(qids, rankings)}
        per_query[name] = evaluate(runs[name], qrels, MEASURES)
    return runs, per_query


def _print_means(per_query: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {name: mean(values) for name, values in per_query.items()}
    width = max(map(len, summary)) + 2
    print(f"{'row':<{width}}{'nDCG@10':>10}{'Recall@10':>12}{'MRR':>8}")
    for name, metrics in summary.items():
        print(f"{name:<{width}}{metrics['ndcg_cut_10']:>10.3f}{metrics['recall_10']:>12.3f}{metrics['recip_rank']:>8.3f}")
    return summary
