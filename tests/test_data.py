import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tongsearch_qr import DataNotAvailableError, InputFormatError
from tongsearch_qr.data import (
    BRIGHT_TASKS,
    STACKEXCHANGE_TASKS,
    Collection,
    bright_answers,
    load_beir,
    load_bright,
    read_qrels,
    read_run,
    write_qrels,
    write_run,
)

FIXTURE_DOCS = {
    "d1": "salt water kidneys",
    "d2": "salt water kidneys salt water kidneys",
    "d3": "kidneys filter blood",
    "d4": "salt mines",
    "d5": "volcano lava eruption",
    "d6": "deep ocean",
}


def make_bright_fixture(root, task="biology", docs=FIXTURE_DOCS, long_docs=None):
    """A BRIGHT task in the hub's parquet layout: examples (with excluded ids) and documents."""
    (root / "examples").mkdir(parents=True, exist_ok=True)
    (root / "documents").mkdir(exist_ok=True)
    pq.write_table(
        pa.table({"id": list(docs), "content": list(docs.values())}), root / "documents" / f"{task}-00000-of-00001.parquet"
    )
    if long_docs:
        (root / "long_documents").mkdir(exist_ok=True)
        pq.write_table(
            pa.table({"id": list(long_docs), "content": list(long_docs.values())}),
            root / "long_documents" / f"{task}-00000-of-00001.parquet",
        )
    pq.write_table(
        pa.table(
            {
                "id": ["0", "1"],
                "query": ["salt water kidneys", "volcano eruption"],
                "reasoning": ["", ""],
                "gold_ids": [["d1", "d3"], ["d5"]],
                "gold_ids_long": [["L1"], ["L2"]],
                "excluded_ids": [["d2"], ["N/A"]],
                "gold_answer": ["", ""],
            }
        ),
        root / "examples" / f"{task}-00000-of-00001.parquet",
    )
    return root


def test_shared_bright_examples_for_all_tasks(shared_data):
    total = 0
    for task in BRIGHT_TASKS:
        c = load_bright(task, source=shared_data / "bright")
        assert c.documents is None  # documents are not shipped here
        with gzip.open(shared_data / "bright" / "examples" / f"{task}.jsonl.gz", "rt") as fh:
            rows = [json.loads(line) for line in fh]
        assert list(c.queries) == [str(r["id"]) for r in rows]
        assert c.qrels == {str(r["id"]): dict.fromkeys(r["gold_ids"], 1) for r in rows}
        total += len(c.queries)
    assert total == 1384
    aops = load_bright("aops", source=shared_data / "bright")
    assert sum(len(e) for e in aops.excluded.values()) > 600_000
    assert all("N/A" not in e for e in aops.excluded.values())


def test_bright_gold_answers_of_the_stackexchange_tasks(shared_data, tmp_path):
    source = shared_data / "bright"
    total = 0
    for task in STACKEXCHANGE_TASKS:
        with gzip.open(source / "examples" / f"{task}.jsonl.gz", "rt") as fh:
            rows = [json.loads(line) for line in fh]
        assert bright_answers(task, source=source) == [(r["query"], r["gold_answer"]) for r in rows]
        total += len(rows)
    assert total == 749
    for task in set(BRIGHT_TASKS) - set(STACKEXCHANGE_TASKS):  # leetcode, pony, aops, theoremqa: gold_answer is "N/A"
        with pytest.raises(InputFormatError, match=f"BRIGHT {task} has no gold answers"):
            bright_answers(task, source=source)
    root = make_bright_fixture(tmp_path / "b")
    pq.write_table(
        pa.table({"id": ["0", "1"], "query": ["q one", "q two"], "gold_answer": ["answer one", "N/A"]}),
        root / "examples" / "biology-00000-of-00001.parquet",
    )
    assert bright_answers("biology", source=root) == [("q one", "answer one")]
    pq.write_table(pa.table({"id": ["0"], "query": ["q one"]}), root / "examples" / "biology-00000-of-00001.parquet")
    with pytest.raises(InputFormatError, match=r"missing columns \['gold_answer'\]"):
        bright_answers("biology", source=root)
    with pytest.raises(ValueError, match="unknown BRIGHT task"):
        bright_answers("chemistry", source=source)


def test_parquet_layout_with_documents_and_long(tmp_path):
    root = make_bright_fixture(tmp_path / "b", long_docs={"L1": "long one", "L2": "long two"})
    c = load_bright("biology", source=root)
    assert c.queries == {"0": "salt water kidneys", "1": "volcano eruption"}
    assert c.excluded == {"0": {"d2"}, "1": set()}
    assert dict(c.iter_documents()) == FIXTURE_DOCS
    long = load_bright("biology", source=root, long=True)
    assert long.qrels == {"0": {"L1": 1}, "1": {"L2": 1}}
    assert dict(long.iter_documents()) == {"L1": "long one", "L2": "long two"}


def test_documents_from_a_separate_directory(tmp_path, shared_data):
    docs_root = make_bright_fixture(tmp_path / "docs")
    c = load_bright("biology", source=shared_data / "bright", documents=docs_root)
    assert len(c.queries) == 103 and dict(c.iter_documents()) == FIXTURE_DOCS


def test_bright_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown BRIGHT task 'biolgy'.*biology"):
        load_bright("biolgy", source=tmp_path)
    root = make_bright_fixture(tmp_path / "b")
    with pytest.raises(DataNotAvailableError, match="no long_documents/biology"):
        load_bright("biology", source=root, documents=root, long=True)
    with pytest.raises(DataNotAvailableError, match="no examples/economics"):
        load_bright("economics", source=root)
    (root / "documents" / "biology-00000-of-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputFormatError, match="not a readable parquet"):
        list(load_bright("biology", source=root).iter_documents())
    with pytest.raises(DataNotAvailableError, match="does not exist"):
        load_bright("biology", source=tmp_path / "missing")


def test_bright_hub_offline_names_local_options(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataNotAvailableError, match="xlangai/BRIGHT.*--bright-dir DIR --documents DIR"):
        load_bright("biology")


def test_qrels_with_unknown_queries_and_missing_documents():
    with pytest.raises(InputFormatError, match="qrels reference 1 unknown queries"):
        Collection("x", {"q1": "a"}, {"q1": {"d": 1}, "q9": {"d": 1}})
    with pytest.raises(InputFormatError, match="no documents available"):
        Collection("x", {"q1": "a"}, {"q1": {"d": 1}}).iter_documents()


def test_beir_loader(shared_data, tmp_path):
    c = load_beir(shared_data / "scifact")
    assert len(c.queries) == 300 and sum(len(v) for v in c.qrels.values()) == 339
    docs = dict(c.iter_documents())
    assert len(docs) == 5183
    train = load_beir(shared_data / "scifact", "train")
    assert len(train.queries) == 809
    with pytest.raises(InputFormatError, match="missing qrels/dev.tsv"):
        load_beir(shared_data / "scifact", "dev")


def test_trec_files_keep_doc_ids_with_spaces(tmp_path):
    qrels = {"7": {"pytorch_torch_tensor_functions/Memory Management_2_0.txt": 1, "plain": 2}}
    write_qrels(tmp_path / "q.txt", qrels)
    assert read_qrels(tmp_path / "q.txt") == qrels
    run = {"7": {"pytorch_torch_tensor_functions/Memory Management_2_0.txt": 2.5, "plain": 1.25}}
    write_run(tmp_path / "r.trec", run)
    assert read_run(tmp_path / "r.trec") == run
    assert (tmp_path / "r.trec").read_text().splitlines()[0].startswith("7 Q0 pytorch_torch_tensor_functions/Memory")
    (tmp_path / "bad.txt").write_text("q1 0 doc notanumber\n")
    with pytest.raises(InputFormatError, match="bad.txt:1: grade"):
        read_qrels(tmp_path / "bad.txt")


def test_shared_qrels_files_match_gold_ids(shared_data):
    qrels = read_qrels(shared_data / "bright" / "qrels" / "stackoverflow.txt")
    assert sum(len(docs) for docs in qrels.values()) > 100
    c = load_bright("stackoverflow", source=shared_data / "bright")
    assert c.qrels == qrels


def test_qa_file_as_a_collection_and_as_training_examples(tmp_path, shared_data):
    from tongsearch_qr.data import load_qa
    from tongsearch_qr.training.data import from_qa_jsonl

    site = shared_data / "stackexchange-qa" / "matheducators" / "qa_pairs.jsonl"
    c = load_qa(site)
    docs = dict(c.iter_documents())
    assert c.name == "qa:matheducators" and len(c.queries) == len(docs) == 189
    first = json.loads(site.read_text(encoding="utf-8").splitlines()[0])
    assert c.queries[first["question_id"]] == f"{first['title'].strip()}\n\n{first['question_body'].strip()}"
    assert c.qrels[first["question_id"]] == {first["answer_id"]: 1} and docs[first["answer_id"]] == first["answer_body"]
    examples = from_qa_jsonl([site])
    assert [ex.question for ex in examples] == list(c.queries.values())  # one reader for both
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "t", "question_body": "b"}\n')
    with pytest.raises(InputFormatError, match="bad.jsonl:1: missing field"):
        load_qa(bad)
