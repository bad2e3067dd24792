"""Retrieval metrics through pytrec_eval (trec_eval's measures and names), of rankings in the order given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def evaluate(run: Run, qrels: Qrels, measures: Iterable[str] = ("ndcg_cut.10",)) -> dict[str, dict[str, float]]:
    """Per-query metrics for every query in ``qrels`` (a query missing from ``run`` scores 0), of each
    query's documents ranked by :func:`trec_ranking` (equal scores in their order in ``run``).

    ``measures`` use trec_eval names (``ndcg_cut.10``, ``recall.100``, ``map``, ``recip_rank``);
    results are keyed like pytrec_eval does (``ndcg_cut_10``).
    """
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(d) for q, d in qrels.items()}, set(measures))
    full_run = {q: dict(trec_ranking(run.get(q, {}), q)) for q in qrels}
    scored = evaluator.evaluate({q: docs for q, docs in full_run.items() if docs})
    names = sorted({name for values in scored.values() for name in values}) or _names(measures)
    return {q: scored.get(q, dict.fromkeys(names, 0.0)) for q in qrels}


def trec_ranking(docs: Mapping[str, float], query: str = "") -> list[tuple[str, float]]:
    """``docs`` best first, equal scores in their order in ``docs`` (the ranking a retriever returned), each
    score that trec_eval would not see below the one before lowered by the fewest steps that make it so.

    trec_eval (and pytrec_eval) read scores as float32 and re-sort equal ones by doc id, ignoring the order
    given; with scores strictly decreasing in float32 they rank in this order, so metrics, run files and the
    returned ranking agree. Other scores are kept as they are; NaN and infinite scores are refused.
    """
    scores = np.fromiter(docs.values(), dtype=np.float64, count=len(docs))
    single = scores.astype(np.float32)
    if not np.isfinite(single).all():
        doc, score = list(docs.items())[int(np.flatnonzero(~np.isfinite(single))[0])]
        raise ValueError(
            f"query {query!r}: document {doc!r} has score {score}; scores must be finite numbers "
            "within float32's range (trec_eval reads them as float32)"
        )
    order = np.argsort(-scores, kind="stable")
    # float32 values as integers in the same order, one apart for neighbouring floats: lowering a score to
    # just below the previous one is then ``min(key, previous - 1)``, in closed form over the whole ranking
    bits = single[order].view(np.int32).astype(np.int64)
    keys = np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))
    steps = np.arange(len(keys))
    lowered = np.minimum.accumulate(keys + steps) - steps
    if len(lowered) and lowered[-1] < -0x7F7FFFFF:  # below float32's lowest finite value
        raise ValueError(f"query {query!r}: too many equal scores next to float32's lowest value to rank them")
    floats = np.where(lowered >= 0, lowered, -lowered | 0x80000000).astype(np.uint32).view(np.float32)
    kept = lowered == keys
    ids = list(docs)
    return [
        (ids[i], float(scores[i]) if keep else float(low)) for i, keep, low in zip(order.tolist(), kept.tolist(), floats.tolist())
    ]


def mean(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries."""
    if not per_query:
        return {}
    names = next(iter(per_query.values())).keys()
    return {n: sum(v[n] for v in per_query.values()) / len(per_query) for n in names}


def _names(measures: Iterable[str]) -> list[str]:
    """pytrec_eval's result names of ``measures`` (``ndcg_cut.1,10`` -> ``ndcg_cut_1``, ``ndcg_cut_10``)."""
    names = []
    for measure in measures:
        base, _, cutoffs = measure.partition(".")
        names += [f"{base}_{c}" for c in cutoffs.split(",")] if cutoffs else [base]
    return names
