"""The same collection, reasoner and BM25 through the core and through each stack's adapter, with
per-collection nDCG@10 side by side (and each stack's own BM25 for reference).

    python benchmarks/bright_integrations.py [--reasoner default|file:JSON] [--bright-dir DIR --documents DIR]

Collections: SciFact (real, 60 test queries) and, when given, BRIGHT tasks from a local parquet copy
(``--bright-dir``/``--documents``; with hub access use the hub). Rows marked "core retriever" run the
core ``bm25`` inside the stack (PyTerrier ``CoreRetriever``, LlamaIndex ``CoreLlamaRetriever``, Haystack
``CoreRetrieverComponent``) and must equal the core to 1e-4; native rows use PISA, llama-index's BM25
(bm25s, k1=1.5, b=0.75, no query stopwords) and Haystack's InMemoryBM25Retriever, which score differently.
BRIGHT's excluded ids are removed from every ranking (stacks retrieve deeper, then filter).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import pandas as pd
from _common import SHARED_DATA

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.data import Collection, load_beir, load_bright
from tongsearch_qr.metrics import evaluate, mean
from tongsearch_qr.retrieval import make_retriever
from tongsearch_qr.retrieval.base import search_depth

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")


def ndcg(collection: Collection, rankings: dict[str, list[tuple[str, float]]], k: int = 10) -> float:
    run = {}
    for qid, ranking in rankings.items():
        excluded = collection.excluded.get(qid, set())
        run[qid] = dict([(d, s) for d, s in ranking if d not in excluded][: k * 10])
    return mean(evaluate(run, collection.qrels))["ndcg_cut_10"]


def depth(collection: Collection, k: int) -> int:
    return search_depth(k, list(collection.excluded.values()))


def via_core(c, docs, reasoner, mode, k):
    retriever = make_retriever("bm25").index(docs)
    qids = list(c.queries)
    rankings = retriever.search(reasoner.rewrite([c.queries[q] for q in qids], mode=mode), k=depth(c, k))
    return dict(zip(qids, rankings))


def via_pyterrier(c, docs, reasoner, mode, k, native):
    from tongsearch_qr.integrations.pyterrier import QRReasoner as PtReasoner
    from tongsearch_qr.integrations.pyterrier import rank_queries

    if not native:
        return rank_queries(docs, c.queries, reasoner, mode, depth(c, k))
    from pyterrier_pisa import PisaIndex

    index = PisaIndex(tempfile.mkdtemp(prefix="pisa-"), text_field="text")
    index.index({"docno": d, "text": t} for d, t in docs)
    stage = index.bm25(num_results=depth(c, k))
    topics = pd.DataFrame({"qid": list(c.queries), "query": list(c.queries.values())})
    res = (PtReasoner(reasoner=reasoner, mode=mode, clean=True) >> stage).transform(topics)
    return {qid: list(zip(g.sort_values("rank").docno, g.sort_values("rank").score)) for qid, g in res.groupby("qid")}


def via_llama_index(c, docs, reasoner, mode, k, native):
    from llama_index.core.retrievers import TransformRetriever
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    from tongsearch_qr.integrations.llama_index import QRQueryTransform, rank_queries

    if not native:
        return rank_queries(docs, c.queries, reasoner, mode, depth(c, k))
    nodes = [TextNode(text=t, id_=d) for d, t in docs]
    base = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=depth(c, k))
    retriever = TransformRetriever(base, QRQueryTransform(reasoner=reasoner, mode=mode))
    return {qid: [(n.node.node_id, n.score) for n in retriever.retrieve(q)] for qid, q in c.queries.items()}


def via_haystack(c, docs, reasoner, mode, k, native, reasoning_file):
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from tongsearch_qr.integrations.haystack import QRQueryRewriter, rank_queries

    if not native:
        return rank_queries(docs, c.queries, reasoner, mode, depth(c, k))
    store = InMemoryDocumentStore()
    store.write_documents([Document(id=d, content=t) for d, t in docs])
    stage = InMemoryBM25Retriever(document_store=store, top_k=depth(c, k))
    p = Pipeline()
    p.add_component("reasoner", QRQueryRewriter(reasoning_file=reasoning_file, mode=mode))
    p.add_component("retriever", stage)
    p.connect("reasoner.query", "retriever.query")
    return {
        qid: [(d.id, d.score) for d in p.run({"reasoner": {"query": q}})["retriever"]["documents"]]
        for qid, q in c.queries.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reasoner", default="default", help="default (embedded, greedy) or file:<json>")
    parser.add_argument("--mode", default="concat")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--scifact-queries", type=int, default=60)
    parser.add_argument("--bright-dir", default=None)
    parser.add_argument("--documents", default=None)
    parser.add_argument("--tasks", nargs="*", default=[])
    args = parser.parse_args()

    collections = []
    scifact = load_beir(SHARED_DATA / "scifact")
    keep = list(scifact.queries)[: args.scifact_queries]
    collections.append(
        Collection("scifact", {q: scifact.queries[q] for q in keep}, {q: scifact.qrels[q] for q in keep}, scifact.documents)
    )
    for task in args.tasks:
        collections.append(load_bright(task, source=args.bright_dir, documents=args.documents))

    # one reasoning pass, cached; every stack then reads the same reasoning through a precomputed file
    if args.reasoner.startswith("file:"):
        reasoning_file = args.reasoner.removeprefix("file:")
    else:
        generator = QRReasoner(generation=GenerationParams.greedy(args.max_new_tokens))
        questions = sorted({q for c in collections for q in c.queries.values()})
        reasoning_file = os.path.join(tempfile.mkdtemp(), "reasoning.json")
        pd.Series(dict(zip(questions, generator.reason(questions)))).to_json(reasoning_file)
    reasoner = QRReasoner.from_file(reasoning_file)

    rows = []
    for c in collections:
        docs = list(c.iter_documents())
        core = via_core(c, docs, reasoner, args.mode, 10)
        results = {"core (bm25s)": core}
        for native in (False, True):
            label = "native" if native else "core retriever"
            results[f"pyterrier ({'PISA' if native else label})"] = via_pyterrier(c, docs, reasoner, args.mode, 10, native)
            results[f"llama-index ({'BM25Retriever' if native else label})"] = via_llama_index(
                c, docs, reasoner, args.mode, 10, native
            )
            results[f"haystack ({'InMemoryBM25' if native else label})"] = via_haystack(
                c, docs, reasoner, args.mode, 10, native, reasoning_file
            )
        base = ndcg(c, core)
        for name, rankings in results.items():
            score = ndcg(c, rankings)
            rows.append(
                {"collection": c.name, "pipeline": name, "nDCG@10": round(score, 4), "diff vs core": round(score - base, 6)}
            )
    table = pd.DataFrame(rows).pivot(index="pipeline", columns="collection", values="nDCG@10")
    print(f"mode={args.mode}; reasoner={args.reasoner}\n")
    print(table.to_string())
    exact = [r for r in rows if "core retriever" in r["pipeline"]]
    print(f"\nmax |nDCG@10 - core| for core-retriever rows: {max(abs(r['diff vs core']) for r in exact):.2e}")


if __name__ == "__main__":
    main()
