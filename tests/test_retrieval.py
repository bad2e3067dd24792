import logging

import pytest

from tongsearch_qr import InputFormatError
from tongsearch_qr.data import load_beir
from tongsearch_qr.retrieval import BM25Retriever, make_retriever
from tongsearch_qr.retrieval.dense import DenseRetriever

DOCS = [
    ("a", "the cat sat on the mat"),
    ("b", "dogs chase cats in the park"),
    ("c", "stock markets fell sharply"),
    ("d", "a cat and a dog are friends"),
]


def test_bm25_exclusion_depth_and_zero_scores():
    r = BM25Retriever().index(DOCS)
    full = r.search(["cat"], k=10)[0]
    assert {d for d, _ in full} == {"a", "b", "d"}  # "c" shares no term and is not returned
    top = full[0][0]
    excluded = r.search(["cat"], k=2, exclude=[{top}])[0]
    assert len(excluded) == 2 and top not in dict(excluded)
    assert excluded == [p for p in full if p[0] != top][:2]


def test_bm25_save_and_load(tmp_path):
    r = BM25Retriever(k1=1.2, b=0.75).index(DOCS)
    r.save(tmp_path / "idx")
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert loaded.config == r.config
    assert loaded.search(["dog cat"], k=3) == r.search(["dog cat"], k=3)
    with pytest.raises(FileNotFoundError):
        BM25Retriever.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    "docs, match",
    [
        ([], "empty corpus"),
        ([("a", "a b"), ("b", "the")], "no indexable terms"),
        ([("a", "x"), ("a", "y")], "duplicate document id 'a'"),
        ([("a", None)], "has no text"),
        (["not a pair"], "not an \\(id, text\\) pair"),
    ],
)
def test_bad_corpora(docs, match):
    with pytest.raises(InputFormatError, match=match):
        BM25Retriever().index(docs)


def test_bad_search_calls():
    r = BM25Retriever()
    with pytest.raises(RuntimeError, match="index documents"):
        r.search(["q"])
    r.index(DOCS)
    with pytest.raises(TypeError):
        r.search("a string")
    with pytest.raises(ValueError, match="k must be"):
        r.search(["q"], k=0)
    with pytest.raises(ValueError, match="exclude has 2 entries"):
        r.search(["q"], exclude=[set(), set()])
    with pytest.raises(ValueError, match="unknown retriever 'bm26'"):
        make_retriever("bm26")


def test_dense_retriever_ranks_save_load_and_caches(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TONGSEARCH_QR_CACHE", str(tmp_path / "cache"))
    r = make_retriever("dense").index(DOCS)
    ranking = r.search(["kitten on a rug", "finance news"], k=2, exclude=[set(), {"c"}])
    assert ranking[0][0][0] == "a" and "c" not in dict(ranking[1])
    assert abs(ranking[0][0][1]) <= 1.0001
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 1
    r.save(tmp_path / "idx")
    loaded = DenseRetriever.load(tmp_path / "idx")
    assert loaded.search(["kitten on a rug"], k=2) == r.search(["kitten on a rug"], k=2)
    with caplog.at_level(logging.WARNING):
        r.search(["long reasoning " * 300], k=1)
    assert any("longer than the embedder's max_seq_length=256" in rec.message for rec in caplog.records)
    short = DenseRetriever(max_length=16, cache_embeddings=False).index(DOCS)
    assert short.model.max_seq_length == 16


@pytest.mark.slow
def test_dense_on_scifact_matches_the_published_minilm_score(shared_data):
    """all-MiniLM-L6-v2 on SciFact: nDCG@10 0.645 (MTEB); ours must agree."""
    from tongsearch_qr.metrics import evaluate, mean

    c = load_beir(shared_data / "scifact")
    r = make_retriever("dense").index(c.iter_documents())
    qids = list(c.queries)
    rankings = r.search([c.queries[q] for q in qids], k=100)
    score = mean(evaluate({q: dict(x) for q, x in zip(qids, rankings)}, c.qrels))["ndcg_cut_10"]
    assert abs(score - 0.645) < 0.005
