"""Reasoning on Ray (tongsearch_qr.scale): one local Ray instance (2 CPUs) shared by the module, the embedded model
in float32 with seeded sampling, so every (query, sample) must get the text one process gives it."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, free_port, native_fault_handlers

from tongsearch_qr import (
    BackendUnavailableError,
    GenerationParams,
    InputFormatError,
    ModelNotAvailableError,
    QRReasoner,
    TongSearchError,
)
from tongsearch_qr.cli import main
from tongsearch_qr.scale import (
    ReasonerSpec,
    plan_pool,
    ray_reasoner,
    read_query_file,
    read_query_source,
    reason_dataset,
    reasoning_rows,
    write_reasoning,
)

QUERIES = [
    f"Why does {topic} happen?"
    for topic in (
        "rain",
        "rust",
        "thunder",
        "fog",
        "tides",
        "frost",
        "wind",
        "hail",
        "snow",
        "dew",
        "lightning",
        "drought",
        "erosion",
        "a rainbow",
        "an echo",
        "static shock",
        "a tsunami",
        "an eclipse",
        "mould",
        "a hangover",
        "jet lag",
        "a sunburn",
        "a cramp",
        "a hiccup",
    )
]
SEEDED = GenerationParams(max_new_tokens=12, seed=0)
SAMPLES = 2
CLI_FAST = ["--backend", "transformers", "--dtype", "float32", "--max-new-tokens", "12", "--seed", "0", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module (2 CPUs); its workers can import this test module."""
    import ray

    # Ray's driver replaces the process's SIGSEGV handler and its shutdown resets it: pyserini's JVM, started by
    # earlier tests, keeps its own
    with native_fault_handlers():
        context = ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 2**20,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests")}},
        )
    yield context.address_info["gcs_address"]
    with native_fault_handlers():
        ray.shutdown()


@pytest.fixture(scope="module")
def one_process() -> QRReasoner:
    """The embedded reasoner in float32 in this process: what every Ray result must equal."""
    return QRReasoner(backend="transformers", dtype="float32", batch_size=8, generation=SEEDED, samples=SAMPLES)


@pytest.fixture(scope="module")
def expected(one_process) -> list[list[str]]:
    return one_process.reason_samples(QUERIES)


def test_importing_the_scale_package_loads_neither_ray_nor_torch():
    code = "import sys, tongsearch_qr, tongsearch_qr.scale; print([m for m in ('ray', 'torch') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_pool_is_one_actor_per_gpu_or_per_cpu():
    spec = ReasonerSpec()
    on_two_cores = plan_pool(spec, {"CPU": 2.0})
    assert (on_two_cores.actors, on_two_cores.cpus, on_two_cores.gpus) == (2, 1, 0)
    assert plan_pool(spec, {"CPU": 2.0}, actors=1).actors == 1
    on_gpus = plan_pool(spec, {"CPU": 32.0, "GPU": 4.0})
    assert (on_gpus.actors, on_gpus.cpus, on_gpus.gpus) == (4, 1, 1)
    tensor_parallel = plan_pool(ReasonerSpec("m", backend="vllm", tensor_parallel_size=2), {"CPU": 32.0, "GPU": 4.0})
    assert (tensor_parallel.actors, tensor_parallel.gpus) == (2, 2)
    on_cpus = plan_pool(ReasonerSpec(device="cpu"), {"CPU": 32.0, "GPU": 4.0}, cpus_per_actor=8)
    assert (on_cpus.actors, on_cpus.cpus, on_cpus.gpus) == (4, 8, 0)
    assert plan_pool(ReasonerSpec("m", backend="openai"), {"CPU": 4.0, "GPU": 1.0}).gpus == 0
    assert plan_pool(ReasonerSpec(backend="transformers"), {"CPU": 4.0, "GPU": 1.0}).gpus == 1
    assert plan_pool(ReasonerSpec(backend="llamacpp"), {"CPU": 4.0, "GPU": 1.0}).gpus == 0  # on the CPU unless asked
    assert plan_pool(ReasonerSpec(backend="llamacpp", device="cuda"), {"CPU": 4.0, "GPU": 1.0}).gpus == 1
    with pytest.raises(TongSearchError, match="not enough for one actor"):
        plan_pool(spec, {"CPU": 2.0}, cpus_per_actor=4)
    for bad in ({"actors": 0}, {"actors": 1.5}, {"cpus_per_actor": -1}, {"gpus_per_actor": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            plan_pool(spec, {"CPU": 2.0}, **bad)


def test_a_row_that_comes_back_twice_is_reported_once_and_counted(caplog):
    """A retried task can return rows another attempt already returned: the driver keeps the first completion,
    reports each row once and counts the repeats (no cluster: the driver's collection step is fed directly)."""
    import pyarrow as pa

    from tongsearch_qr.scale import ActorPool, RayPoolBackend

    backend = RayPoolBackend(ReasonerSpec(), "engine:model", ActorPool(2, 1.0, 0.0))
    results, reported = [None] * 3, []

    def batch(rows, texts, cache_id="engine:model"):
        return pa.table({"row": rows, "completion": texts, "cache_id": [cache_id] * len(rows)})

    backend._collect(batch([0, 1], ["first 0", "first 1"]), results, lambda row, text: reported.append((row, text)))
    backend._collect(batch([1, 2], ["again 1", "first 2"]), results, lambda row, text: reported.append((row, text)))
    assert results == ["first 0", "first 1", "first 2"] and backend.duplicates == 1
    assert reported == [(0, "first 0"), (1, "first 1"), (2, "first 2")]
    assert "row 1 came back twice" in caplog.text
    with pytest.raises(TongSearchError, match="generated with other:model, not engine:model"):
        backend._collect(batch([0], ["x"], "other:model"), results, None)


def test_a_spec_refuses_what_belongs_to_the_driver():
    with pytest.raises(ValueError, match="cache belong to the driver"):
        ReasonerSpec(cache=True)
    with pytest.raises(ValueError, match="leave model=None"):
        ReasonerSpec("default", backend=lambda: None)
    with pytest.raises(TypeError, match="backend name or a callable"):
        ReasonerSpec(backend=3)


def test_query_tables_in_and_reasoning_tables_out(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tongsearch_qr.modes import get_mode

    pq.write_table(pa.table({"_id": ["a", "b"], "text": ["Why?", "How?"], "title": ["", ""]}), tmp_path / "q.parquet")
    records = read_query_file(tmp_path / "q.parquet")
    assert [(r.id, r.query, r.line) for r in records] == [("a", "Why?", 1), ("b", "How?", 2)]
    rows = reasoning_rows(records, [["one", "two"], ["three", "four"]], get_mode("concat"))
    write_reasoning(tmp_path / "out.parquet", rows)
    assert (
        pq.read_table(tmp_path / "out.parquet").to_pylist()
        == rows
        == [
            {"id": "a", "query": "Why?", "reasoning": "one\ntwo", "rewritten": "Why?\none\ntwo", "samples": ["one", "two"]},
            {
                "id": "b",
                "query": "How?",
                "reasoning": "three\nfour",
                "rewritten": "How?\nthree\nfour",
                "samples": ["three", "four"],
            },
        ]
    )
    pq.write_table(pa.table({"qid": ["a"], "question": ["Why?"]}), tmp_path / "other.parquet")
    with pytest.raises(InputFormatError, match="needs columns 'id' and 'query'"):
        read_query_file(tmp_path / "other.parquet")
    pq.write_table(pa.table({"id": [1, 1], "query": ["Why?", "How?"]}), tmp_path / "twice.parquet")
    with pytest.raises(InputFormatError, match="row 2: duplicate query id 1"):
        read_query_file(tmp_path / "twice.parquet")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(InputFormatError, match="cannot be read as Parquet"):
        read_query_file(tmp_path / "broken.parquet")
    assert [r.id for r in read_query_source(["Why?", "How?"])] == ["0", "1"]


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tongsearch-qr\[ray\]'"):
        ray_reasoner()
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"id": "a", "query": "Why?"}) + "\n")
    assert main(["reason", "--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--no-cache", "--ray"]) == 2
    assert "pip install 'tongsearch-qr[ray]'" in capsys.readouterr().err


def test_an_address_where_no_cluster_answers_is_a_clear_error_at_once(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    with pytest.raises(BackendUnavailableError, match=f"no Ray cluster answers at 127.0.0.1:{(port := free_port())}"):
        ray_reasoner(address=f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="is not host:port"):
        ray_reasoner(address="somewhere")


def test_a_cluster_that_refuses_the_driver_names_ray_token_authentication(monkeypatch):
    """Ray >= 2.59 starts `ray start --head` clusters with token authentication but sends a token to an explicit
    address only under RAY_AUTH_MODE=token; Ray's own error then only says that it could not connect."""
    import socket as sockets

    import ray

    def refused(address=None, **_):
        raise ConnectionError(
            f"Failed to connect to Ray cluster at {address} (caused by RuntimeError: Failed to connect to GCS.)"
        )

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    with sockets.create_server(("127.0.0.1", 0)) as head:
        address = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with pytest.raises(BackendUnavailableError, match=r"cannot join .* set RAY_AUTH_MODE=token here"):
            ray_reasoner(address=address)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: Ray's message alone
        with pytest.raises(BackendUnavailableError, match=r"connect to GCS\.\)$"):
            ray_reasoner(address=address)


@pytest.mark.slow
def test_seeded_samples_on_two_actors_equal_one_process_and_cached_ones_are_not_sent(
    ray_address, one_process, expected, tmp_path
):
    cache = tmp_path / "cache.sqlite"
    half = len(QUERIES) // 2
    QRReasoner(
        backend=one_process.backend, template=one_process.template, generation=SEEDED, samples=SAMPLES, cache=cache
    ).reason_samples(QUERIES[:half])

    spec = ReasonerSpec(backend="transformers", dtype="float32", generation=SEEDED, samples=SAMPLES)
    reasoner = ray_reasoner(spec, cache=cache, actors=2, rows_per_task=5)
    assert reasoner.reason_samples(QUERIES) == expected
    assert dict(reasoner.stats) == {
        "queries": len(QUERIES),
        "cached": half * SAMPLES,
        "generated": (len(QUERIES) - half) * SAMPLES,
        "joined": 0,  # no query was in flight for another call
    }
    assert reasoner.backend.duplicates == 0
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reasoning").fetchone()[0] == len(QUERIES) * SAMPLES


class FailsToGenerate:
    """A backend whose every generate call fails, as llama.cpp does on a prompt too long for its KV cache."""

    cache_id = "fails-to-generate"

    def generate(self, questions, template, params, on_result=None, samples=None):
        raise ValueError("this prompt alone needs more KV cache than kv_cache_gib")


@pytest.mark.slow
def test_a_worker_error_reaches_the_driver_as_it_was_raised(ray_address, tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):  # building the reasoner (the probe)
        ray_reasoner(ReasonerSpec(str(tmp_path / "no-such-model"), backend="transformers"))
    reasoner = ray_reasoner(ReasonerSpec(backend=FailsToGenerate), actors=1)
    with pytest.raises(ValueError, match="needs more KV cache"):  # generating (a Ray Data task)
        reasoner.reason(QUERIES[:2])


def test_reason_on_ray_sends_the_workers_an_absolute_model_path(monkeypatch, tmp_path):
    import tongsearch_qr.scale as scale
    from tongsearch_qr.cli import build_parser, reasoner_from_args

    seen = {}
    monkeypatch.setattr(scale, "ray_reasoner", lambda spec, **_: seen.setdefault("spec", spec))
    (tmp_path / "runs" / "final").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    def spec_for(*model: str):
        args = build_parser().parse_args(["reason", "--input", "q.jsonl", "--output", "o.jsonl", *model, "--ray"])
        reasoner_from_args(args)
        return seen.pop("spec").model

    assert spec_for("--model", "runs/final") == str(tmp_path / "runs" / "final")
    assert spec_for() == "default" and spec_for("--model", "org/hub-model") == "org/hub-model"
    with pytest.raises(TongSearchError, match="is not on this machine.*--max-new-tokens"):
        spec_for("--model", str(tmp_path / "elsewhere"))
    assert spec_for("--model", str(tmp_path / "elsewhere"), "--max-new-tokens", "64") == str(tmp_path / "elsewhere")


class DiesOnce:
    """The embedded model in float32, in a worker whose process exits at the first generate call of the whole job
    (whichever actor makes it: the marker file is created once)."""

    def __init__(self, marker: str):
        from tongsearch_qr.backends.transformers_backend import TransformersBackend

        self.inner, self.marker = TransformersBackend(None, dtype="float32", batch_size=8), Path(marker)
        self.cache_id = self.inner.cache_id

    def generate(self, questions, template, params, on_result=None, samples=None):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return self.inner.generate(questions, template, params, on_result, samples)
        os._exit(1)


@pytest.mark.slow
def test_an_actor_that_dies_has_its_task_retried_and_no_query_reported_twice(ray_address, one_process, expected, tmp_path):
    marker = tmp_path / "died"
    spec = ReasonerSpec(
        backend=functools.partial(DiesOnce, str(marker)), template=one_process.template, generation=SEEDED, samples=SAMPLES
    )
    reasoner = ray_reasoner(spec, cache=tmp_path / "cache.sqlite", actors=2, rows_per_task=8)
    assert reasoner.reason_samples(QUERIES) == expected
    assert marker.exists()  # an actor did die
    assert reasoner.stats["generated"] == len(QUERIES) * SAMPLES and reasoner.backend.duplicates == 0


def _scifact_queries(shared_data, count: int) -> list[dict]:
    with (shared_data / "scifact" / "queries.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle)]


@pytest.mark.slow
def test_reason_on_ray_from_parquet_writes_what_reason_writes(ray_address, shared_data, tmp_path):
    """`reason --ray ADDRESS` run as its own driver process joins the cluster and writes the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    queries = _scifact_queries(shared_data, 8)
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(queries), tmp_path / "q.parquet")
    common = ["--mode", "concat", "--samples", "2", *CLI_FAST]
    assert main(["reason", "--input", str(src), "--output", str(tmp_path / "one.jsonl"), "--no-cache", *common]) == 0
    on_ray = subprocess.run(
        [
            sys.executable,
            "-m",
            "tongsearch_qr.cli",
            "reason",
            "--input",
            str(tmp_path / "q.parquet"),
            "--output",
            str(tmp_path / "ray.jsonl"),
            "--cache",
            str(tmp_path / "c.sqlite"),
            *common,
            "--ray",
            ray_address,
            "--rows-per-task",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert "2 actor(s) of 1 CPU" in on_ray.stderr and "0 from the cache, 16 generated" in on_ray.stderr


@pytest.mark.slow
def test_a_dataset_in_and_parquet_out_through_reason_dataset(ray_address, one_process, tmp_path):
    import pyarrow.parquet as pq
    import ray

    queries = {"q1": "Why do cats purr?", "q2": "Why does bread go stale?", "q3": "Why do we yawn?"}
    dataset = ray.data.from_items([{"id": qid, "query": q} for qid, q in queries.items()])
    spec = ReasonerSpec(backend="transformers", dtype="float32", generation=SEEDED)
    rows = reason_dataset(dataset, spec, output=tmp_path / "o.parquet", mode="concat", actors=1, progress=False)
    texts = one_process.with_(samples=1).reason(list(queries.values()))
    assert rows == [
        {"id": qid, "query": q, "reasoning": t, "rewritten": f"{q}\n{t}"} for (qid, q), t in zip(queries.items(), texts)
    ]
    assert pq.read_table(tmp_path / "o.parquet").to_pylist() == rows
    with pytest.raises(TongSearchError, match="needs columns 'id' and 'query'"):
        read_query_source(ray.data.from_items([{"question": "Why?"}]))


def _cached(path) -> dict[str, tuple[str, float]]:
    """The cache's rows; none while the driver has created the file but not yet its table."""
    with sqlite3.connect(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reasoning'").fetchone():
            return {}
        return {key: (text, created) for key, text, created in conn.execute("SELECT key, completion, created FROM reasoning")}


@pytest.mark.slow
def test_a_driver_killed_mid_job_reruns_only_what_is_missing(ray_address, shared_data, tmp_path):
    queries = _scifact_queries(shared_data, 30)
    src, out, cache = tmp_path / "q.jsonl", tmp_path / "o.jsonl", tmp_path / "c.sqlite"
    src.write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
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
        *CLI_FAST,
        "--ray",
        ray_address,
        "--rows-per-task",
        "2",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cache.exists() and len(_cached(cache)) >= 6):
        assert driver.poll() is None and time.time() < deadline, "the job ended (or stalled) before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _cached(cache)
    assert 6 <= len(before) < len(queries) and not out.exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(queries)} queries ({len(queries)} unique), {len(before)} already in the reasoning cache" in rerun.stderr
    assert f"{len(before)} from the cache, {len(queries) - len(before)} generated" in rerun.stderr
    after = _cached(cache)
    assert len(after) == len(queries) and {key: after[key] for key in before} == before  # nothing redone or lost
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [q["_id"] for q in queries]
