"""Retrieval experiments: a dataset, a retriever and an optional reasoner, scored with trec_eval measures.

``tongsearch-qr eval`` writes ``metrics.json`` (``{"<task>": {...}, "average": {...}}`` with trec_eval
names such as ``ndcg_cut_10`` and BRIGHT's names such as ``NDCG@10``), ``run.trec``, per-query metrics
and a bar chart of per-task nDCG@10; with ``baseline`` the original queries are run too
(``*.baseline.*`` files) and drawn beside the reasoning, and ``comparison.json`` holds, per collection, the
mean per-query nDCG@10 difference (reasoning - baseline) with its paired bootstrap 95% interval.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import BRIGHT_TASKS, Collection, load_beir, load_bright, load_bright_answers, load_qa, write_run
from .fusion import Fusion, fused_search
from .metrics import evaluate, mean
from .modes import RewriteMode, get_mode
from .retrieval import Ranking, make_retriever

log = logging.getLogger(__name__)

CUTOFFS = (1, 5, 10, 25, 50, 100)
MEASURES = tuple(f"{m}.{','.join(map(str, CUTOFFS))}" for m in ("ndcg_cut", "recall", "map_cut", "P")) + ("map", "recip_rank")
_BRIGHT_NAMES = {"ndcg_cut": "NDCG", "recall": "Recall", "map_cut": "MAP", "P": "P"}


def bright_names(metrics: Mapping[str, float]) -> dict[str, float]:
    """BRIGHT's names for trec_eval metrics (``ndcg_cut_10`` -> ``NDCG@10``, ``recip_rank`` -> ``MRR``)."""
    named = {}
    for key, value in metrics.items():
        base, _, cutoff = key.rpartition("_")
        if base in _BRIGHT_NAMES and cutoff.isdigit():
            named[f"{_BRIGHT_NAMES[base]}@{cutoff}"] = value
        elif key == "recip_rank":
            named["MRR"] = value
    return named


def load_datasets(
    spec: str,
    *,
    bright_dir: str | None = None,
    documents: str | None = None,
    long: bool = False,
    ignore_identical_ids: bool = True,
) -> list[Collection]:
    """``bright:<task>``, ``bright:all``, ``bright-answers:<task>`` (a StackExchange task's questions against
    every gold answer of the task), ``beir:<dir>[@split]`` or ``qa:<file.jsonl>`` (a Q/A file: every question
    against all of its answers) as collections. ``ignore_identical_ids`` (``beir:``): BEIR's rule, a document
    whose id is the query's is not ranked (see :func:`~tongsearch_qr.data.load_beir`)."""
    kind, _, rest = spec.partition(":")
    if kind == "bright" and rest:
        tasks = BRIGHT_TASKS if rest == "all" else [rest]
        return [load_bright(t, source=bright_dir, documents=documents, long=long) for t in tasks]
    if kind == "beir" and rest:
        directory, _, split = rest.partition("@")
        return [load_beir(directory, split or "test", ignore_identical_ids=ignore_identical_ids)]
    if kind == "qa" and rest:
        return [load_qa(rest)]
    if kind == "bright-answers" and rest:
        return [load_bright_answers(rest, source=bright_dir)]
    raise ValueError(
        f"unknown dataset {spec!r}; use bright:<task>, bright:all, bright-answers:<task>, beir:<dir>[@split] or qa:<file.jsonl>"
    )


@dataclass
class RunResult:
    """Rankings and per-query metrics of one collection under one query formulation."""

    run: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, float]]
    summary: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        means = mean(self.per_query)
        self.summary = {**means, **bright_names(means)}

    @classmethod
    def averaged(cls, results: Sequence[RunResult]) -> RunResult:
        """Per-query metrics averaged over ``results`` (e.g. sampled reasoning with several seeds); the run
        kept is the first one's."""
        per_query = {
            q: {m: sum(r.per_query[q][m] for r in results) / len(results) for m in metrics}
            for q, metrics in results[0].per_query.items()
        }
        return cls(results[0].run, per_query)


#: entry-point group where stacks register ``rank_queries(docs, queries, reasoner, mode, k, kind, exclude=qid -> ids,
#: fusion=..., **options)``
STACKS_GROUP = "tongsearch_qr.stacks"


def stacks() -> dict[str, Any]:
    """The stacks ``via`` can name (registered entry points, loaded only when used)."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=STACKS_GROUP)}


def run_collection(
    collection: Collection,
    retriever: str,
    *,
    reasoner: Any = None,
    mode: str | RewriteMode = "replace",
    baseline: bool = False,
    k: int = 1000,
    retriever_options: Mapping[str, Any] | None = None,
    via: str = "core",
    seeds: Sequence[int] | None = None,
    fusion: Fusion | None = None,
    expansion: Mapping[str, Any] | None = None,
    query_form: str = "terms",
) -> dict[str, RunResult]:
    """Search with rewritten queries (``"reasoning"``) when a reasoner is given, and with the original
    queries (``"baseline"``) when asked or when there is no reasoner.

    ``via="core"`` indexes once with the core retriever; ``via`` a stack registered under the
    ``tongsearch_qr.stacks`` entry points (``pyterrier``, ``llama-index``, ``haystack``) runs the same
    reasoner and retriever through that stack's adapter, whose retrievers leave each query's excluded ids
    out (before any fusion, as the core does). ``seeds``: sample the reasoning once per seed and average each query's metrics
    over them (the run files hold the first seed's rankings). ``fusion``: the reasoning run fuses the
    question's ranking (unless ``fusion.with_query`` is off) with one ranking per reasoning sample; through a
    stack, the stack's own fusion does it. A reasoner whose prompt shows retrieved passages (``lamer``) gets
    each query's top passages from the same index (core only). ``expansion`` (without a reasoner): retriever
    options of a query-expanding retriever (RM3: ``{"rm3": True}``) whose run is the ``"reasoning"`` one.
    ``query_form``: what the reasoning run hands a BM25 retriever, the rewrite's ``terms``
    (:class:`~tongsearch_qr.query_terms.TermQuery`, as the stack adapters do) or its ``text`` (as the paper's
    code does); dense retrievers always get the text, and the baseline is the question's text.
    """
    if query_form not in ("terms", "text"):
        raise ValueError(f"query_form must be 'terms' or 'text', got {query_form!r}")
    if retriever == "native" and via == "core":
        raise ValueError("retriever 'native' is a stack's own BM25: give the stack (via pyterrier, llama-index or haystack)")
    qids = list(collection.queries)
    exclude = collection.exclusions(qids)
    formulations: dict[str, tuple[Any, RewriteMode]] = {}
    if reasoner is not None and expansion:
        raise ValueError("expansion is a retriever-side method: run it without a reasoner")
    if reasoner is not None or expansion:
        formulations["reasoning"] = (reasoner or _no_reasoning(), get_mode(mode if reasoner is not None else "original"))
    if "reasoning" not in formulations or baseline:
        formulations["baseline"] = (_no_reasoning(), get_mode("original"))
    texts = [collection.queries[q] for q in qids]
    if via == "core":

        def build(options: Mapping[str, Any]) -> Any:
            log.info("%s: indexing documents with %s %s", collection.name, retriever, dict(options))
            return make_retriever(retriever, **dict(options)).index(collection.iter_documents())

        indexes = {"baseline": build(retriever_options or {})} if "baseline" in formulations or not expansion else {}
        indexes["reasoning"] = build({**(retriever_options or {}), **expansion}) if expansion else indexes["baseline"]

        def search(name: str, formulation_reasoner: Any, formulation_mode: RewriteMode, fused: Fusion | None) -> list[Ranking]:
            index = indexes[name]
            if formulation_reasoner.template.passages:
                formulation_reasoner = formulation_reasoner.with_(
                    feedback=passage_feedback(
                        index, collection, dict(zip(texts, exclude)), formulation_reasoner.template.passages
                    )
                )
            as_terms = name == "reasoning" and query_form == "terms" and index.takes_terms
            if fused is not None:
                return fused_search(
                    index,
                    texts,
                    formulation_reasoner,
                    fused,
                    k=k,
                    mode=formulation_mode,
                    exclude=exclude,
                    progress=True,
                    as_terms=as_terms,
                )
            queries = formulation_reasoner.rewrite(texts, mode=formulation_mode, progress=True, as_terms=as_terms)
            return index.search(queries, k=k, exclude=exclude)
    elif via in (registered := stacks()):
        if expansion or (reasoner is not None and reasoner.template.passages):
            raise ValueError("retriever-side and corpus-feedback methods (rm3, lamer) run through the core (--via core)")
        rank_queries = registered[via].load()
        docs = list(collection.iter_documents())
        excluded = dict(zip(qids, exclude))

        def search(name: str, formulation_reasoner: Any, formulation_mode: RewriteMode, fused: Fusion | None) -> list[Ranking]:
            extra = {"fusion": fused} if fused is not None else {}
            form = query_form if name == "reasoning" else "text"
            by_qid = rank_queries(
                docs,
                collection.queries,
                formulation_reasoner,
                formulation_mode,
                k,
                kind=retriever,
                exclude=excluded,
                query_form=form,
                **extra,
                **dict(retriever_options or {}),
            )
            return [by_qid[q] for q in qids]
    else:
        raise ValueError(f"unknown --via {via!r}; choose core or one of: {', '.join(sorted(registered))}")
    results = {}
    for name, (formulation_reasoner, formulation_mode) in formulations.items():
        variants = [formulation_reasoner]
        if seeds and name == "reasoning":
            variants = [formulation_reasoner.with_(generation=formulation_reasoner.generation.with_(seed=s)) for s in seeds]
        runs = []
        for variant in variants:
            rankings = search(name, variant, formulation_mode, fusion if name == "reasoning" else None)
            run = {qid: dict(ranking) for qid, ranking in zip(qids, rankings)}
            runs.append(RunResult(run, evaluate(run, collection.qrels, MEASURES)))
        results[name] = runs[0] if len(runs) == 1 else RunResult.averaged(runs)
    return results


def passage_feedback(index: Any, collection: Collection, exclude: Mapping[str, Any], depth: int) -> Any:
    """A reasoner's ``feedback``: the texts of each query's top ``depth`` passages from ``index`` (without its
    excluded ids)."""
    texts = dict(collection.iter_documents())

    def feedback(queries: list[str]) -> list[list[str]]:
        rankings = index.search(queries, k=depth, exclude=[exclude.get(q, set()) for q in queries])
        return [[texts[doc] for doc, _ in ranking] for ranking in rankings]

    return feedback


def paired_difference(
    results: Mapping[str, RunResult],
    metric: str = "ndcg_cut_10",
    *,
    confidence: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, str | float] | None:
    """The mean per-query difference ``reasoning - baseline`` in ``metric``, with a paired bootstrap
    ``confidence`` interval (scipy's percentile bootstrap over queries, seeded); ``None`` without both runs."""
    if not {"reasoning", "baseline"} <= set(results):
        return None
    import numpy as np
    from scipy.stats import bootstrap

    reasoning, baseline = results["reasoning"].per_query, results["baseline"].per_query
    diffs = np.array([reasoning[q][metric] - baseline[q][metric] for q in reasoning])
    if len(diffs) > 1 and np.ptp(diffs) > 0:
        ci = bootstrap(
            (diffs,),
            np.mean,
            confidence_level=confidence,
            n_resamples=resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(ci.low), float(ci.high)
    else:  # every query moved by the same amount (often 0): the interval is that point
        low = high = float(diffs.mean()) if len(diffs) else 0.0
    return {
        "metric": metric,
        "queries": len(diffs),
        "mean_difference": float(diffs.mean()) if len(diffs) else 0.0,
        "ci_low": low,
        "ci_high": high,
        "confidence": confidence,
        "wins": int((diffs > 0).sum()),
        "losses": int((diffs < 0).sum()),
    }


def _no_reasoning() -> Any:
    """A reasoner for the ``original`` mode, which never asks for reasoning."""
    from .backends.precomputed import PrecomputedBackend
    from .reasoner import QRReasoner

    return QRReasoner(backend=PrecomputedBackend({}, source="no reasoning"))


def write_results(output: str | os.PathLike[str], results: Mapping[str, Mapping[str, RunResult]]) -> Path:
    """Write metrics, runs, per-query metrics and the nDCG@10 chart; ``results``: collection -> formulation -> result.

    The main files hold the reasoning run when there is one; the baseline goes to ``*.baseline.*``.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    formulations = sorted({f for by_formulation in results.values() for f in by_formulation}, key=lambda f: f != "reasoning")
    for formulation in formulations:
        suffix = "" if formulation == formulations[0] else f".{formulation}"
        per_task = {name: r[formulation] for name, r in results.items() if formulation in r}
        metrics = {name: result.summary for name, result in per_task.items()}
        metrics["average"] = mean(metrics)
        (out / f"metrics{suffix}.json").write_text(json.dumps(metrics, indent=2))
        (out / f"per_query{suffix}.json").write_text(json.dumps({n: r.per_query for n, r in per_task.items()}, indent=1))
        merged_run = {
            f"{name}/{qid}" if len(per_task) > 1 else qid: docs
            for name, result in per_task.items()
            for qid, docs in result.run.items()
        }
        write_run(out / f"run{suffix}.trec", merged_run, tag=formulation)
    comparisons = {name: diff for name, r in results.items() if (diff := paired_difference(r)) is not None}
    if comparisons:
        (out / "comparison.json").write_text(json.dumps(comparisons, indent=2))
    plot_ndcg(out / "ndcg10.png", results)
    return out


def plot_ndcg(path: Path, results: Mapping[str, Mapping[str, RunResult]]) -> None:
    """Bar chart of nDCG@10 per collection, one bar per formulation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    formulations = sorted({f for r in results.values() for f in r}, key=lambda f: f != "baseline")
    width = 0.8 / len(formulations)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4))
    for i, formulation in enumerate(formulations):
        values = [results[n][formulation].summary["ndcg_cut_10"] if formulation in results[n] else 0.0 for n in names]
        bars = ax.bar([x + i * width for x in range(len(names))], values, width, label=formulation)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([x + width * (len(formulations) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels([n.split(":", 1)[-1] for n in names], rotation=30, ha="right")
    ax.set_ylabel("nDCG@10")
    ax.set_ylim(0, 1.15)
    ax.legend(loc="upper right", ncols=len(formulations))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: Mapping[str, Mapping[str, RunResult]], columns: Sequence[str] = ("NDCG@10", "Recall@100")) -> None:
    """Per-collection metrics side by side for each formulation."""
    formulations = sorted({f for r in results.values() for f in r}, key=lambda f: f != "baseline")
    header = f"{'collection':<32}" + "".join(f"{f + ' ' + c:>24}" for f in formulations for c in columns)
    print(header)
    for name, by_formulation in results.items():
        cells = "".join(
            f"{by_formulation[f].summary[c]:>24.4f}" if f in by_formulation else f"{'-':>24}"
            for f in formulations
            for c in columns
        )
        print(f"{name:<32}{cells}")
    for name, by_formulation in results.items():
        if (diff := paired_difference(by_formulation)) is not None:
            print(
                f"{name}: reasoning - baseline nDCG@10 {diff['mean_difference']:+.4f}, "
                f"{diff['confidence']:.0%} paired bootstrap interval [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}] "
                f"over {diff['queries']} queries ({diff['wins']} better, {diff['losses']} worse)"
            )
