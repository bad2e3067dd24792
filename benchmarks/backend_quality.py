"""Retrieval quality of the same greedy reasoning from two backends, side by side in one run: the embedded model
through transformers and through llama.cpp (the llamacpp backend, bfloat16 GGUF of the same weights).

    python benchmarks/backend_quality.py [--dataset scifact] [--queries 60] [--mode concat] [--max-new-tokens 128]

BM25 (bm25s, the `bm25` retriever) over the whole corpus; prints nDCG@10 of the question alone and of each backend's rewrite, the
difference between the backends with its paired 95% confidence interval, and how many reasonings are identical.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact", help="scifact or a StackExchange site (e.g. matheducators)")
    parser.add_argument("--queries", type=int, default=60, help="the first N test queries")
    parser.add_argument("--mode", default="concat")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

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

    results, reasonings = {"question": scored(texts)}, {}
    for backend in ("transformers", "llamacpp"):
        reasoner = QRReasoner(backend=backend, generation=greedy, cache=False)
        start = time.perf_counter()
        reasonings[backend] = reasoner.reason(texts)
        seconds = time.perf_counter() - start
        results[backend] = scored([mode.apply(q, r) for q, r in zip(texts, reasonings[backend])])
        print(f"{backend}: {len(texts)} greedy reasonings in {seconds:.0f} s", flush=True)
    print(f"{args.dataset}, first {len(qids)} queries, BM25, mode {args.mode}, greedy, {args.max_new_tokens} new tokens")
    for name, result in results.items():
        print(f"  {name:<14} nDCG@10 {result.summary['ndcg_cut_10']:.4f}")
    diff = paired_difference({"reasoning": results["llamacpp"], "baseline": results["transformers"]})
    same = sum(a == b for a, b in zip(reasonings["llamacpp"], reasonings["transformers"]))
    print(f"  llamacpp - transformers: {diff['mean_difference']:+.4f} (95% CI {diff['ci_low']:+.4f} .. "
          f"{diff['ci_high']:+.4f}); identical reasonings: {same}/{len(texts)}")


if __name__ == "__main__":
    sys.exit(main())
