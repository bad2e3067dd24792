import json
import math

import pytest
from test_data import make_bright_fixture

from tongsearch_qr.cli import main
from tongsearch_qr.evaluation import bright_names

# query 0: relevant d1, d3; d2 (ranked first by BM25) is excluded -> ranking d1, d4, d3; query 1: d5 first
NDCG10_Q0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))


def _eval(tmp_path, *extra):
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--dataset",
            "bright:biology",
            "--bright-dir",
            str(tmp_path / "b"),
            "--output",
            str(out),
            "--retriever",
            "bm25",
            *extra,
        ]
    )
    return rc, out


def test_eval_on_a_bright_parquet_fixture_matches_hand_computed_metrics(tmp_path):
    make_bright_fixture(tmp_path / "b")
    rc, out = _eval(tmp_path, "--reasoner", "none")
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    task = metrics["bright:biology"]
    assert task["ndcg_cut_10"] == pytest.approx((NDCG10_Q0 + 1) / 2, abs=1e-12)
    assert task["NDCG@10"] == task["ndcg_cut_10"]
    assert task["recip_rank"] == 1.0 and task["MRR"] == 1.0
    assert task["P_1"] == 1.0 and task["P_5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert task["recall_1"] == pytest.approx((1 / 2 + 1) / 2)
    assert task["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert metrics["average"]["ndcg_cut_10"] == task["ndcg_cut_10"]
    per_query = json.loads((out / "per_query.json").read_text())["bright:biology"]
    assert per_query["0"]["ndcg_cut_10"] == pytest.approx(NDCG10_Q0, abs=1e-12)
    lines = (out / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines if line.startswith("0 ")] == ["d1", "d4", "d3"]  # d2 excluded
    assert (out / "ndcg10.png").stat().st_size > 1000


def test_eval_with_precomputed_reasoning_and_baseline(tmp_path):
    make_bright_fixture(tmp_path / "b")
    reasoning = tmp_path / "r.json"
    reasoning.write_text(json.dumps({"salt water kidneys": "kidneys filter blood", "volcano eruption": "lava"}))
    rc, out = _eval(tmp_path, "--reasoner", f"file:{reasoning}", "--mode", "concat", "--baseline", "--no-cache")
    assert rc == 0
    with_reasoning = json.loads((out / "metrics.json").read_text())["bright:biology"]
    baseline = json.loads((out / "metrics.baseline.json").read_text())["bright:biology"]
    assert baseline["ndcg_cut_10"] == pytest.approx((NDCG10_Q0 + 1) / 2, abs=1e-12)
    assert with_reasoning["ndcg_cut_10"] == pytest.approx(1.0)  # both relevant documents now in the top 2
    assert (out / "run.baseline.trec").is_file() and (out / "ndcg10.png").is_file()
    # per-query differences (1 - NDCG10_Q0, 0): resampled means are 0, half or all of the first, so the 95%
    # percentile interval spans [0, 1 - NDCG10_Q0]
    diff = json.loads((out / "comparison.json").read_text())["bright:biology"]
    assert diff["mean_difference"] == pytest.approx((1 - NDCG10_Q0) / 2)
    assert diff["ci_low"] == 0.0 and diff["ci_high"] == pytest.approx(1 - NDCG10_Q0)
    assert (diff["queries"], diff["wins"], diff["losses"]) == (2, 1, 0)


def test_fusion_modes_through_eval_with_the_embedded_reasoner(tmp_path, shared_data):
    """A small BEIR collection (SciFact corpus, 12 test queries) through every rewrite mode."""
    beir = tmp_path / "scifact-small"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").symlink_to(shared_data / "scifact" / "corpus.jsonl")
    (beir / "queries.jsonl").symlink_to(shared_data / "scifact" / "queries.jsonl")
    lines = (shared_data / "scifact" / "qrels" / "test.tsv").read_text().splitlines()
    (beir / "qrels" / "test.tsv").write_text("\n".join(lines[:13]) + "\n")
    summaries = {}
    for mode in ("replace", "concat", "weighted:3", "original"):
        out = tmp_path / mode.replace(":", "_")
        rc = main(
            [
                "eval",
                "--dataset",
                f"beir:{beir}",
                "--output",
                str(out),
                "--mode",
                mode,
                "--greedy",
                "--max-new-tokens",
                "16",
                "--cache",
                str(tmp_path / "cache.sqlite"),
            ]
        )
        assert rc == 0
        summaries[mode] = json.loads((out / "metrics.json").read_text())["beir:scifact-small"]["ndcg_cut_10"]
    assert all(0 <= v <= 1 for v in summaries.values())
    assert summaries["original"] > 0.5  # plain BM25 on SciFact
    assert len(set(summaries.values())) > 1  # the modes really send different queries


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "msmarco:dev"], "unknown dataset 'msmarco:dev'"),
        (["--dataset", "bright:biology", "--retriever", "bm99"], "unknown retriever 'bm99'"),
        (["--dataset", "bright:chemistry"], "unknown BRIGHT task 'chemistry'"),
    ],
)
def test_eval_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["eval", *argv, "--output", str(tmp_path / "o"), "--reasoner", "none"]) == 2
    assert message in capsys.readouterr().err


def test_eval_without_documents_fails_before_any_work(tmp_path, capsys, shared_data):
    rc = main(["eval", "--dataset", "bright:all", "--bright-dir", str(shared_data / "bright"), "--output", str(tmp_path / "o")])
    assert rc == 2
    assert "documents are not available; pass --documents DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bright_names():
    assert bright_names({"ndcg_cut_10": 0.5, "recall_100": 0.9, "map_cut_5": 0.1, "P_1": 1.0, "recip_rank": 0.7, "map": 0.3}) == {
        "NDCG@10": 0.5,
        "Recall@100": 0.9,
        "MAP@5": 0.1,
        "P@1": 1.0,
        "MRR": 0.7,
    }


def test_a_run_where_no_query_retrieves_anything_still_writes_every_metric_and_the_chart(tmp_path):
    from tongsearch_qr.evaluation import MEASURES, RunResult, write_results
    from tongsearch_qr.metrics import evaluate

    per_query = evaluate({"q1": {}, "q2": {}}, {"q1": {"d1": 1}, "q2": {"d2": 1}}, MEASURES)
    assert per_query["q1"]["ndcg_cut_10"] == 0.0 and per_query["q1"]["recall_100"] == 0.0
    assert set(per_query["q1"]) == set(evaluate({"q1": {"d1": 1.0}}, {"q1": {"d1": 1}}, MEASURES)["q1"])
    write_results(tmp_path, {"empty": {"reasoning": RunResult({"q1": {}, "q2": {}}, per_query)}})
    assert json.loads((tmp_path / "metrics.json").read_text())["average"]["NDCG@10"] == 0.0
    assert (tmp_path / "ndcg10.png").stat().st_size > 0


def test_run_files_keep_the_retrievers_tie_order(tmp_path):
    from tongsearch_qr.data import write_run

    write_run(tmp_path / "run.trec", {"q": {"zeta": 2.0, "b": 1.0, "a": 1.0, "c": 1.0}})
    assert [line.split()[2] for line in (tmp_path / "run.trec").read_text().splitlines()] == ["zeta", "b", "a", "c"]


def test_eval_counts_empty_reasoning_in_its_summary(tmp_path, caplog):
    make_bright_fixture(tmp_path / "b")
    reasoning = tmp_path / "r.json"
    reasoning.write_text(json.dumps({"salt water kidneys": "kidneys filter blood", "volcano eruption": ""}))
    rc, out = _eval(tmp_path, "--reasoner", f"file:{reasoning}", "--mode", "concat", "--no-cache")
    assert rc == 0
    report = json.loads((out / "reasoning.json").read_text())
    assert report.pop("backend")["cache_id"].startswith("precomputed:")
    assert report == {"queries": 2, "cached": 0, "generated": 2, "empty": 1}
    assert "1 completions came back empty" in caplog.text


class _SeedDependentBackend:
    """Seed 1 writes reasoning that finds both of query 0's documents; seed 2 writes nothing useful."""

    cache_id = "seed-dependent"

    def generate(self, questions, template, params, on_result=None):
        text = "kidneys filter blood" if params.seed == 1 else "unrelated words"
        return [text if "kidneys" in q else "lava" for q in questions]


def test_seeds_average_each_querys_metrics_over_the_samples(tmp_path):
    from tongsearch_qr import QRReasoner
    from tongsearch_qr.data import load_bright
    from tongsearch_qr.evaluation import run_collection

    make_bright_fixture(tmp_path / "b")
    c = load_bright("biology", source=tmp_path / "b", documents=tmp_path / "b")
    reasoner = QRReasoner(backend=_SeedDependentBackend())
    one = {
        s: run_collection(c, "bm25", reasoner=reasoner.with_(generation=reasoner.generation.with_(seed=s)), mode="concat")[
            "reasoning"
        ].per_query["0"]["ndcg_cut_10"]
        for s in (1, 2)
    }
    assert one[1] != one[2]
    both = run_collection(c, "bm25", reasoner=reasoner, mode="concat", seeds=[1, 2])["reasoning"]
    assert both.per_query["0"]["ndcg_cut_10"] == pytest.approx((one[1] + one[2]) / 2)


def test_metrics_and_run_files_score_the_returned_order_of_tied_documents(tmp_path):
    """trec_eval (and pytrec_eval) re-sort equal scores by doc id, descending: "c", "b", "a" here. The ranking
    returned puts "a" first, so the metrics must be those of "a" first, and run.trec must make trec_eval read
    that order too (parsed here the way trec_eval does: by score alone)."""
    import pytrec_eval

    from tongsearch_qr.data import read_run, write_run
    from tongsearch_qr.evaluation import MEASURES
    from tongsearch_qr.fusion import Fusion
    from tongsearch_qr.metrics import evaluate

    qrels = {"q": {"a": 1}, "r": {"y": 1}}
    # RRF ties: "a" and "c" both first in one ranking, "b" second in both; the returned order breaks ties by id
    fused = Fusion("rrf").fuse([[[("a", 2.0), ("b", 1.0)], [("x", 1.0)]], [[("c", 5.0), ("b", 4.0)], [("y", 0.0)]]], 10)
    assert [doc for doc, _ in fused[0]] == ["b", "a", "c"] and fused[0][1][1] == fused[0][2][1]
    run = {"q": dict(fused[0]), "r": {"x": 0.0, "z": 0.0, "y": 0.0}}  # r: all tied, "y" third as returned
    metrics = evaluate(run, qrels, MEASURES)
    assert metrics["q"]["recip_rank"] == 0.5 and metrics["q"]["P_1"] == 0.0
    assert metrics["r"]["recip_rank"] == pytest.approx(1 / 3)
    write_run(tmp_path / "run.trec", run)
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["b", "a", "c", "x", "z", "y"]
    with (tmp_path / "run.trec").open() as handle:
        as_trec_eval_reads = pytrec_eval.parse_run(handle)
    assert pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "ndcg_cut.10"}).evaluate(as_trec_eval_reads) == {
        q: {m: metrics[q][m] for m in ("recip_rank", "ndcg_cut_10")} for q in qrels
    }
    assert evaluate(read_run(tmp_path / "run.trec"), qrels, MEASURES) == metrics
    written = read_run(tmp_path / "run.trec")
    assert written["q"]["a"] == run["q"]["a"] and written["q"]["c"] == pytest.approx(run["q"]["c"], rel=1e-6)
    with pytest.raises(ValueError, match="query 'q': document 'b' has score nan"):
        evaluate({"q": {"a": 1.0, "b": float("nan")}}, qrels)


def _beir_with_queries_in_the_corpus(root):
    """An ArguAna-like BEIR collection: each query is also a document (same id, same text), which BM25 ranks first
    for it; its relevant document comes next."""
    (root / "qrels").mkdir(parents=True)
    queries = {"q1": "why does the sea taste of salt", "q2": "how do magnets pull iron"}
    corpus = {
        **queries,
        "d1": "salt from rocks makes the sea taste salty",
        "d2": "magnets pull iron with fields",
        "x1": "bread goes stale as starch dries",
        "x2": "cats purr when content",
    }
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in corpus.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


def _trec_run(path):
    run = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    return run


def test_beir_evaluation_leaves_out_a_document_whose_id_is_the_querys_as_beir_does(tmp_path, caplog):
    """BEIR's EvaluateRetrieval.evaluate(ignore_identical_ids=True) pops every retrieved id equal to the query id
    before scoring: the default eval must score what that rule gives on its own run, and --keep-identical-ids
    the run as retrieved."""
    import logging

    import pytrec_eval

    beir = _beir_with_queries_in_the_corpus(tmp_path / "arguana-like")
    outputs = {}
    for name, extra in (("beir", []), ("kept", ["--keep-identical-ids"])):
        outputs[name] = tmp_path / name
        with caplog.at_level(logging.INFO, logger="tongsearch_qr"):
            assert (
                main(
                    [
                        "eval",
                        "--dataset",
                        f"beir:{beir}",
                        "--output",
                        str(outputs[name]),
                        "--retriever",
                        "bm25",
                        "--reasoner",
                        "none",
                        *extra,
                    ]
                )
                == 0
            )
    assert "as in BEIR's evaluation, a document whose id is the query's id is left out" in caplog.text
    kept = _trec_run(outputs["kept"] / "run.trec")
    assert [max(docs, key=docs.get) for docs in kept.values()] == ["q1", "q2"]  # each query finds itself first
    beirs_rule = {qid: {doc: score for doc, score in docs.items() if doc != qid} for qid, docs in kept.items()}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    expected = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(beirs_rule)
    metrics = json.loads((outputs["beir"] / "metrics.json").read_text())["beir:arguana-like"]
    assert metrics["ndcg_cut_10"] == pytest.approx(sum(m["ndcg_cut_10"] for m in expected.values()) / 2) == 1.0
    assert metrics["recip_rank"] == pytest.approx(1.0)
    assert all(qid not in docs for qid, docs in _trec_run(outputs["beir"] / "run.trec").items())
    kept_metrics = json.loads((outputs["kept"] / "metrics.json").read_text())["beir:arguana-like"]
    assert kept_metrics["recip_rank"] == pytest.approx(0.5)  # the relevant document second, behind the query


@pytest.mark.parametrize(
    "via",
    [
        pytest.param("llama-index", marks=pytest.mark.llama_index),
        pytest.param("haystack", marks=pytest.mark.haystack),
        pytest.param("pyterrier", marks=pytest.mark.pyterrier),
    ],
)
def test_every_stack_follows_beirs_identical_id_rule(tmp_path, via):
    from tongsearch_qr.data import load_beir
    from tongsearch_qr.evaluation import run_collection

    beir = _beir_with_queries_in_the_corpus(tmp_path / "arguana-like")
    ranked = run_collection(load_beir(beir), "bm25", via=via, k=10)["baseline"]
    assert all(qid not in docs for qid, docs in ranked.run.items()) and ranked.summary["recip_rank"] == 1.0
    kept = run_collection(load_beir(beir, ignore_identical_ids=False), "bm25", via=via, k=10)["baseline"]
    assert kept.summary["recip_rank"] == 0.5
