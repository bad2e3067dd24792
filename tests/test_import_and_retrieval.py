import csv
import json
import re
import subprocess
import sys

from tongsearch_qr.metrics import evaluate, mean
from tongsearch_qr.retrieval import BM25Retriever


def test_importing_the_core_loads_no_stack():
    code = (
        "import sys, tongsearch_qr, tongsearch_qr.cli, tongsearch_qr.reasoner;"
        "print([m for m in ('pyterrier', 'llama_index', 'haystack', 'trl', 'vllm', 'torch', 'transformers') "
        "if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d9": 1}}
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    per_query = evaluate(run, qrels, ("ndcg_cut.10", "recip_rank"))
    import math

    ideal = 1 + 1 / math.log2(3)
    assert abs(per_query["q1"]["ndcg_cut_10"] - (1 + 1 / math.log2(4)) / ideal) < 1e-9
    assert per_query["q2"] == {"ndcg_cut_10": 0.0, "recip_rank": 0.0}
    assert abs(mean(per_query)["recip_rank"] - 0.5) < 1e-12


def test_bm25_on_scifact_reaches_the_reference(shared_data):
    root = shared_data / "scifact"
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (root / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / "test.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    retriever = BM25Retriever(k1=0.9, b=0.4).index((d["_id"], f"{d['title']} {d['text']}") for d in corpus)
    qids = list(qrels)
    rankings = retriever.search([queries[q] for q in qids], k=100)
    scores = mean(evaluate({q: dict(r) for q, r in zip(qids, rankings)}, qrels))
    assert scores["ndcg_cut_10"] >= 0.676  # bm25s k1=0.9 b=0.4 reference; BEIR 0.665, Anserini 0.679


def test_the_core_never_imports_the_adapters():
    """The arrow points from integrations/ to the core only: `eval --via` finds stacks through entry points."""
    from conftest import REPO

    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "tongsearch_qr").rglob("*.py")
        if re.search(
            r"tongsearch_qr\.integrations|from \.+integrations|import_module\(.*integrations", path.read_text(encoding="utf-8")
        )
    ]
    assert not offenders, offenders
    from tongsearch_qr.evaluation import stacks

    assert {"pyterrier", "llama-index", "haystack"} <= set(stacks())
