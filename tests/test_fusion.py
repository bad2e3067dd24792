import pytest

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.fusion import Fusion, fused_search

A = [[("d1", 3.0), ("d2", 2.0), ("d3", 1.0)], [("x", 5.0)]]
B = [[("d3", 9.0), ("d4", 5.0)], []]


def test_rrf_by_hand():
    fused = Fusion("rrf", k=60, weights=(1, 2)).fuse([A, B], depth=10)
    expected = {"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63 + 2 / 61, "d4": 2 / 62}
    assert [doc for doc, _ in fused[0]] == ["d3", "d4", "d1", "d2"]
    assert dict(fused[0]) == pytest.approx(expected, abs=1e-12)
    assert fused[1] == [("x", pytest.approx(1 / 61))]  # a query one ranking found nothing for
    unweighted = Fusion.parse("rrf:10").fuse([A, B], depth=2)[0]
    assert unweighted == [("d3", pytest.approx(1 / 13 + 1 / 11)), ("d1", pytest.approx(1 / 11))]  # cut at depth


def test_score_fusion_by_hand():
    fused = Fusion("score", weights=(1, 0.5)).fuse([A, B], depth=10)
    # min-max per query: A -> d1 1, d2 .5, d3 0; B -> d3 1, d4 0
    assert fused[0] == [("d1", 1.0), ("d2", 0.5), ("d3", 0.5), ("d4", 0.0)]  # equal scores: by doc id
    assert Fusion("score").fuse([A, B], depth=1)[0] == [("d1", 1.0)]


def test_fusion_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fusion method 'max'"):
        Fusion.parse("max")
    with pytest.raises(ValueError, match="K in 'rrf:K'"):
        Fusion.parse("rrf:x")
    with pytest.raises(ValueError, match="only rrf takes a parameter"):
        Fusion.parse("score:3")
    with pytest.raises(ValueError, match="whole number >= 1"):
        Fusion.parse("rrf:0")
    with pytest.raises(ValueError, match=">= 0"):
        Fusion.parse("rrf", "1,-1")
    with pytest.raises(ValueError, match="all 0"):
        Fusion.parse("rrf", [0, 0])
    with pytest.raises(ValueError, match="comma-separated numbers"):
        Fusion.parse("rrf", "1,two")
    with pytest.raises(ValueError, match=r"3 fusion weights for 2 rankings"):
        Fusion("rrf", weights=(1, 1, 1)).fuse([A, B], depth=10)
    with pytest.raises(ValueError, match="different query counts"):
        Fusion().fuse([A, B[:1]], depth=10)


class _ListRetriever:
    """Ranks documents by how many of the query's words they contain (ties: by id)."""

    def __init__(self, docs):
        self.docs = docs

    def search(self, queries, k=1000, exclude=None):
        out = []
        for i, query in enumerate(queries):
            words = set(query.lower().split())
            skip = set(exclude[i]) if exclude else set()
            scored = [(d, float(len(words & set(t.lower().split())))) for d, t in self.docs.items() if d not in skip]
            out.append(sorted([p for p in scored if p[1] > 0], key=lambda p: (-p[1], p[0]))[:k])
        return out


class _SampleBackend:
    """Reasoning ``"<question> sample <j>"`` for sample j; records the rows it was asked for."""

    cache_id = "samples"

    def __init__(self):
        self.rows = []

    def generate(self, questions, template, params, on_result=None, samples=None):
        samples = samples or [0] * len(questions)
        self.rows += list(zip(questions, samples))
        texts = [f"{q} reasoning{j}" for q, j in zip(questions, samples)]
        for i, text in enumerate(texts):
            if on_result:
                on_result(i, text)
        return texts


def test_fused_search_fuses_the_question_with_each_sample():
    docs = {"q": "alpha beta", "r0": "reasoning0 gamma", "r1": "reasoning1 delta", "both": "alpha reasoning0 reasoning1"}
    retriever = _ListRetriever(docs)
    reasoner = QRReasoner(backend=_SampleBackend(), samples=2, mode="replace")
    got = fused_search(retriever, ["alpha"], reasoner, Fusion("rrf", k=1), k=10)[0]
    runs = [retriever.search(["alpha"]), retriever.search(["alpha reasoning0"]), retriever.search(["alpha reasoning1"])]
    assert got == Fusion("rrf", k=1).fuse(runs, depth=10)[0]
    assert got[0][0] == "both"
    assert fused_search(retriever, ["alpha"], reasoner, Fusion(with_query=False), k=10)[0][0][0] == "both"
    with pytest.raises(ValueError, match=r"2 fusion weights for 3 rankings \(the question, then 2 reasoning sample"):
        fused_search(retriever, ["alpha"], reasoner, Fusion(weights=(1, 1)), k=10)


def test_samples_are_cached_one_by_one_and_joined_as_text(tmp_path):
    backend = _SampleBackend()
    cache = tmp_path / "c.sqlite"
    three = QRReasoner(backend=backend, samples=3, cache=cache)
    assert three.reason(["why?"]) == ["why? reasoning0\nwhy? reasoning1\nwhy? reasoning2"]
    assert three.rewrite_samples(["why?"], mode="concat") == [[f"why?\nwhy? reasoning{j}" for j in range(3)]]
    assert backend.rows == [("why?", 0), ("why?", 1), ("why?", 2)]
    five = QRReasoner(backend=backend, samples=5, cache=cache)
    assert five.reason_samples(["why?"])[0][-1] == "why? reasoning4"
    assert backend.rows[3:] == [("why?", 3), ("why?", 4)]  # only the samples the cache lacks
    one = QRReasoner(backend=backend, cache=cache)
    assert one.reason(["why?"]) == ["why? reasoning0"] and len(backend.rows) == 5  # sample 0 is the plain key
    assert five.stats["cached"] == 3 and five.stats["generated"] == 2


def test_samples_bad_input():
    with pytest.raises(ValueError, match="whole number >= 1"):
        QRReasoner(backend=_SampleBackend(), samples=0)
    with pytest.raises(ValueError, match="needs sampling"):
        QRReasoner(backend=_SampleBackend(), samples=2, generation=GenerationParams.greedy())
    with pytest.raises(ValueError, match="needs sampling"):
        QRReasoner(backend=_SampleBackend(), samples=2).with_(generation=GenerationParams.greedy())
    published = QRReasoner(backend=PrecomputedBackend({"q": "r"}), samples=2)
    with pytest.raises(ValueError, match="one reasoning per query"):
        published.reason(["q"])


@pytest.mark.slow
def test_transformers_samples_are_rows_of_one_batch_and_each_reproducible():
    from tongsearch_qr import PromptTemplate
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(dtype="float32", batch_size=8)
    params, template = GenerationParams(max_new_tokens=10, seed=3), PromptTemplate.paper()
    three = backend.generate(["Why is the sea salty?"] * 3, template, params, samples=[0, 1, 2])
    assert len(set(three)) == 3  # independent draws
    assert backend.generate(["Why is the sea salty?"], template, params, samples=[2]) == three[2:]
    assert backend.generate(["Why is the sea salty?"], template, params) == three[:1]  # sample 0 = the plain draw


def test_fusing_no_queries_and_numpy_weights():
    import numpy as np

    assert Fusion().fuse([[], []], depth=10) == []  # rankings of no queries: nothing fused, no ranx error
    with pytest.raises(ValueError, match="nothing to fuse"):
        Fusion().fuse([], depth=10)
    for weight in (np.float64(2), np.float32(2), np.int64(2), 2):
        fusion = Fusion("rrf", weights=(weight, 1))
        assert fusion.weights == (2.0, 1.0) and all(type(w) is float for w in fusion.weights)
        assert fusion.fuse([A, B], depth=10) == Fusion("rrf", weights=(2, 1)).fuse([A, B], depth=10)
    for bad in ((np.float32(-1), 1), (np.float64(0), 0), (np.float32("nan"), 1), (True, 1), ("1", 1)):
        with pytest.raises(ValueError, match="fusion weights"):
            Fusion(weights=bad)
    with pytest.raises(ValueError, match="2 fusion weights for 1 rankings"):
        Fusion(weights=(np.float32(1), 1)).fuse([A], depth=10)
