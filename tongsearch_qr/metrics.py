"""Retrieval metrics through pytrec_eval (trec_eval's measures and names)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def evaluate(run: Run, qrels: Qrels, measures: Iterable[str] = ("ndcg_cut.10",)) -> dict[str, dict[str, float]]:
    """Per-query metrics for every query in ``qrels`` (a query missing from ``run`` scores 0).

    ``measures`` use trec_eval names (``ndcg_cut.10``, ``recall.100``, ``map``, ``recip_rank``);
    results are keyed like pytrec_eval does (``ndcg_cut_10``).
    """
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(d) for q, d in qrels.items()}, set(measures))
    full_run = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    scored = evaluator.evaluate({q: docs for q, docs in full_run.items() if docs})
    names = sorted({name for values in scored.values() for name in values}) or _names(measures)
    return {q: scored.get(q, dict.fromkeys(names, 0.0)) for q in qrels}


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
