"""The PyTerrier adapters against the real PyTerrier (no Java needed) and pyterrier-pisa."""

import json

import pandas as pd
import pyterrier as pt
import pytest

from tongsearch_qr.integrations.pyterrier import CoreRetriever, QRReasoner
from tongsearch_qr.retrieval import make_retriever

pytestmark = pytest.mark.pyterrier


@pytest.fixture(scope="module")
def scifact(scifact_collection):
    c = scifact_collection
    qids = list(c.queries)[:12]
    topics = pd.DataFrame({"qid": qids, "query": [c.queries[q] for q in qids]})
    qrels = pd.DataFrame([{"qid": q, "docno": d, "label": g} for q in qids for d, g in c.qrels[q].items()])
    return c, topics, qrels


@pytest.fixture(scope="module")
def reasoner(greedy_reasoner):
    return greedy_reasoner


@pytest.fixture(scope="module")
def bm25(scifact):
    c, _, _ = scifact
    return CoreRetriever.from_corpus(({"docno": d, "text": t} for d, t in c.iter_documents()), "bm25")


def test_reasoner_then_bm25_equals_the_core_pipeline(scifact, reasoner, bm25):
    c, topics, _ = scifact
    pipeline = QRReasoner(reasoner=reasoner, mode="concat") >> bm25 % 10
    res = pipeline.transform(topics)
    assert set(res.columns) >= {"qid", "query", "query_0", "docno", "score", "rank"}
    assert (res.groupby("qid").size() <= 10).all()
    assert res.query_0.tolist()[0] == topics["query"].iloc[0]
    core = make_retriever("bm25").index(c.iter_documents())
    expected = core.search(reasoner.rewrite(topics["query"].tolist(), mode="concat"), k=10)
    for qid, ranking in zip(topics.qid, expected):
        got = res[res.qid == qid].sort_values("rank")
        assert got.docno.tolist() == [d for d, _ in ranking]
        assert got.score.tolist() == pytest.approx([s for _, s in ranking])


def test_experiment_and_pisa(scifact, reasoner, bm25, tmp_path):
    from pyterrier_pisa import PisaIndex

    c, topics, qrels = scifact
    pisa = PisaIndex(str(tmp_path / "pisa"), text_field="text")
    pisa.index({"docno": d, "text": t} for d, t in c.iter_documents())
    with_reasoning = QRReasoner(reasoner=reasoner, mode="weighted:3", clean=True) >> pisa.bm25(num_results=100)
    table = pt.Experiment([bm25, pisa.bm25(num_results=100), with_reasoning], topics, qrels, ["ndcg_cut_10"],
                          names=["bm25s", "pisa", "reasoning>>pisa"])
    assert table.ndcg_cut_10.between(0, 1).all() and table.ndcg_cut_10.iloc[0] > 0.4
    assert len(with_reasoning.transform(topics)) > 0


def test_clean_removes_parser_unsafe_characters(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q?": "it's (really) a \"quoted\": thing!"}))
    out = QRReasoner.from_file(str(path), mode="concat", clean=True).transform(pd.DataFrame({"qid": ["1"], "query": ["q?"]}))
    assert out["query"].iloc[0] == "q it s really a quoted thing" and out["query_0"].iloc[0] == "q?"


def test_bad_frames(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q": "r"}))
    t = QRReasoner.from_file(str(path))
    with pytest.raises(pt.validate.InputValidationError):
        t.transform(pd.DataFrame({"qid": ["1"]}))
    for bad in ["", float("nan"), None, 7]:
        with pytest.raises(ValueError, match="invalid quer"):
            t.transform(pd.DataFrame({"qid": ["1"], "query": [bad]}))
    assert len(t.transform(pd.DataFrame({"qid": [], "query": []}))) == 0
    with pytest.raises(KeyError, match="needs 'docno'"):
        CoreRetriever.from_corpus([{"id": "1", "text": "x"}])
