"""`tongsearch-qr demo`'s BRIGHT table on a tiny task in the shared data's layout, and what it does without the data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tongsearch_qr import QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.cli import main
from tongsearch_qr.demo import bright_demo_data, run_bright_demo

#: (question, its accepted answer, the "published" reasoning): each question shares no word with its own answer,
#: its reasoning shares the answer's rare words, so the published row ranks every answer first and the question can't
TASK = [
    (
        "Is it greener to wash dishes by hand or to run a machine?",
        "Modern dishwashers heat less water than a sink full; eco programmes save energy.",
        "dishwashers heat less water eco programmes energy",
    ),
    (
        "Do cotton tote bags beat plastic carrier bags?",
        "A reusable tote needs hundreds of trips before its footprint drops below polyethylene.",
        "reusable tote hundreds trips footprint polyethylene",
    ),
    (
        "Should I leave my laptop charger plugged in overnight?",
        "Idle adapters draw standby current, phantom load, roughly a watt or less.",
        "idle adapters standby current phantom load watt",
    ),
    (
        "Which is better for the climate, a paper book or an e-reader?",
        "Tablet manufacturing emissions amortise after about forty volumes read.",
        "tablet manufacturing emissions amortise forty volumes",
    ),
]
ROWS = ["bm25: question", "bm25: published 7B", "bm25: shipped reasoner", "haystack: question", "haystack: published 7B"]
TASKS = ["--bright-tasks", "sustainable_living"]


def _shared_layout(root: Path, published: bool = True) -> Path:
    """``root/shared/data`` with the task as BRIGHT's sustainable_living (and its published reasoning); returns
    ``root/repo``, the folder to run from."""
    examples = root / "shared" / "data" / "bright" / "examples"
    examples.mkdir(parents=True)
    rows = [
        {
            "id": str(i),
            "query": q,
            "reasoning": "",
            "gold_ids": [f"doc{i}"],
            "gold_ids_long": [f"doc{i}"],
            "excluded_ids": ["N/A"],
            "gold_answer": answer,
        }
        for i, (q, answer, _) in enumerate(TASK)
    ]
    with gzip.open(examples / "sustainable_living.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    if published:
        folder = root / "shared" / "data" / "tongsearch-qr"
        folder.mkdir(parents=True)
        (folder / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json").write_text(json.dumps({q: r for q, _, r in TASK}))
    (root / "repo").mkdir()
    return root / "repo"


def _bright_table(out: str) -> dict[str, float]:
    """Row name -> nDCG@10 on the one task of the printed BRIGHT table."""
    table = out.split("BRIGHT gold-answer pools:")[1].split("\nnDCG@10")[1].splitlines()[1:]
    return {line.rsplit(None, 1)[0]: float(line.rsplit(None, 1)[1]) for line in table if line.strip()}


def _echo_reasoner(mode: str = "replace") -> QRReasoner:
    """A reasoner that writes each question's published reasoning (no model)."""
    return QRReasoner(backend=PrecomputedBackend({q: r for q, _, r in TASK}), mode=mode)


@pytest.mark.slow
def test_the_bright_table_reads_the_shared_layout_beside_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(_shared_layout(tmp_path))
    assert (
        main(
            [
                "demo",
                "--no-cache",
                "--greedy",
                "--max-new-tokens",
                "4",
                "--batch-size",
                "32",
                "--backend",
                "transformers",
                "--dtype",
                "float32",
                *TASKS,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pydoc_data" in out  # the first table is still there
    heading = out.split("BRIGHT gold-answer pools:")[1].splitlines()[0]
    assert "evaluation-only: sustainable_living" in heading
    assert "transformers (cpu, float32)" in heading and "mode weighted:3" in heading
    rows = _bright_table(out)
    assert list(rows) == ROWS
    # the paper's reasoning was what each BM25 got: every answer first, through the core and Haystack's own BM25
    assert rows["bm25: published 7B"] == rows["haystack: published 7B"] == 1.0
    assert rows["bm25: question"] < 0.75
    assert all(0 <= v <= 1 for v in rows.values())


def test_without_the_shared_data_the_table_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = bright_demo_data()
    assert data.collections == []
    assert run_bright_demo(_echo_reasoner(), data) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("BRIGHT table skipped:") and "--bright-dir" in lines[0]


def test_without_the_published_file_its_rows_are_left_out_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(_shared_layout(tmp_path, published=False))
    summary = run_bright_demo(_echo_reasoner(), bright_demo_data(["sustainable_living"]))
    out = capsys.readouterr().out
    assert out.startswith("published rows skipped:") and "--published FILE" in out.splitlines()[0]
    assert list(summary) == list(_bright_table(out)) == ["bm25: question", "bm25: reasoner", "haystack: question"]
    assert summary["bm25: reasoner"]["sustainable_living"] == 1.0  # the echo reasoner writes the answers' words


@pytest.mark.parametrize(
    "make_args, wording",
    [
        (lambda root: ["--bright-dir", str(root / "nowhere")], "does not exist"),
        (lambda root: ["--published", str(root / "missing.json")], "missing.json does not exist"),
        (
            lambda root: ["--published", str(root / "partial.json")],
            "no reasoning for 1 of the 4 BRIGHT questions of sustainable_living",
        ),
        (lambda root: ["--bright-tasks", "leetcode"], "no examples/leetcode"),
    ],
    ids=["bright-dir", "published-missing", "published-partial", "task-missing"],
)
def test_paths_given_that_do_not_work_fail_in_one_line_before_any_model_loads(tmp_path, monkeypatch, capsys, make_args, wording):
    monkeypatch.chdir(_shared_layout(tmp_path))
    (tmp_path / "partial.json").write_text(json.dumps({q: r for q, _, r in TASK[1:]}))
    monkeypatch.setattr("tongsearch_qr.cli.reasoner_from_args", lambda args: pytest.fail("a model was loaded"))
    assert main(["demo", "--no-cache", *TASKS, *make_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tongsearch-qr: error: ")]
    assert len(lines) == 1 and wording in lines[0], err
