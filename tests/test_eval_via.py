"""`tongsearch-qr eval --via <stack>` gives the core's metrics when the same reasoner and retriever are used."""

import json

import pytest
from test_data import make_bright_fixture

from tongsearch_qr.cli import main


@pytest.fixture(scope="module")
def core_metrics(tmp_path_factory):
    root = tmp_path_factory.mktemp("via")
    make_bright_fixture(root / "b")
    reasoning = root / "r.json"
    reasoning.write_text(json.dumps({"salt water kidneys": "kidneys filter blood", "volcano eruption": "lava"}))

    def run(via):
        out = root / f"out-{via}"
        assert (
            main(
                [
                    "eval",
                    "--dataset",
                    "bright:biology",
                    "--bright-dir",
                    str(root / "b"),
                    "--output",
                    str(out),
                    "--reasoner",
                    f"file:{reasoning}",
                    "--mode",
                    "concat",
                    "--baseline",
                    "--no-cache",
                    "--via",
                    via,
                ]
            )
            == 0
        )
        return {
            name: json.loads((out / f"metrics{suffix}.json").read_text())
            for name, suffix in (("reasoning", ""), ("baseline", ".baseline"))
        }

    return run, run("core")


@pytest.mark.parametrize(
    "via",
    [
        pytest.param("pyterrier", marks=pytest.mark.pyterrier),
        pytest.param("llama-index", marks=pytest.mark.llama_index),
        pytest.param("haystack", marks=pytest.mark.haystack),
    ],
)
def test_eval_via_a_stack_equals_the_core(core_metrics, via):
    run, core = core_metrics
    got = run(via)
    for formulation in ("reasoning", "baseline"):
        for name, value in core[formulation]["bright:biology"].items():
            assert got[formulation]["bright:biology"][name] == pytest.approx(value, abs=1e-4), (formulation, name)
    assert core["baseline"]["bright:biology"]["ndcg_cut_10"] < core["reasoning"]["bright:biology"]["ndcg_cut_10"]
