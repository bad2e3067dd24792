"""`eval --via STACK --fusion` on a collection with excluded ids: every stack leaves them out before fusing, as the
core does, so its fused rankings are the core's (SciFact documents and test queries in BRIGHT's parquet layout,
with excluded ids chosen among each query's top documents, where removing them moves ranks and min-max maxima)."""

from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tongsearch_qr import QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.data import load_beir, load_bright
from tongsearch_qr.evaluation import MEASURES, run_collection
from tongsearch_qr.fusion import Fusion
from tongsearch_qr.metrics import evaluate
from tongsearch_qr.retrieval import make_retriever
from tongsearch_qr.retrieval.base import drop_excluded

#: every stack with every fusion it can express (test_fusion_via.py runs them too)
CASES = [
    pytest.param("pyterrier", "rrf", None, marks=pytest.mark.pyterrier, id="pyterrier-rrf"),
    pytest.param("pyterrier", "rrf:20", "1,3", marks=pytest.mark.pyterrier, id="pyterrier-weighted-rrf"),
    pytest.param("pyterrier", "score", "2,1", marks=pytest.mark.pyterrier, id="pyterrier-score"),
    pytest.param("llama-index", "rrf:59", None, marks=pytest.mark.llama_index, id="llama-index-rrf"),
    pytest.param("llama-index", "score", "1,2", marks=pytest.mark.llama_index, id="llama-index-score"),
    pytest.param("haystack", "rrf", "3,1", marks=pytest.mark.haystack, id="haystack-weighted-rrf"),
]
QUERIES, DEPTH = 40, 100


def tie_free_metrics(run: dict[str, dict[str, float]], qrels) -> dict[str, float]:
    """Mean metrics of ``run`` with equal scores ordered by doc id: stacks break ties their own way (LlamaIndex
    and Haystack by first appearance, the core and PyTerrier by doc id), which the metrics of a returned ranking
    follow; the fusion's maths is what must agree."""
    per_query = evaluate(
        {q: dict(sorted(docs.items(), key=lambda item: (-item[1], item[0]))) for q, docs in run.items()}, qrels, MEASURES
    )
    names = ("ndcg_cut_10", "recall_100", "map", "recip_rank")
    return {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}


@pytest.fixture(scope="module")
def collection(shared_data, tmp_path_factory):
    """40 SciFact test queries over the SciFact corpus; each query excludes the two best non-relevant documents
    of its question's BM25 ranking and the best two of its reasoning's; the reasoning: every other word of the
    question and a fixed word."""
    scifact = load_beir(shared_data / "scifact")
    qids = list(scifact.queries)[:QUERIES]
    questions = [scifact.queries[q] for q in qids]
    reasoning = {text: " ".join(text.split()[::2] + ["cells"]) for text in questions}
    docs = dict(scifact.iter_documents())
    bm25 = make_retriever("bm25").index(docs.items())
    excluded = []
    for qid, *rankings in zip(qids, bm25.search(questions, k=20), bm25.search(list(reasoning.values()), k=20)):
        excluded.append(sorted({d for ranking in rankings for d in [d for d, _ in ranking if d not in scifact.qrels[qid]][:2]}))
    root = tmp_path_factory.mktemp("excluded")
    (root / "examples").mkdir()
    (root / "documents").mkdir()
    pq.write_table(
        pa.table({"id": list(docs), "content": list(docs.values())}), root / "documents" / "biology-00000-of-00001.parquet"
    )
    pq.write_table(
        pa.table(
            {
                "id": qids,
                "query": questions,
                "reasoning": [""] * len(qids),
                "gold_ids": [list(scifact.qrels[q]) for q in qids],
                "gold_ids_long": [[] for _ in qids],
                "excluded_ids": excluded,
                "gold_answer": [""] * len(qids),
            }
        ),
        root / "examples" / "biology-00000-of-00001.parquet",
    )
    loaded = load_bright("biology", source=root, documents=root)
    assert sum(map(len, loaded.excluded.values())) >= 3 * QUERIES
    return loaded, QRReasoner(backend=PrecomputedBackend(reasoning))


def fused(collection, via: str, fusion: str, weights: str | None) -> dict[str, dict[str, float]]:
    c, reasoner = collection
    return run_collection(c, "bm25", reasoner=reasoner, mode="replace", k=DEPTH, via=via, fusion=Fusion.parse(fusion, weights))[
        "reasoning"
    ].run


@pytest.mark.parametrize("via,fusion,weights", CASES)
def test_a_stack_removes_excluded_ids_before_fusing_as_the_core_does(collection, via, fusion, weights):
    c, reasoner = collection
    core, got = fused(collection, "core", fusion, weights), fused(collection, via, fusion, weights)
    assert all(len(got[q]) == DEPTH and not c.excluded[q] & set(got[q]) for q in got)
    # removing the excluded ids after fusing (the old way) gives other metrics, so this collection tells the two apart
    unexcluded = run_collection(
        replace(c, excluded={}), "bm25", reasoner=reasoner, mode="replace", k=DEPTH + 4, fusion=Fusion.parse(fusion, weights)
    )["reasoning"].run
    afterwards = {q: dict(drop_excluded(docs.items(), c.excluded[q], DEPTH)) for q, docs in unexcluded.items()}
    assert tie_free_metrics(afterwards, c.qrels) != pytest.approx(tie_free_metrics(core, c.qrels), abs=1e-4)
    assert tie_free_metrics(got, c.qrels) == pytest.approx(tie_free_metrics(core, c.qrels), abs=1e-4)


def test_every_stack_is_given_each_querys_excluded_ids(collection, monkeypatch):
    """The contract of a registered stack: ``rank_queries`` gets the excluded ids (and must leave them out)."""
    from tongsearch_qr import evaluation

    c, reasoner = collection
    seen = {}

    def rank_queries(docs, queries, reasoner, mode, k, kind, exclude, **options):
        seen.update(exclude)
        return {q: [(d, 1.0)] for q, d in zip(queries, [next(iter(c.qrels[q])) for q in queries])}

    class _Point:
        def load(self):
            return rank_queries

    monkeypatch.setattr(evaluation, "stacks", lambda: {"fake": _Point()})
    result = run_collection(c, "bm25", reasoner=reasoner, mode="replace", k=DEPTH, via="fake")["reasoning"]
    assert seen == {q: c.excluded.get(q, set()) for q in c.queries} and result.summary["P_1"] == 1.0


@pytest.mark.pyterrier
@pytest.mark.parametrize("fusion", ["rrf", "rrf:10", "rrf:10[1,2]"])
def test_pyterriers_rrf_scores_are_the_cores(fusion):
    """pyterrier-alpha's RRFusion scores 1 / (k + rank) with ranks from 0: it must be given the core's k + 1."""
    import pandas as pd

    from tongsearch_qr.integrations.pyterrier import CoreRetriever, fused_with_question
    from tongsearch_qr.integrations.pyterrier import QRReasoner as PtReasoner

    docs = {"d1": "salt water", "d2": "fresh water lakes", "d3": "kidneys filter salt", "d4": "kidneys and blood"}
    reasoner = QRReasoner(backend=PrecomputedBackend({"salt water": "kidneys blood"}))
    name, _, weights = fusion.partition("[")
    spec = Fusion.parse(name, weights.rstrip("]") or None)
    stage = CoreRetriever(make_retriever("bm25").index(docs.items()), num_results=10)
    got = fused_with_question(stage, PtReasoner(reasoner=reasoner, mode="replace"), spec, 10).transform(
        pd.DataFrame({"qid": ["1"], "query": ["salt water"]})
    )
    runs = [stage.retriever.search(["salt water"], k=10), stage.retriever.search(["kidneys blood"], k=10)]
    assert dict(zip(got.docno, got.score)) == pytest.approx(dict(spec.fuse(runs, 10)[0]), rel=1e-12)
