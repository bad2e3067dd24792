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
from bright_reference import bright_index, bright_search  # noqa: E402

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
    ours_search = time.perf_counter() - start - ours_index

    start = time.perf_counter()
    state = bright_index(texts)
    ref_index = time.perf_counter() - start
    reference = bright_search(state, qtexts, qids, ids, {}, k=args.k)
    ref_search = time.perf_counter() - start - ref_index

    same = sum(reference[q] == ranking for q, ranking in zip(qids, ours))
    print(f"corpus: {len(ids):,} documents; {len(qids)} queries; top {args.k}")
    print(f"{'':<22}{'index s':>10}{'search s':>10}{'total s':>10}")
    print(f"{'BRIGHT gensim path':<22}{ref_index:>10.1f}{ref_search:>10.1f}{ref_index + ref_search:>10.1f}")
    print(f"{'bm25-bright':<22}{ours_index:>10.1f}{ours_search:>10.1f}{ours_index + ours_search:>10.1f}")
    print(f"identical rankings and scores: {same}/{len(qids)} queries")
    print(f"speed-up: index {ref_index / ours_index:.1f}x, search {ref_search / ours_search:.1f}x, "
          f"index + search {(ref_index + ref_search) / (ours_index + ours_search):.1f}x")


if __name__ == "__main__":
    main()
