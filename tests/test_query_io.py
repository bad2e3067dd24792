import gzip
import json

import pytest

from tongsearch_qr import InputFormatError
from tongsearch_qr.query_io import read_queries, write_jsonl


def test_jsonl_both_layouts(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id": "1", "query": "first"}\n\n{"id": 2, "query": "second"}\n', encoding="utf-8")
    b = tmp_path / "b.jsonl"
    b.write_text('{"_id": "x", "text": "beir style", "metadata": {}}\n', encoding="utf-8")
    assert [(r.id, r.query, r.line) for r in read_queries(a)] == [("1", "first", 1), ("2", "second", 3)]
    assert [(r.id, r.query) for r in read_queries(b)] == [("x", "beir style")]


def test_tsv_keeps_tabs_inside_queries(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\twhat is\tthis\nq2\tsecond\r\n", encoding="utf-8")
    assert [(r.id, r.query) for r in read_queries(path)] == [("q1", "what is\tthis"), ("q2", "second")]


def test_bright_examples_file(shared_data):
    records = read_queries(shared_data / "bright" / "examples" / "biology.jsonl.gz")
    assert len(records) == 103 and records[0].id == "0"
    with gzip.open(shared_data / "bright" / "examples" / "biology.jsonl.gz", "rt") as fh:
        assert records[0].query == json.loads(fh.readline())["query"]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.jsonl", '{"id": "1", "query": "ok"}\n{broken\n', r"bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '["a list"]\n', r":1: expected a JSON object"),
        ("bad.jsonl", '{"id": "1", "question": "wrong field"}\n', r":1: needs fields 'id' and 'query'"),
        ("bad.jsonl", '{"id": null, "query": "q"}\n', r":1: query id must be"),
        ("bad.jsonl", '{"id": "1", "query": "a"}\n{"id": "1", "query": "b"}\n', r":2: duplicate query id '1'"),
        ("bad.tsv", "q1 no tab here\n", r":1: expected 'id<TAB>query'"),
        ("empty.tsv", "\n\n", "holds no queries"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFormatError, match=match):
        read_queries(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        read_queries(tmp_path / "missing.jsonl")
    with pytest.raises(InputFormatError, match="not a file"):
        read_queries(tmp_path)
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputFormatError, match="UTF-8"):
        read_queries(binary)
    fake_gz = tmp_path / "fake.jsonl.gz"
    fake_gz.write_bytes(b"not gzip")
    with pytest.raises(InputFormatError):
        read_queries(fake_gz)


def test_write_jsonl_is_atomic(tmp_path):
    out = tmp_path / "deep" / "out.jsonl"
    write_jsonl(out, [{"id": "1", "text": "é"}])
    assert json.loads(out.read_text(encoding="utf-8")) == {"id": "1", "text": "é"}

    def failing():
        yield {"id": "2"}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(out, failing())
    assert json.loads(out.read_text(encoding="utf-8")) == {"id": "1", "text": "é"}
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]
