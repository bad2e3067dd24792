import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tongsearch_qr.cli import main
from tongsearch_qr.demo_data import demo_collection
from tongsearch_qr.models import reasoner_settings
from tongsearch_qr.prompts import PromptTemplate

FAST = ["--greedy", "--max-new-tokens", "12", "--batch-size", "4"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reason_writes_every_field(tmp_path):
    src = _write_jsonl(
        tmp_path / "q.jsonl", [{"id": "a", "query": "Why do we dream?"}, {"id": "b", "query": "How do magnets work?"}]
    )
    out = tmp_path / "out.jsonl"
    rc = main(
        ["reason", "--input", str(src), "--output", str(out), "--mode", "concat", "--cache", str(tmp_path / "c.sqlite"), *FAST]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    for row in rows:
        assert set(row) == {"id", "query", "reasoning", "rewritten"}
        assert row["reasoning"].strip() and row["rewritten"] == f"{row['query']}\n{row['reasoning']}"


def test_reason_from_precomputed_file_and_tsv(tmp_path, shared_data):
    published = json.loads(
        (shared_data / "tongsearch-qr" / "TongSearch-QR-1.5B_reasoned_BRIGHT_queries.json").read_text(encoding="utf-8")
    )
    single_line = [q for q in published if "\n" not in q and "\t" not in q][:3]
    src = tmp_path / "q.tsv"
    src.write_text("".join(f"t{i}\t{q}\n" for i, q in enumerate(single_line)), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    path = shared_data / "tongsearch-qr" / "TongSearch-QR-1.5B_reasoned_BRIGHT_queries.json"
    assert main(["reason", "--input", str(src), "--output", str(out), "--model", f"file:{path}", "--no-cache"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["reasoning"] for r in rows] == [published[q].strip() for q in single_line]
    assert all(r["rewritten"] == r["reasoning"] for r in rows)


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--mode", "sideways"], "unknown rewrite mode 'sideways'"),
        (["--backend", "warp"], "unknown backend 'warp'"),
        (["--model", "./missing-model-dir"], "does not exist"),
        (["--model", "file:/no/such.json"], "does not exist"),
    ],
)
def test_reason_bad_options_exit_nonzero(tmp_path, capsys, argv_tail, message):
    src = _write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "query": "Why?"}])
    rc = main(["reason", "--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--no-cache", *argv_tail])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_reason_invalid_queries_error_or_skip(tmp_path, capsys):
    src = _write_jsonl(
        tmp_path / "q.jsonl", [{"id": "a", "query": "Why do we yawn?"}, {"id": "b", "query": "  "}, {"id": "c", "query": None}]
    )
    out = tmp_path / "o.jsonl"
    args = ["reason", "--input", str(src), "--output", str(out), "--no-cache", *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "line 2 (id b): empty" in err and "line 3 (id c): None" in err and "--skip-invalid" in err
    assert main([*args, "--skip-invalid"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a"]


def test_reason_missing_and_malformed_input(tmp_path, capsys):
    assert main(["reason", "--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "query": "ok"}\nnot json\n')
    assert main(["reason", "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err


def _cache_rows(path):
    with sqlite3.connect(path) as conn:
        return {k: (c, t) for k, c, t in conn.execute("SELECT key, completion, created FROM reasoning")}


@pytest.mark.slow
@pytest.mark.parametrize("samples", [1, 3])
def test_sigkill_mid_run_then_restart_loses_and_recomputes_nothing(tmp_path, samples):
    """Killed mid-run, a rerun generates only what the cache lacks: with samples, each (query, sample)."""
    queries = [
        f"Question {i}: why does {topic} happen?"
        for i, topic in enumerate(
            ["rain", "rust", "thunder", "fog", "tides", "frost", "wind", "hail", "snow", "dew", "lightning", "drought"]
        )
    ]
    src = _write_jsonl(tmp_path / "q.jsonl", [{"id": str(i), "query": q} for i, q in enumerate(queries)])
    out, cache = tmp_path / "o.jsonl", tmp_path / "c.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "tongsearch_qr.cli",
        "reason",
        "--input",
        str(src),
        "--output",
        str(out),
        "--cache",
        str(cache),
        "--batch-size",
        "1",
        "--max-new-tokens",
        "24",
        "--seed",
        "0",
        "--samples",
        str(samples),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if cache.exists() and len(_cache_rows(cache)) >= 4:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _cache_rows(cache)
    assert 4 <= len(before) < len(queries) * samples and not out.exists()

    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    times = f" x {samples} samples" if samples > 1 else ""
    assert f"{len(queries)} queries ({len(queries)} unique){times}, {len(before)} already in the reasoning cache" in result.stderr
    assert f"{len(queries) * samples - len(before)} generated" in result.stderr
    after = _cache_rows(cache)
    assert len(after) == len(queries) * samples
    assert {k: after[k] for k in before} == before  # same text, same timestamp: nothing redone or lost
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in range(len(queries))]
    assert all(len(r.get("samples", [r["reasoning"]])) == samples for r in rows)
    shipped = PromptTemplate(**reasoner_settings(None)["template"])  # keywords: keeps each completion term once
    assert sorted(text for r in rows for text in r.get("samples", [r["reasoning"]])) == sorted(
        shipped.extract(c) for c, _ in after.values()
    )


def test_demo_collection_is_consistent():
    corpus, questions, qrels = demo_collection()
    assert len(corpus) > 60 and len(questions) >= 15
    assert set(questions) == set(qrels)
    assert all(doc in corpus for judged in qrels.values() for doc in judged)


def _demo_table(out: str) -> dict[str, list[float]]:
    table = out.split("mean over questions")[1].splitlines()
    return {line.split()[0]: [float(x) for x in line.split()[1:]] for line in table[2:] if line.strip()}


def test_demo_shows_the_trained_reasoner_beside_the_untrained_one_and_the_question(capsys):
    from tongsearch_qr.models import reasoner_settings

    mode = reasoner_settings("default")["mode"]
    assert main(["demo", "--no-cache", "--greedy", "--max-new-tokens", "16", "--batch-size", "32", "--no-bright"]) == 0
    out = capsys.readouterr().out
    assert "pydoc_data" in out and "[q01]" in out and "untrained reasoning:" in out
    rows = _demo_table(out)
    assert set(rows) == {"original", mode, f"untrained/{mode}"}
    assert all(0 <= v <= 1 for values in rows.values() for v in values)
    assert rows["original"][0] > 0.2  # plain BM25 finds documentation for these questions


def test_demo_of_another_model_compares_the_modes_asked_for(capsys):
    assert (
        main(
            [
                "demo",
                "--model",
                "base",
                "--no-cache",
                "--greedy",
                "--max-new-tokens",
                "8",
                "--batch-size",
                "32",
                "--modes",
                "original",
                "replace",
                "concat",
                "--show",
                "1",
                "--no-bright",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert set(_demo_table(out)) == {"original", "replace", "concat"} and "untrained" not in out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tongsearch-qr: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_every_error_is_one_line_that_says_what_to_do(tmp_path, capsys, shared_data):
    src = _write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "query": "Why do we yawn?"}])
    out = str(tmp_path / "o.jsonl")
    corrupt = tmp_path / "cache.sqlite"
    corrupt.write_bytes(b"not a database" * 200)
    assert (
        main(
            [
                "reason",
                "--input",
                str(src),
                "--output",
                out,
                "--cache",
                str(corrupt),
                "--model",
                "file:" + str(shared_data / "tongsearch-qr" / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json"),
            ]
        )
        == 2
    )
    assert "--no-cache" in _one_line_error(capsys)

    reasoning = tmp_path / "r.json"
    reasoning.write_text(json.dumps({"something else": "text"}))
    assert main(["reason", "--input", str(src), "--output", out, "--no-cache", "--model", f"file:{reasoning}"]) == 2
    line = _one_line_error(capsys)
    assert "--fallback" in line and "fallback=" not in line

    # the pyserini extra is not installed (a fresh process: this one may have started the JVM already)
    code = (
        "import sys; sys.modules['jnius_config'] = None; from tongsearch_qr.cli import main; "
        f"sys.exit(main(['eval', '--dataset', 'beir:{shared_data / 'scifact'}', '--retriever', 'bm25-bright', "
        f"'--reasoner', 'none', '--output', '{tmp_path / 'e'}']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("tongsearch-qr: error: ")]
    assert len(lines) == 1 and "pip install 'tongsearch-qr[pyserini]'" in lines[0]


def test_errors_from_inside_libraries_keep_their_cause_and_v_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import tongsearch_qr.cli as cli

    def broken(args):
        try:
            {}["model.safetensors"]
        except KeyError as exc:
            raise RuntimeError("loading the weights failed") from exc

    monkeypatch.setattr(cli, "cmd_reason", broken)
    src = _write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "query": "Why?"}])
    argv = ["reason", "--input", str(src), "--output", str(tmp_path / "o.jsonl")]
    parser_calls = main(argv)
    assert parser_calls == 2
    line = _one_line_error(capsys)
    assert "RuntimeError: loading the weights failed" in line and "caused by KeyError: 'model.safetensors'" in line
    assert "-v" in line
    assert main(["-v", *argv]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_train_help_names_every_bundled_config(capsys):
    from conftest import REPO

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    names = sorted(p.stem for p in (REPO / "training" / "configs").glob("*.yaml") if not p.stem.startswith("accelerate"))
    assert "cpu-keyterms" in names and f"bundled: {', '.join(names)})" in helptext


def test_sampling_options_typed_beside_a_method_win_over_its_defaults(tmp_path, capsys):
    from tongsearch_qr.cli import build_parser, reasoner_from_args

    reasoning = tmp_path / "r.json"
    reasoning.write_text("{}")

    def generation(*options):
        argv = ["reason", "--input", "q.jsonl", "--output", "o.jsonl", "--no-cache", "--model", f"file:{reasoning}"]
        g = reasoner_from_args(build_parser().parse_args([*argv, *options])).generation
        return g.temperature, g.top_p, g.top_k, g.repetition_penalty, g.max_new_tokens, g.do_sample

    assert generation("--method", "hyde") == (0.7, 1.0, 0, 1.0, 512, True)
    assert generation(
        "--method", "hyde", "--temperature", "0.3", "--top-p", "0.9", "--top-k", "5", "--repetition-penalty", "1.2"
    ) == (0.3, 0.9, 5, 1.2, 512, True)
    assert generation("--method", "bright-reasoning", "--temperature", "0.2") == (0.2, 0.8, 0, 1.0, 2048, True)
    assert generation("--method", "hyde", "--greedy", "--repetition-penalty", "1.3")[3:] == (1.3, 512, False)
    assert generation("--top-k", "7") == (0.7, 0.8, 7, 1.05, 500, True)  # no method: the paper's settings
    with pytest.raises(SystemExit):
        main(["reason", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "a value given here wins over the --method's" in helptext


def test_no_batch_size_is_passed_unless_given_so_the_backend_sizes_its_batches(monkeypatch):
    """Without --batch-size the transformers backend sizes its batches (on CUDA from the free memory, up to 512
    sequences); the CLI must not pin 64."""
    from tongsearch_qr.backends import transformers_backend
    from tongsearch_qr.cli import backend_options, build_parser, reasoner_from_args

    def options(*extra):
        argv = ["reason", "--input", "q.jsonl", "--output", "o.jsonl", "--no-cache", *extra]
        return backend_options(build_parser().parse_args(argv))

    for backend in ("auto", "transformers"):
        assert "batch_size" not in options("--backend", backend)
        assert options("--backend", backend, "--batch-size", "16")["batch_size"] == 16

    class Built(Exception):
        """What the backend was given: raised before any model loads."""

    def record(self, model=None, **kwargs):
        raise Built(kwargs)

    monkeypatch.setattr(transformers_backend.TransformersBackend, "__init__", record)
    argv = ["reason", "--input", "q.jsonl", "--output", "o.jsonl", "--no-cache", "--backend", "transformers"]
    with pytest.raises(Built) as built:
        reasoner_from_args(build_parser().parse_args(argv))
    assert built.value.args[0] == {"device": "auto", "dtype": "auto"}
