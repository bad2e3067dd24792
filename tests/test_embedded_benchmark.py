"""benchmarks/embedded_reasoner.py's pure parts: the pooled interval over collections and the ship-rule verdict."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
from conftest import REPO
from scipy.stats import bootstrap

sys.path.insert(0, str(REPO / "benchmarks"))

from _common import cell  # noqa: E402
from embedded_reasoner import markdown, parse_reasoners, pooled, ship_verdict  # noqa: E402

from tongsearch_qr.evaluation import RunResult  # noqa: E402


def _result(scores: dict[str, float]) -> RunResult:
    return RunResult({}, {q: {"ndcg_cut_10": s} for q, s in scores.items()})


def test_the_pooled_interval_pairs_every_query_of_both_collections_even_where_their_ids_repeat():
    # both collections number their queries "0", "1", ...: pooled, they must stay five queries, not three
    today = {"earth": _result({"0": 0.2, "1": 0.5, "2": 0.1}), "math": _result({"0": 0.4, "1": 0.3})}
    grpo = {"earth": _result({"0": 0.3, "1": 0.5, "2": 0.4}), "math": _result({"0": 0.4, "1": 0.2})}
    found = cell(pooled(grpo), pooled(today))
    diffs = np.array([0.1, 0.0, 0.3, 0.0, -0.1])
    expected = bootstrap(
        (diffs,), np.mean, confidence_level=0.95, n_resamples=10000, method="percentile", random_state=np.random.default_rng(0)
    ).confidence_interval
    assert found["queries"] == 5 and (found["wins"], found["losses"]) == (2, 1)
    assert found["diff"] == pytest.approx(diffs.mean())  # per query, not the mean of the two collections' means
    assert (found["low"], found["high"]) == pytest.approx((expected.low, expected.high))
    assert found["ndcg10"] == pytest.approx(np.mean([0.3, 0.5, 0.4, 0.4, 0.2]))


def _cell(diff: float, low: float | None = None, high: float | None = None) -> dict:
    low, high = (diff - 0.01 if low is None else low), (diff + 0.01 if high is None else high)
    return {"ndcg10": 0.3 + diff, "diff": diff, "low": low, "high": high, "wins": 1, "losses": 1, "queries": 2}


def _rows(grpo: dict[str, float]) -> dict:
    """dataset -> decoding -> reasoner -> cell against the question; today +0.01 everywhere."""
    return {
        d: {decoding: {"today": _cell(0.01), "grpo": _cell(diff)} for decoding in ("greedy", "sampled")}
        for d, diff in grpo.items()
    }


def _pooled(greedy_low: float, sampled_low: float) -> dict:
    return {"greedy": {"grpo - today": _cell(0.02, low=greedy_low)}, "sampled": {"grpo - today": _cell(0.02, low=sampled_low)}}


GOOD = {"bright-answers:earth_science": 0.02, "matheducators": 0.03, "scifact": -0.004}


def test_a_candidate_that_meets_every_measured_condition_is_left_to_make_demo():
    found = ship_verdict("grpo", _rows(GOOD), _pooled(0.004, 0.001))
    assert found["verdict"] == "passes 1-3; check make demo"
    assert [c["passed"] for c in found["conditions"]] == [True, True, True, None]
    assert found["conditions"][3]["detail"] == "check make demo"


@pytest.mark.parametrize(
    "change, failed",
    [
        ({"pooled": (0.004, -0.001)}, 0),  # the sampled interval reaches 0: not a win over today
        ({"pooled": (0.0, 0.003)}, 0),  # an interval that only touches 0 is no win either
        ({"matheducators": -0.0051}, 1),  # a held-out collection drops more than 0.005 below the question
        ({"scifact": -0.006}, 2),  # SciFact too (and so condition 2 as well)
    ],
)
def test_each_broken_condition_fails_the_candidate(change, failed):
    rows = _rows({**GOOD, **{k: v for k, v in change.items() if k != "pooled"}})
    found = ship_verdict("grpo", rows, _pooled(*change.get("pooled", (0.004, 0.001))))
    assert found["verdict"] == "fails"
    assert found["conditions"][failed]["passed"] is False
    assert [i for i, c in enumerate(found["conditions"]) if c["passed"] is False] == ([1, 2] if failed == 2 else [failed])


def test_conditions_a_run_could_not_measure_leave_the_verdict_incomplete():
    found = ship_verdict("grpo", _rows({"matheducators": 0.03}), _pooled(0.004, 0.001))
    assert found["verdict"] == "incomplete" and found["conditions"][2]["passed"] is None
    found = ship_verdict("grpo", _rows({"scifact": 0.0}), None)
    assert found["verdict"] == "incomplete" and found["conditions"][0]["passed"] is None


def test_reasoner_names_need_today_and_one_spec_each():
    assert parse_reasoners("today=default,grpo=runs/x/final") == {"today": "default", "grpo": "runs/x/final"}
    for bad, wording in [
        ("grpo=runs/x", "today"),
        ("today=default,today=base", "twice"),
        ("today", "NAME=SPEC"),
        ("today=default,=x", "NAME=SPEC"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=wording):
            parse_reasoners(bad)


def test_the_markdown_names_the_dtype_the_pooled_row_and_each_verdict():
    rows = _rows(GOOD)
    table = {
        "setup": {
            "reasoners": {n: {"spec": n, "mode": "weighted:3", "max_new_tokens": 48} for n in ("today", "grpo")},
            "dtype": {"asked": "auto", "dtype": "bfloat16", "backend": "transformers (cpu, bfloat16)", "cpu_native_bf16": True},
            "seeds": [1, 2, 3],
        },
        "datasets": {
            d: {"queries": 2, "question": 0.3, "rows": {k: {**v, "grpo - today": _cell(0.01)} for k, v in r.items()}}
            for d, r in rows.items()
        },
        "pooled": {
            "name": "held-out StackExchange (earth_science + matheducators)",
            "queries": 4,
            "question": 0.3,
            "rows": {k: {"today": _cell(0.01), "grpo": _cell(0.03), **v} for k, v in _pooled(0.004, 0.001).items()},
        },
        "verdicts": {"grpo": ship_verdict("grpo", rows, _pooled(0.004, 0.001))},
    }
    text = markdown(table)
    assert "dtype bfloat16, backend transformers (cpu, bfloat16) (asked: auto; this CPU computes bf16 natively: yes)" in text
    assert "### held-out StackExchange (earth_science + matheducators): 4 queries" in text
    assert "| decoding | today | grpo | grpo - today |" in text
    assert "- **grpo: passes 1-3; check make demo**" in text and "check make demo)" in text
