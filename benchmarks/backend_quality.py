"""Retrieval quality of the same greedy reasoning from several backends, side by side in one run: the embedded model
through transformers (``--backend transformers``, or ``--reference transformers:DTYPE``), through the default path
(``auto``: the engine and weight type chosen for this machine) and through llama.cpp in each weight type given (the
llamacpp backend, a GGUF of the same weights).

    python benchmarks/backend_quality.py [--dataset scifact] [--queries 300] [--mode concat] [--max-new-tokens 128]
                                         [--reference transformers] [--backends auto llamacpp:F16 ...] [--threads N]

BM25 (bm25s, the `bm25` retriever) over the whole corpus; prints nDCG@10 of the question alone and of each backend's
rewrite, each backend's difference from the reference with its paired 95% confidence interval, and how many
reasonings are identical. A backend whose engine and weights are those of one already run (``cache_id``) is not run
again.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import load_collection

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.evaluation import MEASURES, RunResult, paired_difference
from tongsearch_qr.metrics import evaluate
from tongsearch_qr.modes import get_mode
from tongsearch_qr.retrieval import make_retriever


def reasoner_for(spec: str, generation: GenerationParams, threads: int | None) -> QRReasoner:
    """``auto``, ``transformers[:DTYPE]`` or ``llamacpp[:TYPE]`` (a GGUF weight type) as a reasoner."""
    backend, _, kind = spec.partition(":")
    options: dict = {"dtype": kind} if kind and backend == "transformers" else {"weights_type": kind} if kind else {}
    if threads and backend != "transformers":
        options["threads"] = threads
    return QRReasoner(backend=backend, generation=generation, cache=False, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact", help="scifact or a StackExchange site (e.g. matheducators)")
    parser.add_argument("--queries", type=int, default=None, help="the first N test queries (default: all)")
    parser.add_argument("--mode", default="concat")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--reference",
        default="transformers",
        help="what the others are compared with: transformers or transformers:DTYPE (default: %(default)s)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["auto", "llamacpp:BF16", "llamacpp:F16", "llamacpp:Q8_0"],
        help="auto, llamacpp or llamacpp:TYPE (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch and llama.cpp (default: all)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    collection = load_collection(args.dataset, args.queries)
    qids = list(collection.queries)
    texts = [collection.queries[q] for q in qids]
    exclude = collection.exclusions(qids)
    index = make_retriever("bm25").index(collection.iter_documents())
    greedy = GenerationParams.greedy(args.max_new_tokens)
    mode = get_mode(args.mode)

    def scored(queries: list[str]) -> RunResult:
        run = {q: dict(r) for q, r in zip(qids, index.search(queries, k=1000, exclude=exclude))}
        return RunResult(run, evaluate(run, collection.qrels, MEASURES))

    results, reasonings, labels, seen = {"question": scored(texts)}, {}, {}, {}
    reference = args.reference
    for spec in [reference, *args.backends]:
        reasoner = reasoner_for(spec, greedy, args.threads)
        cache_id = reasoner.backend.cache_id
        choice = getattr(reasoner.backend, "choice", None)
        labels[spec] = f"{spec} -> {choice.engine} {choice.weights_type or ''}".rstrip() if choice else spec
        if cache_id in seen:  # the same engine and weights: the same greedy reasoning
            reasonings[spec], results[spec] = reasonings[seen[cache_id]], results[seen[cache_id]]
            print(f"{labels[spec]}: same engine and weights as {seen[cache_id]}", flush=True)
            continue
        seen[cache_id] = spec
        start = time.perf_counter()
        reasonings[spec] = reasoner.reason(texts)
        seconds = time.perf_counter() - start
        results[spec] = scored([mode.apply(q, r) for q, r in zip(texts, reasonings[spec])])
        print(f"{labels[spec]}: {len(texts)} greedy reasonings in {seconds:.0f} s ({cache_id})", flush=True)
    print(f"{args.dataset}, {len(qids)} queries, BM25, mode {args.mode}, greedy, {args.max_new_tokens} new tokens")
    for name, result in results.items():
        print(f"  {labels.get(name, name):<28} nDCG@10 {result.summary['ndcg_cut_10']:.4f}")
    for spec in args.backends:
        diff = paired_difference({"reasoning": results[spec], "baseline": results[reference]})
        same = sum(a == b for a, b in zip(reasonings[spec], reasonings[reference]))
        print(
            f"  {labels[spec]} - {reference}: {diff['mean_difference']:+.4f} (95% CI {diff['ci_low']:+.4f} .. "
            f"{diff['ci_high']:+.4f}); identical reasonings: {same}/{len(texts)}"
        )


if __name__ == "__main__":
    sys.exit(main())
