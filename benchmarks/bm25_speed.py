"""bm25-bright (compiled analysis, sparse matrix products) against BRIGHT's own gensim BM25 path, index +
search, on a corpus of >=100k documents (SciFact texts replicated under distinct ids), identical rankings and
scores checked. bm25-bright runs ``--repeats`` times (median reported, every run listed), the gensim path once.

    python benchmarks/bm25_speed.py [--copies 20] [--queries 300] [--k 1000] [--repeats 3]

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
    parser.add_argument("--repeats", type=int, default=3, help="bm25-bright runs (default: %(default)s)")
    args = parser.parse_args()

    docs = [json.loads(line) for line in (SHARED_DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8")]
    ids = [f"{d['_id']}#{copy}" for copy in range(args.copies) for d in docs]
    texts = [f"{d['title']} {d['text']}" for _ in range(args.copies) for d in docs]
    queries = [json.loads(line) for line in (SHARED_DATA / "scifact" / "queries.jsonl").open(encoding="utf-8")]
    queries = queries[: args.queries]
    qids, qtexts = [q["_id"] for q in queries], [q["text"] for q in queries]
    make_retriever("bm25-bright").index([("warm-up", "start the JVM before timing")])

    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        retriever = make_retriever("bm25-bright").index(zip(ids, texts))
        index_s = time.perf_counter() - start
        ours = retriever.search(qtexts, k=args.k)
        runs.append((index_s, time.perf_counter() - start - index_s))
    ours_index, ours_search = sorted(runs, key=sum)[len(runs) // 2]

    start = time.perf_counter()
    state = bright_index(texts)
    ref_index = time.perf_counter() - start
    reference = bright_search(state, qtexts, qids, ids, {}, k=args.k)
    ref_search = time.perf_counter() - start - ref_index

    same = sum(reference[q] == ranking for q, ranking in zip(qids, ours))
    lines = [
        f"corpus: {len(ids):,} documents, {sum(map(len, texts)):,} characters; {len(qids)} queries; top {args.k}",
        f"{'':<22}{'index s':>10}{'search s':>10}{'total s':>10}",
        f"{'BRIGHT gensim path':<22}{ref_index:>10.1f}{ref_search:>10.1f}{ref_index + ref_search:>10.1f}",
        f"{'bm25-bright (median)':<22}{ours_index:>10.2f}{ours_search:>10.2f}{ours_index + ours_search:>10.2f}",
        f"bm25-bright runs (index + search s): {', '.join(f'{sum(run):.2f}' for run in runs)}",
        f"identical rankings and scores: {same}/{len(qids)} queries",
        f"speed-up: index {ref_index / ours_index:.1f}x, search {ref_search / ours_search:.1f}x, "
        f"index + search {(ref_index + ref_search) / (ours_index + ours_search):.1f}x",
    ]
    print("\n".join(lines))
    out = REPO / "benchmarks" / "results" / "bm25_speed.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
