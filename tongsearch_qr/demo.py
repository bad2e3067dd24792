"""``tongsearch-qr demo``: BM25 over Python's documentation, with and without query reasoning."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from .demo_data import demo_collection
from .metrics import evaluate, mean
from .modes import get_mode
from .reasoner import QRReasoner
from .retrieval import BM25Retriever


def run_demo(reasoner: QRReasoner, modes: Sequence[str] | None = None, show: int = 3, depth: int = 100,
             untrained: QRReasoner | None = None) -> dict[str, dict[str, float]]:
    """Reason about the demo questions, retrieve with BM25 under each mode, print rankings and nDCG@10.

    Rows: ``original`` (the question alone), then each of ``modes`` (default: the reasoner's own mode) with the
    reasoner's reasoning, and, with ``untrained`` (the untrained model, same prompt and decoding), the same modes
    with its reasoning as ``untrained/<mode>``. Returns per-row mean metrics.
    """
    chosen = [get_mode(m) for m in (modes or [reasoner.mode.name])]
    corpus, questions, qrels = demo_collection()
    print(f"corpus: {len(corpus)} Python documentation topics (pydoc_data); {len(questions)} questions\n")
    retriever = BM25Retriever().index(corpus.items())
    qids, texts = list(questions), list(questions.values())
    reasoners = {"": reasoner, **({"untrained/": untrained} if untrained is not None else {})}
    needed = any(m.with_reasoning for m in chosen)
    reasoning = {prefix: r.reason(texts) if needed else [None] * len(texts) for prefix, r in reasoners.items()}

    rows = {"original": [get_mode("original").apply(q, None) for q in texts]}
    for prefix in reasoners:
        rows.update({prefix + mode.name: [mode.apply(q, r) for q, r in zip(texts, reasoning[prefix])]
                     for mode in chosen if mode.with_reasoning})
    runs, per_query = {}, {}
    for name, rewritten in rows.items():
        rankings = retriever.search(rewritten, k=depth)
        runs[name] = {qid: dict(ranking) for qid, ranking in zip(qids, rankings)}
        per_query[name] = evaluate(runs[name], qrels, ("ndcg_cut.10", "recall.10", "recip_rank"))

    width = max(map(len, rows)) + 1
    for i, (qid, text) in enumerate(zip(qids, texts)):
        print(f"[{qid}] {text}")
        print(f"      relevant: {', '.join(sorted(qrels[qid]))}")
        for prefix, texts_of in reasoning.items():
            if texts_of[i] is not None:
                snippet = textwrap.shorten(" ".join(texts_of[i].split()), 220, placeholder=" …")
                print(f"      {'untrained ' if prefix else ''}reasoning: {snippet}")
        for name in rows:
            top = sorted(runs[name][qid].items(), key=lambda kv: -kv[1])[:show]
            marked = ", ".join(f"{'*' if d in qrels[qid] else ''}{d}" for d, _ in top) or "(nothing)"
            score = per_query[name][qid]["ndcg_cut_10"]
            print(f"      {name:<{width}} nDCG@10 {score:.3f}  top: {marked}")
        print()

    summary = {name: mean(values) for name, values in per_query.items()}
    print("mean over questions (* marks relevant documents above)")
    print(f"{'row':<{width + 1}}{'nDCG@10':>10}{'Recall@10':>12}{'MRR':>8}")
    for name, metrics in summary.items():
        print(f"{name:<{width + 1}}{metrics['ndcg_cut_10']:>10.3f}{metrics['recall_10']:>12.3f}"
              f"{metrics['recip_rank']:>8.3f}")
    return summary
