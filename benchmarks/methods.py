"""Every method of the bank against the original question, with the embedded model, in one harness.

    python benchmarks/methods.py [--datasets scifact,matheducators] [--methods all] [--decodings greedy,sampled]
                                 [--max-new-tokens 64] [--limit N] [--cache FILE] [--output DIR]

For each dataset (SciFact test: 300 claims over 5,183 abstracts; the held-out StackExchange site
``matheducators``: 189 questions over all its answers) BM25 (bm25s) ranks with the original question, then
with each method's output combined by each text mode (replace, concat, weighted:5) and by reciprocal rank
fusion with the question's ranking (RRF, k=60). Decodings: greedy and sampled (the method's sampling, seed
0), one output per query, at most ``--max-new-tokens`` new tokens (the methods' own lengths, up to 2048, are
out of reach of two CPU cores). RM3 (pyserini) is compared with pyserini's own BM25. Each cell is nDCG@10
and its mean per-query difference from the original with ``eval``'s paired bootstrap 95% interval; ``*``
marks an interval that excludes 0. Writes ``methods.md``, ``methods.json`` and ``methods.png`` to ``--output``.
Completions go to a reasoning cache (``--cache``), so an interrupted run resumes.

``--querygym-url URL`` (``pip install querygym``; a server such as ``tongsearch-qr serve --engine vllm``):
for the methods querygym 0.3 also implements (``query2doc``: its zero-shot Query2Doc; ``keywords``: its
zero-shot Query2E; ``cot``: its Query2Doc CoT mode), both implementations run greedily against that same
server, each with its own prompt text and query combination, and both rows are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import REPO, bm25_with_question, cell, result

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.evaluation import passage_feedback
from tongsearch_qr.fusion import Fusion, fused_search
from tongsearch_qr.methods import METHODS
from tongsearch_qr.models import resolve_model
from tongsearch_qr.modes import get_mode
from tongsearch_qr.retrieval import make_retriever

COMBINATIONS = ("replace", "concat", "weighted:5", "rrf")
#: our method -> querygym's method and parameters
QUERYGYM = {
    "query2doc": ("query2doc", {"mode": "zs"}),
    "keywords": ("query2e", {"mode": "zs"}),
    "cot": ("query2doc", {"mode": "cot"}),
}


def method_for(name: str, dataset: str) -> str:
    """HyDE has a SciFact prompt; elsewhere its web-search prompt."""
    return "hyde-scifact" if name == "hyde" and dataset == "scifact" else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="scifact,matheducators")
    parser.add_argument("--methods", default="all", help="comma-separated names (hyde means hyde-scifact on SciFact)")
    parser.add_argument("--decodings", default="greedy,sampled")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", default=str(REPO / "benchmarks" / "results" / "methods-cache.sqlite"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "methods"))
    parser.add_argument("--querygym-url", default=None, help="OpenAI-compatible server for the querygym comparison")
    parser.add_argument(
        "--querygym-model",
        default=None,
        help="the served model name (default: the embedded model's, as `tongsearch-qr serve` names it)",
    )
    args = parser.parse_args()
    names = [m for m in METHODS if m != "hyde-scifact"] if args.methods == "all" else args.methods.split(",")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    base = QRReasoner("base", cache=args.cache, batch_size=args.batch_size)  # the untrained embedded model, once
    table: dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        collection, qids, texts, index, baseline = bm25_with_question(dataset, args.limit)
        table[dataset] = {"original": {"ndcg10": baseline.summary["ndcg_cut_10"]}, "rows": {}}
        print(f"{dataset}: {len(qids)} queries, original nDCG@10 {baseline.summary['ndcg_cut_10']:.4f}", flush=True)
        for name in names:
            method = METHODS[method_for(name, dataset)]
            if method.template is None:  # RM3: pyserini with and without expansion
                plain = make_retriever("pyserini").index(collection.iter_documents())
                rm3 = make_retriever("pyserini", **method.retriever_options).index(collection.iter_documents())
                plain_run = result(collection, qids, plain.search(texts, k=1000))
                row = cell(result(collection, qids, rm3.search(texts, k=1000)), plain_run)
                row["baseline"] = plain_run.summary["ndcg_cut_10"]
                table[dataset]["rows"][f"{name}"] = {"expansion": row}
                print(f"  {name}: {row}", flush=True)
                continue
            for decoding in args.decodings.split(","):
                params = method.generation.with_(max_new_tokens=args.max_new_tokens, seed=0)
                if decoding == "greedy":
                    params = GenerationParams.greedy(args.max_new_tokens, method.generation.repetition_penalty)
                reasoner = base.with_(template=method.template, generation=params, mode=method.mode, samples=1)
                if method.template.passages:
                    reasoner = reasoner.with_(feedback=passage_feedback(index, collection, {}, method.template.passages))
                started = time.perf_counter()
                reasoner.reason(texts, progress=True)
                seconds = time.perf_counter() - started
                row = {}
                for combination in COMBINATIONS:
                    if combination == "rrf":
                        rankings = fused_search(index, texts, reasoner, Fusion("rrf"), k=1000, mode="replace")
                    else:
                        rankings = index.search(reasoner.rewrite(texts, mode=get_mode(combination)), k=1000)
                    row[combination] = cell(result(collection, qids, rankings), baseline)
                row["seconds"] = seconds if reasoner.stats["generated"] else None  # None: all from the cache
                table[dataset]["rows"][f"{name} {decoding}"] = row
                print(
                    f"  {name} {decoding} ({seconds:.0f} s, {reasoner.stats['generated']} generated): "
                    + ", ".join(f"{c} {row[c]['ndcg10']:.4f} ({row[c]['diff']:+.4f})" for c in COMBINATIONS),
                    flush=True,
                )
        if args.querygym_url:
            for name in [n for n in names if n in QUERYGYM]:
                for label, (queries, seconds) in querygym_side_by_side(name, texts, qids, args).items():
                    table[dataset]["rows"][label] = {
                        "weighted:5": cell(result(collection, qids, index.search(queries, k=1000)), baseline),
                        "server_seconds": seconds,
                    }
                    print(f"  {label}: {table[dataset]['rows'][label]['weighted:5']}", flush=True)
        (out / "methods.json").write_text(json.dumps(table, indent=1))  # after each dataset: partial results kept
    write_markdown(out / "methods.md", table, args)
    plot(out / "methods.png", table)
    print((out / "methods.md").read_text())


def querygym_side_by_side(
    name: str, texts: list[str], qids: list[str], args: argparse.Namespace
) -> dict[str, tuple[list[str], float]]:
    """The final queries of querygym's implementation and of ours, both greedy against the same server, with
    the seconds each took (querygym sends one request at a time; ours keeps ``concurrency`` in flight)."""
    import querygym

    qg_name, params = QUERYGYM[name]
    model = args.querygym_model or resolve_model(None).path
    reformulator = querygym.create_reformulator(
        qg_name,
        model=model,
        params=params,
        llm_config={"base_url": args.querygym_url, "api_key": "local", "temperature": 0.0, "max_tokens": args.max_new_tokens},
    )
    started = time.perf_counter()
    theirs = [r.reformulated for r in reformulator.reformulate_batch([querygym.QueryItem(q, t) for q, t in zip(qids, texts)])]
    their_seconds, started = time.perf_counter() - started, time.perf_counter()
    ours = QRReasoner(
        model,
        backend="openai",
        base_url=args.querygym_url,
        method=name,
        cache=False,
        generation=GenerationParams.greedy(args.max_new_tokens, repetition_penalty=1.0),
    )
    rewritten = ours.rewrite(texts, mode=METHODS[name].mode)
    return {
        f"{name} via server (querygym {qg_name} {params['mode']})": (theirs, their_seconds),
        f"{name} via server (ours)": (rewritten, time.perf_counter() - started),
    }


def fmt(c: dict) -> str:
    star = "*" if c["low"] > 0 or c["high"] < 0 else ""
    return f"{c['ndcg10']:.4f} ({c['diff']:+.4f}{star})"


def write_markdown(path: Path, table: dict, args: argparse.Namespace) -> None:
    lines = [
        f"Embedded SmolLM2-135M-Instruct, BM25 (bm25s), at most {args.max_new_tokens} new tokens; nDCG@10 "
        "(mean per-query difference from the original question; * = paired bootstrap 95% interval excludes 0).",
        "",
    ]
    for dataset, data in table.items():
        lines += [
            f"### {dataset}: original question {data['original']['ndcg10']:.4f}",
            "",
            "| method | " + " | ".join(COMBINATIONS) + " | generation s |",
            "|---" * (len(COMBINATIONS) + 2) + "|",
        ]
        for name, row in data["rows"].items():
            if "expansion" in row:
                c = row["expansion"]
                lines.append(f"| {name} (pyserini BM25 {c['baseline']:.4f}) | {fmt(c)} |" + " - |" * len(COMBINATIONS))
            elif "server_seconds" in row:  # the querygym comparison: each side's own combination with the query
                lines.append(f"| {name} | - | - | {fmt(row['weighted:5'])} | - | {row['server_seconds']:.0f} |")
            else:
                seconds = "cached" if row["seconds"] is None else f"{row['seconds']:.0f}"
                lines.append(f"| {name} | " + " | ".join(fmt(row[c]) for c in COMBINATIONS) + f" | {seconds} |")
        lines.append("")
    path.write_text("\n".join(lines))


def plot(path: Path, table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(7 * len(table), 5), squeeze=False)
    for ax, (dataset, data) in zip(axes[0], table.items()):
        rows = {n: r for n, r in data["rows"].items() if "seconds" in r}
        width = 0.8 / len(COMBINATIONS)
        for i, combination in enumerate(COMBINATIONS):
            values = [r[combination]["diff"] for r in rows.values()]
            errors = [
                [r[combination]["diff"] - r[combination]["low"] for r in rows.values()],
                [r[combination]["high"] - r[combination]["diff"] for r in rows.values()],
            ]
            ax.bar([x + i * width for x in range(len(rows))], values, width, yerr=errors, label=combination, capsize=2)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks([x + width * (len(COMBINATIONS) - 1) / 2 for x in range(len(rows))])
        ax.set_xticklabels(list(rows), rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{dataset} (original {data['original']['ndcg10']:.3f})")
        ax.set_ylabel("nDCG@10 difference from the original question")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
