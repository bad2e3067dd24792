"""Online serving: one shared reasoner under concurrent single-query requests, on real BRIGHT questions.

    python benchmarks/online.py [--queries 64] [--concurrency 1 8 32 64] [--rate R] [--backends auto transformers
                                vllm-serve] [--fault/--no-fault] [--threads N] [--vllm-python .venv-vllm/bin/python]
                                [--output benchmarks/results/online/online.md]

For each backend (``auto``: the embedded default, llama.cpp on a CPU; ``transformers``; ``vllm-serve``: a real
``vllm serve`` through the openai backend, left out with a line saying why when ``--vllm-python`` does not exist)
it loads the shipped reasoner's settings once (its prompt, mode and 48 new tokens, seeded) and measures, on the same
``--queries`` BRIGHT biology questions, each request ``rewrites([query])`` on one shared ``QRReasoner``:

- ``one batch call``: all questions in one call (the reference: what the engine does at full batch);
- ``closed loop, N users``: N threads, each sending its next question when the last came back (N=1: serial);
- ``open loop, R/s``: requests arriving at random (Poisson, seeded) at ``--rate`` per second (default: 3/4 of the
  backend's one-batch-call rate, a load the engine can keep up with), each in its own thread, latency counted from
  its arrival;
- ``asyncio, 32 tasks``: ``arewrites`` from 32 tasks of one event loop (closed loop);
- for the local engines, the same closed and open loops with ``turns``: each call holding the engine alone until
  its rows are done, as the llama.cpp backend did before requests shared the engine (for transformers, where
  concurrent calls used to run side by side in threads, ``turns`` is a stand-in).

An earlier commit's code can run the same rows (``--label NAME`` with ``PYTHONPATH`` at its checkout, writing its
JSON; it needs ``QRReasoner.rewrites``, 902e733 or later) and ``--merge`` adds them to this run's table and ratios.

Then queries/s, p50/p95/p99 latency and ratios side by side: at 32 users against one batch call, and the p95 at 8
users of ``turns`` against the shared engine. ``new`` and ``turns`` rows run one after the other at each
concurrency, so CPU load from other work hits both alike; the load average is printed before and after.

The fault run (``--fault``): a real server (``vllm serve`` when ``--vllm-python`` exists, else ``transformers
serve``) behind a reasoner with ``on_error="question"`` and ``timeout=5``, requests arriving at 2/s; the server is
killed (SIGKILL) under load, restarted, and the requests go on until it has served again for 10 s. Every request's
answer is counted: reasoned, or the question alone (by kind of failure), before the kill, while down and after the
restart; an exception or a request without an answer would be counted too (lost). Writes ``--output`` (markdown with
the command) and the same numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import REPO, bright_queries, vllm_cpu_serve_options

from tongsearch_qr import QRReasoner

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "online" / "online.md"


class TakingTurns:
    """A backend whose calls hold the engine alone, one after the other (what the llama.cpp backend's lock did)."""

    def __init__(self, inner):
        self.inner, self.cache_id = inner, inner.cache_id
        self._lock = threading.Lock()

    def generate(self, questions, template, params, on_result=None, samples=None):
        with self._lock:
            return self.inner.generate(questions, template, params, on_result, samples)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(label: str, latencies: list[float], seconds: float, answered: int) -> dict:
    """A row: queries/s, latency percentiles and the 1-minute load average when it ended (other work counts)."""
    row = {"label": label, "queries": answered, "seconds": seconds, "qps": answered / seconds, "load": os.getloadavg()[0]}
    if latencies:
        row.update(p50=statistics.median(latencies), p95=percentile(latencies, 95), p99=percentile(latencies, 99))
    return row


def one_batch(reasoner: QRReasoner, queries: list[str]) -> dict:
    start = time.perf_counter()
    out = reasoner.rewrites(queries)
    return summary("one batch call", [], time.perf_counter() - start, len(out))


def closed_loop(reasoner: QRReasoner, queries: list[str], users: int, label: str) -> dict:
    """``users`` threads, each sending its next question when its last came back."""
    latencies: list[float] = []

    def ask(query: str) -> None:
        start = time.perf_counter()
        reasoner.rewrites([query])
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(ask, queries))
    return summary(label, latencies, time.perf_counter() - start, len(latencies))


def open_loop(reasoner: QRReasoner, queries: list[str], rate: float, label: str, seed: int = 0) -> dict:
    """Requests arriving at ``rate`` per second (Poisson), each in its own thread; latency from its arrival."""
    arrivals, clock, rng = [], 0.0, random.Random(seed)
    for _ in queries:
        clock += rng.expovariate(rate)
        arrivals.append(clock)
    latencies: list[float] = []
    start = time.perf_counter()

    def ask(query: str, due: float) -> None:
        reasoner.rewrites([query])
        latencies.append(time.perf_counter() - start - due)

    threads = []
    for query, due in zip(queries, arrivals):
        time.sleep(max(0.0, start + due - time.perf_counter()))
        threads.append(threading.Thread(target=ask, args=(query, due)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return summary(label, latencies, time.perf_counter() - start - arrivals[0], len(latencies))


def asyncio_loop(reasoner: QRReasoner, queries: list[str], tasks: int) -> dict:
    """``tasks`` coroutines of one event loop, each awaiting its next question's rewrite."""
    latencies: list[float] = []

    async def main() -> None:
        waiting = list(queries)

        async def user() -> None:
            while waiting:
                query = waiting.pop()
                start = time.perf_counter()
                await reasoner.arewrites([query])
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(user() for _ in range(tasks)))

    start = time.perf_counter()
    asyncio.run(main())
    return summary(f"asyncio, {tasks} tasks", latencies, time.perf_counter() - start, len(latencies))


def measure(
    name: str,
    shared: Callable[[], QRReasoner],
    turns: Callable[[], QRReasoner] | None,
    queries: list[str],
    concurrency: list[int],
    rate: float | None,
    label: str,
) -> list[dict]:
    """Every row of one backend (``turns``: the take-turns reasoner, ``None`` for none); ``shared()`` and
    ``turns()`` give fresh reasoners (no cache) over one loaded engine."""
    print(f"[{name}] warming up", flush=True)
    shared().rewrites(queries[:2])
    rows = [one_batch(shared(), queries)]
    print(f"[{name}] {rows[-1]}", flush=True)
    for users in concurrency:
        runs = [("", shared)] + ([("turns, ", turns)] if turns is not None and users > 1 else [])
        for prefix, make in runs:
            rows.append(closed_loop(make(), queries, users, f"{prefix}closed loop, {users} user{'s' * (users > 1)}"))
            print(f"[{name}] {rows[-1]}", flush=True)
    rate = rate or round(0.75 * rows[0]["qps"], 2)
    for prefix, make in [("", shared)] + ([("turns, ", turns)] if turns is not None else []):
        rows.append(open_loop(make(), queries, rate, f"{prefix}open loop, {rate:g}/s"))
        print(f"[{name}] {rows[-1]}", flush=True)
    if hasattr(QRReasoner, "arewrites"):
        rows.append(asyncio_loop(shared(), queries, 32))
        print(f"[{name}] {rows[-1]}", flush=True)
    return [{"backend": name, **row, "label": label + row["label"]} for row in rows]


def local_rows(
    backend: str,
    settings: QRReasoner,
    queries: list[str],
    concurrency: list[int],
    rate: float | None,
    threads: int | None,
    label: str,
) -> list[dict]:
    if backend == "transformers" and threads:
        import torch

        torch.set_num_threads(threads)
    loaded = QRReasoner(backend=backend) if backend != "auto" else settings
    engine = loaded.backend

    def reasoner(inner) -> QRReasoner:
        return QRReasoner(backend=inner, template=settings.template, generation=settings.generation, mode=settings.mode)

    turns = None if label else lambda: reasoner(TakingTurns(engine))
    name = backend if backend != "auto" else f"auto ({engine.cache_id.split(':')[0]})"
    return measure(name, lambda: reasoner(engine), turns, queries, concurrency, rate, label)


def start_server(python: Path | None, port: int, log: Path, threads: int | None):
    """A local server of the default model: vLLM-CPU when ``python`` is given, else ``transformers serve``; on the
    first ``threads`` cores when given."""
    from tongsearch_qr.serving import LocalServer

    cores = {} if not threads else {"VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}", "OMP_NUM_THREADS": str(threads)}
    if python is not None:
        return LocalServer(
            "vllm",
            None,
            port=port,
            python=str(python),
            extra=vllm_cpu_serve_options(0.2),
            log=log,
            env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", **cores},
            startup_timeout=900,
        )
    return LocalServer("transformers", None, port=port, log=log, env=cores, startup_timeout=900)


def served_reasoner(server, settings: QRReasoner, **options) -> QRReasoner:
    return QRReasoner(
        server.model_name,
        backend="openai",
        base_url=server.base_url,
        template=settings.template,
        generation=settings.generation,
        mode=settings.mode,
        concurrency=64,
        sampling_extras=True,
        **options,
    )


def vllm_rows(
    python: Path,
    settings: QRReasoner,
    queries: list[str],
    concurrency: list[int],
    rate: float | None,
    threads: int | None,
    label: str,
) -> list[dict]:
    log = Path(tempfile.gettempdir()) / "tongsearch-qr-online-vllm.log"
    start = time.perf_counter()
    with start_server(python, 8793, log, threads) as server:
        print(f"[vllm serve] up in {time.perf_counter() - start:.0f} s", flush=True)
        return measure(
            "vllm serve (openai backend)", lambda: served_reasoner(server, settings), None, queries, concurrency, rate, label
        )


def fault_run(
    python: Path | None,
    settings: QRReasoner,
    queries: list[str],
    threads: int | None,
    rate: float = 2.0,
    down_after: float = 15.0,
    back_for: float = 10.0,
) -> dict:
    """Requests at ``rate``/s while the server is killed after ``down_after`` s and restarted at once; requests go on
    until it has been back ``back_for`` s. Every request's outcome is counted by phase."""
    log = Path(tempfile.gettempdir()) / "tongsearch-qr-online-fault.log"
    server = start_server(python, 8794, log, threads).start()
    reasoner = served_reasoner(server, settings, on_error="question", timeout=5.0)
    reasoner.rewrites(queries[:2])  # warm
    outcomes: list[tuple[str, str]] = []  # (phase, outcome)
    lock = threading.Lock()
    phase = {"now": "before the kill", "back_at": None}

    def ask(query: str) -> None:
        asked_in = phase["now"]
        try:
            [rewrite] = reasoner.rewrites([query])
            outcome = "reasoned" if rewrite.fallback is None else f"question ({rewrite.fallback})"
        except Exception as exc:  # counted: the fallback must leave none
            outcome = f"error ({type(exc).__name__})"
        with lock:
            outcomes.append((asked_in, outcome))

    def kill_and_restart() -> None:
        time.sleep(down_after)
        server.kill()
        phase["now"] = "server down"
        killed = time.perf_counter()
        server.start()
        phase.update(now="after the restart", back_at=time.perf_counter())
        print(f"[fault] killed, back after {phase['back_at'] - killed:.0f} s", flush=True)

    chaos = threading.Thread(target=kill_and_restart)
    chaos.start()
    threads, sent, rng = [], 0, random.Random(1)
    try:
        while phase["back_at"] is None or time.perf_counter() - phase["back_at"] < back_for:
            query = queries[sent % len(queries)]
            threads.append(threading.Thread(target=ask, args=(query if sent < len(queries) else f"{query} ({sent})",)))
            threads[-1].start()
            sent += 1
            time.sleep(rng.expovariate(rate))
        for thread in threads:
            thread.join(timeout=120)
        chaos.join()
    finally:
        server.stop()
    counts = Counter(outcomes)
    return {
        "sent": sent,
        "answered": len(outcomes),
        "lost": sent - len(outcomes),
        "counts": {f"{p}: {o}": n for (p, o), n in sorted(counts.items())},
        "stats": dict(reasoner.stats),
        "server": "vllm serve" if python is not None else "transformers serve",
    }


def ratios(rows: list[dict]) -> list[str]:
    """The comparisons of each backend: 32 users against one batch call, and the p95 at 8 users and queries/s at 32
    users of taking turns (and of today's code, when merged) against the shared engine."""
    lines = []
    for backend in dict.fromkeys(row["backend"] for row in rows):
        by = {row["label"]: row for row in rows if row["backend"] == backend}
        today = next((label.partition(", ")[0] for label in by if label.startswith("today")), None)
        batch, c32 = by.get("one batch call"), by.get("closed loop, 32 users")
        if batch and c32:
            lines.append(
                f"- {backend}: one batch call {batch['qps']:.2f} q/s, 32 users {c32['qps']:.2f} q/s: the "
                f"batch is {batch['qps'] / c32['qps']:.2f}x faster"
            )
        new8, old8 = by.get("closed loop, 8 users"), by.get("turns, closed loop, 8 users")
        if new8 and old8:
            lines.append(
                f"- {backend}: p95 at 8 users {new8['p95']:.2f} s shared against {old8['p95']:.2f} s taking "
                f"turns: {old8['p95'] / new8['p95']:.2f}x lower"
            )
        c32old = by.get("turns, closed loop, 32 users")
        if c32 and c32old:
            lines.append(
                f"- {backend}: 32 users {c32['qps']:.2f} q/s shared against {c32old['qps']:.2f} q/s taking "
                f"turns: {c32['qps'] / c32old['qps']:.2f}x"
            )
        then8, then32 = by.get(f"{today}, closed loop, 8 users"), by.get(f"{today}, closed loop, 32 users")
        if new8 and then8:
            lines.append(
                f"- {backend}: p95 at 8 users {new8['p95']:.2f} s against {then8['p95']:.2f} s with {today}: "
                f"{then8['p95'] / new8['p95']:.2f}x lower"
            )
        if c32 and then32:
            lines.append(
                f"- {backend}: 32 users {c32['qps']:.2f} q/s against {then32['qps']:.2f} q/s with {today}: "
                f"{c32['qps'] / then32['qps']:.2f}x"
            )
    return lines


def table(rows: list[dict]) -> list[str]:
    lines = ["| backend | how the requests arrive | queries/s | p50 | p95 | p99 | load |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        late = [f"{row[k]:.2f} s" if k in row else "—" for k in ("p50", "p95", "p99")]
        lines.append(f"| {row['backend']} | {row['label']} | {row['qps']:.2f} | " + " | ".join(late) + f" | {row['load']:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--rate", type=float, default=None, help="open loop: requests per second (default: 3/4 of one batch call's queries/s)"
    )
    parser.add_argument("--backends", nargs="+", default=["auto", "transformers", "vllm-serve"])
    parser.add_argument("--fault", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of every engine, servers included (default: theirs, every core); 1 keeps "
        "llama.cpp's and OpenMP's spinning threads from stalling when other work takes a core",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--label", default="", help="a name put before each row's label (e.g. today (COMMIT)); with it no turns rows are run"
    )
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="JSON files of other runs whose rows join the table and ratios"
    )
    args = parser.parse_args()
    command = "python benchmarks/online.py " + " ".join(sys.argv[1:])
    queries = bright_queries("biology", args.queries)
    load_before = os.getloadavg()
    # the shipped reasoner on the default path: its prompt, mode and length
    settings = QRReasoner(**({"threads": args.threads} if args.threads else {}))
    settings.generation = settings.generation.with_(seed=0)
    rows, notes, prefix = [], [], f"{args.label}, " if args.label else ""
    for backend in args.backends:
        if backend == "vllm-serve":
            if not args.vllm_python.exists():
                notes.append(f"vllm serve left out: {args.vllm_python} does not exist (make setup-vllm)")
                print(notes[-1], flush=True)
                continue
            rows += vllm_rows(args.vllm_python, settings, queries, args.concurrency, args.rate, args.threads, prefix)
        else:
            rows += local_rows(backend, settings, queries, args.concurrency, args.rate, args.threads, prefix)
    fault = None
    if args.fault:
        python = args.vllm_python if args.vllm_python.exists() else None
        fault = fault_run(python, settings, bright_queries("biology") + bright_queries("earth_science"), args.threads)
        print(f"[fault] {fault}", flush=True)
    load_after = os.getloadavg()
    for merged in args.merge:
        rows += json.loads(merged.read_text())["rows"]
    rows = [row for backend in dict.fromkeys(r["backend"] for r in rows) for row in rows if row["backend"] == backend]
    lines = [
        f"# Online serving: `{command}`",
        "",
        f"{len(queries)} BRIGHT biology questions, each request `rewrites([query])` on one shared reasoner (the "
        f"shipped reasoner's prompt and mode, {settings.generation.max_new_tokens} new tokens, seed 0); "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before and {load_after[0]:.2f} after "
        "(other work on the machine counts in both; `load`: the 1-minute load average as each row ended). "
        "Latency p50/p95/p99 per request; `turns`: each call holds the engine alone until done (the llama.cpp "
        "backend before requests shared it).",
        "",
        *table(rows),
        "",
        *ratios(rows),
        *[f"- {note}" for note in notes],
    ]
    if fault is not None:
        lines += [
            "",
            f"Fault run ({fault['server']}, on_error='question', timeout 5 s, requests at 2/s, killed "
            f"under load and restarted): {fault['sent']} sent, {fault['answered']} answered, {fault['lost']} "
            "lost.",
            "",
            "| phase: outcome | requests |",
            "|---|---|",
            *[f"| {key} | {count} |" for key, count in fault["counts"].items()],
            "",
            f"reasoner.stats: {fault['stats']}",
        ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(
        json.dumps({"command": command, "rows": rows, "fault": fault, "load": [load_before, load_after]}, indent=1)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
