"""The reasoner in front of each stack's own retriever, at its defaults and wired as README shows: nDCG@10
difference from the question alone, per collection x retriever x reasoner, with paired bootstrap 95% intervals.

    python benchmarks/stacks.py [--collections scifact,nfcorpus,...] [--retrievers bm25,pisa,...]
        [--reasoners default,7b,1.5b] [--dtype auto|float32|bfloat16] [--limit N] [--output DIR]

Collections (shared data): SciFact test, NFCorpus test (evaluation only), the five StackExchange sites (each
question against all the site's answers; ai, beer, coffee and quantumcomputing trained the shipped reasoner,
matheducators is held out) and the seven BRIGHT StackExchange tasks' gold-answer pools (no training used them).
Retrievers, each the stack's own at its defaults (the question alone goes to the same retriever as the user
would send it, the rewrite through the stack's adapter):

- ``bm25``, ``bm25-bright``, ``pyserini``: the core retrievers (bm25s; BRIGHT's exact BM25; pyserini's
  ``LuceneSearcher``), given the rewrite's term query as ``eval`` does;
- ``pisa``, ``pisa-weighted``: PyTerrier, ``QRReasoner() >> PisaIndex(...).bm25()`` and ``.bm25(query_weighted=True)``;
- ``haystack``, ``haystack-okapi``: a ``Pipeline`` of ``QRQueryRewriter`` -> ``InMemoryBM25Retriever`` over a default
  ``InMemoryDocumentStore()`` (BM25L) and one with ``bm25_algorithm="BM25Okapi"``;
- ``llama-index``: ``TransformRetriever(BM25Retriever.from_defaults(nodes=...), QRQueryTransform())``.

Reasoners: ``default`` (the shipped reasoner with its own prompt and mode, ``--decoding greedy`` or its sampling
with ``--seed``; ``--dtype`` pins the engine's precision, as every figure for it must hold on a CPU without native
bf16 too: ``--dtype float16`` is what llama.cpp runs there), ``question-terms`` (no model: the adapters in mode
``original``, the question's own term query, which shows what the hygiene alone does), ``7b`` and ``1.5b`` (the
paper's published reasoning, mode replace; BRIGHT pools only; ``7b-text`` sends it as text, the way the adapters
did before term queries). Reasoning is cached (``--cache``), so a rerun only retrieves. Writes ``stacks-<dtype>.md``,
``.json`` and ``.png`` (a heatmap) to ``--output`` and prints the table and the shipped reasoner's verdict: no cell
below the question by more than 0.005 on SciFact and NFCorpus, and its held-out gains (matheducators, BRIGHT
earth_science) above 0 through every retriever.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import REPO, SHARED_DATA, load_collection

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.data import Collection, load_beir
from tongsearch_qr.evaluation import RunResult, paired_difference
from tongsearch_qr.metrics import evaluate

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

SITES = ["ai", "beer", "coffee", "quantumcomputing", "matheducators"]
BRIGHT = ["biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow", "sustainable_living"]
COLLECTIONS = ["scifact", "nfcorpus", *SITES, *(f"bright-answers:{t}" for t in BRIGHT)]
RETRIEVERS = ["bm25", "bm25-bright", "pyserini", "pisa", "pisa-weighted", "haystack", "haystack-okapi", "llama-index"]
PUBLISHED = {"7b": "TongSearch-QR-7B_reasoned_BRIGHT_queries.json", "1.5b": "TongSearch-QR-1.5B_reasoned_BRIGHT_queries.json"}
#: a published reasoner's name with this suffix sends the rewrite as text (``7b-text``: what the adapters did before)
TEXT = "-text"
#: the shipped reasoner's bound: no collection below the question alone by more than this
MARGIN = 0.005
#: where the shipped reasoner must not hurt, and where it must help
CONTROLS = ("beir:scifact", "beir:nfcorpus")
HELD_OUT = ("qa:matheducators", "bright-answers:earth_science")
#: ranking depth (nDCG@10 needs 10; deeper leaves room for excluded ids)
DEPTH = 100

#: a stack's ranking of the questions: alone (no reasoner), or rewritten by a reasoner as a term query (or, with
#: ``text``, as the rewrite's text, what the adapters sent before term queries)
Ranker = Callable[[QRReasoner | None, list[str], bool], list[list[tuple[str, float]]]]


def core_stack(kind: str) -> Callable[[list[tuple[str, str]]], Ranker]:
    """A core retriever, given the question's text or the rewrite's term query (``eval``'s default)."""

    def build(docs: list[tuple[str, str]]) -> Ranker:
        from tongsearch_qr.retrieval import make_retriever

        index = make_retriever(kind).index(docs)

        def rank(reasoner: QRReasoner | None, queries: list[str], text: bool) -> list[list[tuple[str, float]]]:
            searched = queries if reasoner is None else reasoner.rewrite(queries, as_terms=not text)
            return index.search(searched, k=DEPTH)

        return rank

    return build


def pisa_stack(weighted: bool) -> Callable[[list[tuple[str, str]]], Ranker]:
    """PyTerrier: ``PisaIndex(...).bm25()`` (``query_weighted`` as given), after ``QRReasoner()`` for a reasoner."""

    def build(docs: list[tuple[str, str]]) -> Ranker:
        import pandas as pd
        from pyterrier_pisa import PisaIndex

        from tongsearch_qr.integrations.pyterrier import QRReasoner as PtReasoner

        index = PisaIndex(tempfile.mkdtemp(prefix="pisa-"), text_field="text", threads=1)
        index.index({"docno": d, "text": t} for d, t in docs)
        bm25 = index.bm25(num_results=DEPTH, query_weighted=True) if weighted else index.bm25(num_results=DEPTH)

        def rank(reasoner: QRReasoner | None, queries: list[str], text: bool) -> list[list[tuple[str, float]]]:
            topics = pd.DataFrame({"qid": [str(i) for i in range(len(queries))], "query": queries})
            pipeline = bm25 if reasoner is None else PtReasoner(reasoner=reasoner, weights=not text, clean=text) >> bm25
            res = pipeline.transform(topics)
            by_qid = {qid: group.sort_values("rank") for qid, group in res.groupby("qid")}
            return [list(zip(by_qid[q].docno, by_qid[q].score)) if q in by_qid else [] for q in topics.qid]

        return rank

    return build


def haystack_stack(algorithm: str | None) -> Callable[[list[tuple[str, str]]], Ranker]:
    """Haystack: ``InMemoryBM25Retriever`` over an ``InMemoryDocumentStore`` (its default BM25L unless given),
    behind ``QRQueryRewriter`` in a ``Pipeline`` for a reasoner."""

    def build(docs: list[tuple[str, str]]) -> Ranker:
        from haystack import Document, Pipeline
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        from tongsearch_qr.integrations.haystack import QRQueryRewriter

        store = InMemoryDocumentStore() if algorithm is None else InMemoryDocumentStore(bm25_algorithm=algorithm)
        store.write_documents([Document(id=d, content=t) for d, t in docs])

        def rank(reasoner: QRReasoner | None, queries: list[str], text: bool) -> list[list[tuple[str, float]]]:
            retriever = InMemoryBM25Retriever(document_store=store, top_k=DEPTH)
            if reasoner is None:
                return [[(d.id, d.score) for d in retriever.run(query=q)["documents"]] for q in queries]
            pipeline = Pipeline()
            pipeline.add_component("reasoner", QRQueryRewriter.from_reasoner(reasoner, query_format="text" if text else "words"))
            pipeline.add_component("bm25", retriever)
            pipeline.connect("reasoner.query", "bm25.query")
            return [[(d.id, d.score) for d in pipeline.run({"reasoner": {"query": q}})["bm25"]["documents"]] for q in queries]

        return rank

    return build


def llama_index_stack(docs: list[tuple[str, str]]) -> Ranker:
    """LlamaIndex: ``BM25Retriever.from_defaults``, in a ``TransformRetriever`` with ``QRQueryTransform`` for a
    reasoner."""
    from llama_index.core.retrievers import TransformRetriever
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    from tongsearch_qr.integrations.llama_index import QRQueryTransform

    bm25 = BM25Retriever.from_defaults(nodes=[TextNode(text=t, id_=d) for d, t in docs], similarity_top_k=DEPTH)

    def rank(reasoner: QRReasoner | None, queries: list[str], text: bool) -> list[list[tuple[str, float]]]:
        transform = QRQueryTransform(reasoner=reasoner, query_format="text" if text else "repeated") if reasoner else None
        retriever = bm25 if transform is None else TransformRetriever(bm25, transform)
        return [[(n.node.node_id, float(n.score or 0.0)) for n in retriever.retrieve(q)] for q in queries]

    return rank


STACKS: dict[str, Callable[[list[tuple[str, str]]], Ranker]] = {
    "bm25": core_stack("bm25"),
    "bm25-bright": core_stack("bm25-bright"),
    "pyserini": core_stack("pyserini"),
    "pisa": pisa_stack(weighted=False),
    "pisa-weighted": pisa_stack(weighted=True),
    "haystack": haystack_stack(None),
    "haystack-okapi": haystack_stack("BM25Okapi"),
    "llama-index": llama_index_stack,
}


def collection(name: str, limit: int | None) -> Collection:
    """A shared collection by name (``nfcorpus`` besides what ``_common.load_collection`` reads)."""
    if name == "nfcorpus":
        full = load_beir(SHARED_DATA / "nfcorpus")
        if not limit:
            return full
        kept = list(full.queries)[:limit]
        return Collection(
            full.name, {q: full.queries[q] for q in kept}, {q: full.qrels[q] for q in kept}, full.documents, full.excluded
        )
    return load_collection(name, limit)


def run_result(c: Collection, qids: Sequence[str], rankings: Sequence[list[tuple[str, float]]]) -> RunResult:
    """nDCG@10 per query of ``rankings`` in their returned order, without each query's excluded ids."""
    run = {}
    for qid, ranking in zip(qids, rankings):
        excluded = c.excluded.get(qid, set())
        kept = [d for d, _ in ranking if d not in excluded][:DEPTH]
        run[qid] = {d: float(len(kept) - i) for i, d in enumerate(kept)} or {"-": 0.0}
    return RunResult(run, evaluate(run, {q: c.qrels[q] for q in qids}))


def reasoners(args: argparse.Namespace) -> dict[str, QRReasoner]:
    built = {}
    for name in args.reasoners:
        if name == "default":
            shipped = QRReasoner(dtype=args.dtype, cache=args.cache, threads=args.threads)
            decoding = (
                GenerationParams.greedy(shipped.generation.max_new_tokens)
                if args.decoding == "greedy"
                else shipped.generation.with_(seed=args.seed)
            )
            built[name] = shipped.with_(generation=decoding)
        elif name == "question-terms":
            built[name] = QRReasoner(backend=PrecomputedBackend({}, source="no reasoning"), mode="original")
        elif name.removesuffix(TEXT) in PUBLISHED:
            path = SHARED_DATA / "tongsearch-qr" / PUBLISHED[name.removesuffix(TEXT)]
            built[name] = QRReasoner.from_file(path, mode="replace")
        else:
            raise SystemExit(
                f"unknown reasoner {name!r}: default, question-terms, {', '.join(PUBLISHED)} (a "
                f"published one with {TEXT}: sent as text)"
            )
    return built


def measure(args: argparse.Namespace, chosen: dict[str, QRReasoner]) -> list[dict[str, Any]]:
    rows = []
    for name in args.collections:
        c = collection(name, args.limit)
        qids = list(c.queries)
        texts = [c.queries[q] for q in qids]
        usable = {
            r: reasoner
            for r, reasoner in chosen.items()
            if r.removesuffix(TEXT) not in PUBLISHED or c.name.startswith("bright-answers:")
        }
        if "default" in usable:  # reason once, in one batch; every stack then reads the cache
            usable["default"].reason(texts, progress=True)
        docs = list(c.iter_documents())
        for retriever in args.retrievers:
            start = time.time()
            rank = STACKS[retriever](docs)
            question = run_result(c, qids, rank(None, texts, False))
            for reasoner_name, reasoner in usable.items():
                ranked = rank(reasoner, texts, reasoner_name.endswith(TEXT))
                diff = paired_difference({"reasoning": run_result(c, qids, ranked), "baseline": question})
                rows.append(
                    {
                        "collection": c.name,
                        "retriever": retriever,
                        "reasoner": reasoner_name,
                        "question": question.summary["ndcg_cut_10"],
                        "difference": diff["mean_difference"],
                        "low": diff["ci_low"],
                        "high": diff["ci_high"],
                        "queries": diff["queries"],
                        "wins": diff["wins"],
                        "losses": diff["losses"],
                    }
                )
            print(f"{c.name} {retriever}: {time.time() - start:.0f} s", flush=True)
    return rows


def verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The shipped reasoner against its bounds, one line per failed or checked condition."""
    lines = []
    shipped = [r for r in rows if r["reasoner"] == "default"]
    for row in shipped:
        if row["collection"] in CONTROLS and row["difference"] < -MARGIN:
            lines.append(f"FAIL {row['collection']} {row['retriever']}: {row['difference']:+.4f} < -{MARGIN}")
        if row["collection"] in HELD_OUT and row["difference"] <= 0:
            lines.append(f"FAIL {row['collection']} {row['retriever']}: {row['difference']:+.4f}, no gain")
    checked = [r for r in shipped if r["collection"] in CONTROLS + HELD_OUT]
    if checked and not lines:
        lines.append(f"PASS: {len(checked)} cells of the shipped reasoner within its bounds")
    return lines


def table(rows: Sequence[dict[str, Any]], retrievers: Sequence[str]) -> str:
    lines = ["| collection | reasoner | " + " | ".join(retrievers) + " |", "|---|---|" + "---:|" * len(retrievers)]
    keys = list(dict.fromkeys((r["collection"], r["reasoner"]) for r in rows))
    for name, reasoner in keys:
        cells = {r["retriever"]: r for r in rows if (r["collection"], r["reasoner"]) == (name, reasoner)}
        shown = []
        for retriever in retrievers:
            r = cells.get(retriever)
            shown.append("" if r is None else f"{r['difference']:+.3f}{'*' if r['low'] > 0 or r['high'] < 0 else ''}")
        count = next(iter(cells.values()))["queries"]
        lines.append(f"| {name} ({count} q) | {reasoner} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def heatmap(rows: Sequence[dict[str, Any]], retrievers: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(dict.fromkeys((r["collection"], r["reasoner"]) for r in rows))
    values = np.full((len(keys), len(retrievers)), np.nan)
    for r in rows:
        values[keys.index((r["collection"], r["reasoner"])), retrievers.index(r["retriever"])] = r["difference"]
    fig, ax = plt.subplots(figsize=(1.1 * len(retrievers) + 4, 0.32 * len(keys) + 1.6))
    limit = max(0.05, float(np.nanmax(np.abs(values))))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(retrievers)), retrievers, rotation=30, ha="right")
    ax.set_yticks(range(len(keys)), [f"{c.removeprefix('bright-answers:')} / {r}" for c, r in keys], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:+.3f}", ha="center", va="center", fontsize=6.5)
    fig.colorbar(image, ax=ax, label="nDCG@10, rewrite - question")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=lambda s: s.split(","), default=COLLECTIONS)
    parser.add_argument("--retrievers", type=lambda s: s.split(","), default=RETRIEVERS)
    parser.add_argument(
        "--reasoners", type=lambda s: s.split(","), default=["default", "question-terms", "7b", "1.5b", "7b" + TEXT]
    )
    parser.add_argument("--dtype", default="auto", help="the shipped reasoner's engine precision (default: auto)")
    parser.add_argument("--decoding", choices=("greedy", "sampled"), default="greedy")
    parser.add_argument("--seed", type=int, default=1, help="--decoding sampled: the seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each collection")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tongsearch-qr-stacks.sqlite"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "stacks"))
    args = parser.parse_args()
    unknown = sorted(set(args.retrievers) - set(STACKS))
    if unknown:
        raise SystemExit(f"unknown retrievers {unknown}: choose from {', '.join(STACKS)}")

    chosen = reasoners(args)
    rows = measure(args, chosen)
    engine = "-"
    if "default" in chosen:
        from tongsearch_qr.backends.auto import engine_report
        from tongsearch_qr.backends.cpu import native_bf16

        engine = f"{engine_report(chosen['default'].backend)}; {args.decoding}; CPU with native bf16: {native_bf16()}"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"stacks-{args.dtype}-{args.decoding}"
    text = table(rows, args.retrievers)
    lines = verdict(rows)
    given = {k: v for k, v in vars(args).items() if k not in ("cache", "output") and v is not None}
    command = "python benchmarks/stacks.py " + " ".join(
        f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}" for k, v in given.items()
    )
    header = (
        f"# Rewrite - question, nDCG@10, through each stack's own retriever\n\n`{command}`\n\n"
        f"Shipped reasoner's engine: {engine}. Each cell: mean per-query difference from the question alone "
        f"through the same retriever; `*`: the paired bootstrap 95% interval excludes 0.\n\n"
    )
    stem.with_suffix(".md").write_text(header + text + "\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "engine": engine, "rows": rows}, indent=1))
    heatmap(rows, args.retrievers, stem.with_suffix(".png"), f"rewrite - question, nDCG@10 ({args.dtype}, {args.decoding})")
    print(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
