"""`eval --fusion` through each stack's own fusion gives the core's metrics where the maths is the same (real
SciFact test queries, BM25, a fixed reasoning text per query that ranks differently from the question)."""

import json

import pytest

from tongsearch_qr.cli import main

CASES = [
    pytest.param("pyterrier", "rrf", None, marks=pytest.mark.pyterrier, id="pyterrier-rrf"),
    pytest.param("pyterrier", "rrf:20", "1,3", marks=pytest.mark.pyterrier, id="pyterrier-weighted-rrf"),
    pytest.param("pyterrier", "score", "2,1", marks=pytest.mark.pyterrier, id="pyterrier-score"),
    pytest.param("llama-index", "rrf:59", None, marks=pytest.mark.llama_index, id="llama-index-rrf"),
    pytest.param("llama-index", "score", "1,2", marks=pytest.mark.llama_index, id="llama-index-score"),
    pytest.param("haystack", "rrf", "3,1", marks=pytest.mark.haystack, id="haystack-weighted-rrf"),
]


@pytest.fixture(scope="module")
def scifact_eval(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion-via")
    queries = [json.loads(line) for line in (shared_data / "scifact" / "queries.jsonl").read_text().splitlines()]
    # every other word of the question and a fixed word: a reasoning whose ranking differs from the question's
    reasoning = {q["text"]: " ".join(q["text"].split()[::2] + ["cells"]) for q in queries}
    (root / "r.json").write_text(json.dumps(reasoning))

    def run(via, fusion, weights):
        out = root / f"{via}-{fusion}-{weights}"
        args = ["eval", "--dataset", f"beir:{shared_data / 'scifact'}", "--output", str(out), "--reasoner",
                f"file:{root / 'r.json'}", "--no-cache", "--via", via, "--fusion", fusion, "--k", "100"]
        if main(args + (["--fusion-weights", weights] if weights else [])) != 0:
            return None
        return json.loads((out / "metrics.json").read_text())["beir:scifact"]

    return run


@pytest.mark.parametrize("via,fusion,weights", CASES)
def test_a_stacks_fusion_equals_the_cores(scifact_eval, via, fusion, weights):
    core, got = scifact_eval("core", fusion, weights), scifact_eval(via, fusion, weights)
    assert core["ndcg_cut_10"] > 0.5
    for name in ("ndcg_cut_10", "recall_100", "map", "recip_rank"):
        assert got[name] == pytest.approx(core[name], abs=1e-4), name


@pytest.mark.parametrize("via,fusion", [
    pytest.param("llama-index", "rrf", marks=pytest.mark.llama_index),
    pytest.param("haystack", "score", marks=pytest.mark.haystack),
])
def test_a_fusion_a_stack_cannot_do_is_a_clear_error(scifact_eval, via, fusion, capsys):
    assert scifact_eval(via, fusion, None) is None
    assert "use the core" in capsys.readouterr().err
