"""``tongsearch-qr demo``: BM25 over Python's documentation, with and without query reasoning."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from .demo_data import demo_collection
from .metrics import evaluate, mean
from .modes import get_mode
from .reasoner import QRReasoner
from .retrieval import BM25Retriever


def run_demo(reasoner: QRReasoner, modes: Sequence[str] = ("original", "replace", "concat", "weighted"),
             show: int = 3, depth: int = 100) -> dict[str, dict[str, float]]:
    """Reason about the demo questions, retrieve with BM25 under each mode, print rankings and nDCG@10.

    Returns per-mode mean metrics.
    """
    chosen = [get_mode(m) for m in modes]
    corpus, questions, qrels = demo_collection()
    print(f"corpus: {len(corpus)} Python documentation topics (pydoc_data); {len(questions)} questions\n")
    retriever = BM25Retriever().index(corpus.items())
    qids, texts = list(questions), list(questions.values())
    reasoning = reasoner.reason(texts) if any(m.with_reasoning for m in chosen) else [None] * len(texts)

    runs, per_query = {}, {}
    for mode in chosen:
        rewritten = [mode.apply(q, r) for q, r in zip(texts, reasoning)]
        rankings = retriever.search(rewritten, k=depth)
        runs[mode.name] = {qid: dict(ranking) for qid, ranking in zip(qids, rankings)}
        per_query[mode.name] = evaluate(runs[mode.name], qrels, ("ndcg_cut.10", "recall.10", "recip_rank"))

    for qid, text, reason in zip(qids, texts, reasoning):
        print(f"[{qid}] {text}")
        print(f"      relevant: {', '.join(sorted(qrels[qid]))}")
        if reason is not None:
            snippet = textwrap.shorten(" ".join(reason.split()), 220, placeholder=" …")
            print(f"      reasoning: {snippet}")
        for mode in chosen:
            top = sorted(runs[mode.name][qid].items(), key=lambda kv: -kv[1])[:show]
            marked = ", ".join(f"{'*' if d in qrels[qid] else ''}{d}" for d, _ in top) or "(nothing)"
            score = per_query[mode.name][qid]["ndcg_cut_10"]
            print(f"      {mode.name:<10} nDCG@10 {score:.3f}  top: {marked}")
        print()

    summary = {name: mean(values) for name, values in per_query.items()}
    print("mean over questions (* marks relevant documents above)")
    print(f"{'mode':<12}{'nDCG@10':>10}{'Recall@10':>12}{'MRR':>8}")
    for name, metrics in summary.items():
        print(f"{name:<12}{metrics['ndcg_cut_10']:>10.3f}{metrics['recall_10']:>12.3f}{metrics['recip_rank']:>8.3f}")
    return summary
