"""bm25-bright (sparse matrix products) against BRIGHT's own gensim BM25 path, index + search, on a
corpus of >=100k documents (SciFact texts replicated under distinct ids), same rankings checked.

    python benchmarks/bm25_speed.py [--copies 20] [--queries 300] [--k 1000]

Needs the pyserini extra and gensim (pip install 'tongsearch-qr[pyserini]' gensim).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import REPO, SHARED_DATA

sys.path.insert(0, str(REPO / "tests"))
from bright_reference import bright_bm25  # noqa: E402

from tongsearch_qr.retrieval import make_retriever  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="times the 5,183 SciFact documents are repeated")
    parser.add_argument("--queries", type=int, default=300, help="SciFact queries to search")
    parser.add_argument("--k", type=int, default=1000)
    args = parser.parse_args()

    docs = [json.loads(line) for line in (SHARED_DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8")]
    ids = [f"{d['_id']}#{copy}" for copy in range(args.copies) for d in docs]
    texts = [f"{d['title']} {d['text']}" for _ in range(args.copies) for d in docs]
    queries = [json.loads(line) for line in (SHARED_DATA / "scifact" / "queries.jsonl").open(encoding="utf-8")]
    queries = queries[: args.queries]
    qids, qtexts = [q["_id"] for q in queries], [q["text"] for q in queries]
    make_retriever("bm25-bright").index([("warm-up", "start the JVM before timing")])

    start = time.perf_counter()
    retriever = make_retriever("bm25-bright").index(zip(ids, texts))
    ours_index = time.perf_counter() - start
    ours = retriever.search(qtexts, k=args.k)
    ours_total = time.perf_counter() - start

    start = time.perf_counter()
    reference = bright_bm25(qtexts, qids, texts, ids, {}, k=args.k)
    reference_total = time.perf_counter() - start

    same = sum(reference[q] == ranking for q, ranking in zip(qids, ours))
    print(f"corpus: {len(ids):,} documents; {len(qids)} queries; top {args.k}")
    print(f"BRIGHT gensim path (index + search): {reference_total:8.1f} s")
    print(f"bm25-bright (index + search):        {ours_total:8.1f} s  (index {ours_index:.1f} s)")
    print(f"identical rankings and scores: {same}/{len(qids)} queries")
    print(f"speed-up: {reference_total / ours_total:.1f}x")


if __name__ == "__main__":
    main()
