"""The PyTerrier adapters against the real PyTerrier (no Java needed) and pyterrier-pisa."""

import json
import warnings

import pandas as pd
import pyterrier as pt
import pytest

from tongsearch_qr.integrations.pyterrier import CoreRetriever, QRReasoner
from tongsearch_qr.query_terms import words
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
    assert set(res.columns) >= {"qid", "query", "query_0", "query_toks", "docno", "score", "rank"}
    assert (res.groupby("qid").size() <= 10).all()
    assert res.query_0.tolist()[0] == topics["query"].iloc[0]
    core = make_retriever("bm25").index(c.iter_documents())
    expected = core.search(reasoner.rewrite(topics["query"].tolist(), mode="concat", as_terms=True), k=10)
    for qid, ranking in zip(topics.qid, expected):
        got = res[res.qid == qid].sort_values("rank")
        assert got.docno.tolist() == [d for d, _ in ranking]
        assert got.score.tolist() == pytest.approx([s for _, s in ranking])


def test_experiment_and_pisa(scifact, reasoner, bm25, tmp_path):
    from pyterrier_pisa import PisaIndex

    c, topics, qrels = scifact
    pisa = PisaIndex(str(tmp_path / "pisa"), text_field="text")
    pisa.index({"docno": d, "text": t} for d, t in c.iter_documents())
    with_reasoning = QRReasoner(reasoner=reasoner, mode="weighted:3") >> pisa.bm25(num_results=100, query_weighted=True)
    table = pt.Experiment(
        [bm25, pisa.bm25(num_results=100), with_reasoning],
        topics,
        qrels,
        ["ndcg_cut_10"],
        names=["bm25s", "pisa", "reasoning>>pisa"],
    )
    assert table.ndcg_cut_10.between(0, 1).all() and table.ndcg_cut_10.iloc[0] > 0.4
    assert len(with_reasoning.transform(topics)) > 0


def test_pisa_scores_the_weights_only_when_asked_and_says_so_once(scifact, reasoner, tmp_path):
    from pyterrier_pisa import PisaIndex

    from tongsearch_qr.integrations import pyterrier as adapter

    c, topics, _ = scifact
    pisa = PisaIndex(str(tmp_path / "pisa"), text_field="text")
    pisa.index({"docno": d, "text": t} for d, t in c.iter_documents())
    adapter._WARNED.clear()
    rewriter = QRReasoner(reasoner=reasoner, mode="weighted:3")
    with pytest.warns(
        UserWarning,
        match=r"set of words: it uses the 20 strongest words but not their weights and the "
        r"question's weight in mode 'weighted:3'; .*query_weighted=True",
    ):
        unweighted = rewriter >> pisa.bm25(num_results=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewriter >> pisa.bm25(num_results=20)  # said once
        weighted = rewriter >> pisa.bm25(num_results=20, query_weighted=True)
    rewritten = rewriter.transform(topics)
    toks = rewritten.query_toks.iloc[0]
    assert rewritten.query_0.iloc[0] == topics["query"].iloc[0] and 0 < len(toks) <= 20
    question_words = set(adapter.TermQuery(toks).weights) & set(words(topics["query"].iloc[0]))
    assert question_words and all(toks[w] >= 3 for w in question_words)
    # PISA's own retriever reads query_toks: the same words as a set (unweighted) or with their weights
    as_set = pisa.bm25(num_results=20).transform(
        rewritten.assign(query_toks=[dict.fromkeys(t, 1.0) for t in rewritten.query_toks])
    )
    pd.testing.assert_frame_equal(
        unweighted.transform(topics)[["qid", "docno"]].reset_index(drop=True), as_set[["qid", "docno"]].reset_index(drop=True)
    )
    assert not weighted.transform(topics)[["qid", "docno"]].equals(unweighted.transform(topics)[["qid", "docno"]])
    text_only = QRReasoner(reasoner=reasoner, mode="weighted:3", weights=False).transform(topics)
    assert "query_toks" not in text_only.columns and text_only["query"].iloc[0].startswith(topics["query"].iloc[0])


def test_clean_removes_parser_unsafe_characters(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q?": 'it\'s (really) a "quoted": thing!'}))
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


def test_a_dead_server_leaves_each_question_unless_told_to_raise(bm25):
    from conftest import free_port

    from tongsearch_qr import BackendUnavailableError

    dead = {"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    topics = pd.DataFrame({"qid": ["1"], "query": ["What drives the bacterial immune response?"]})
    out = (QRReasoner("served", **dead) >> bm25 % 5).transform(topics)
    assert len(out) == 5 and set(out["query_0"]) == {"What drives the bacterial immune response?"}
    with pytest.raises(BackendUnavailableError):
        QRReasoner("served", on_error="raise", **dead).transform(topics)
