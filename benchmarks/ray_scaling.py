"""Reasoning on Ray on this machine: one process against a local Ray instance with 1 and 2 CPU actors, the same
seeded SciFact queries (float32, so every run must give the same texts), no cache.

    python benchmarks/ray_scaling.py [--queries 64] [--max-new-tokens 32] [--rows-per-task 8]

For each row: seconds to reason about the queries, queries/s, and for Ray the fixed cost (the probe that learns the
model's identity, and the pool's start: actors created, model loaded in each) apart from the generation; each row
runs --repeats times, interleaved with the others, and the fastest run counts (the machine is shared). It prints
(and writes to benchmarks/results/ray_scaling.txt) the 2-actor / 1-actor ratio and Ray's overhead per query
against one process with as many threads as the actor has.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import REPO, SHARED_DATA


def scifact_queries(count: int) -> list[str]:
    with (SHARED_DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(count), handle)]


def one_process(reasoner, queries: list[str], threads: int) -> tuple[float, list[list[str]]]:
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    texts = reasoner.reason_samples(queries)
    return time.perf_counter() - start, texts


def on_ray(queries: list[str], params, batch_size: int, actors: int) -> tuple[float, float, float, list[list[str]]]:
    """(probe seconds, pool start seconds, generation seconds, texts). The pool's start is timed on a job of one
    row per actor (actors created, model loaded, one short generation), which the full job repeats."""
    from tongsearch_qr.scale import ReasonerSpec, ray_reasoner

    spec = ReasonerSpec(backend="transformers", dtype="float32", batch_size=batch_size, generation=params)
    start = time.perf_counter()
    reasoner = ray_reasoner(spec, actors=actors, rows_per_task=batch_size)
    probe = time.perf_counter() - start
    start = time.perf_counter()
    reasoner.reason_samples([f"warm-up question {i}?" for i in range(actors)])
    pool_start = time.perf_counter() - start
    start = time.perf_counter()
    texts = reasoner.reason_samples(queries)
    return probe, pool_start, time.perf_counter() - start - pool_start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rows-per-task", type=int, default=8, help="also the one process's batch size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row, interleaved; the fastest is kept")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "ray_scaling.txt"))
    args = parser.parse_args()

    import ray

    from tongsearch_qr import GenerationParams, QRReasoner

    queries = scifact_queries(args.queries)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, seed=0)
    n = len(queries)
    reasoner = QRReasoner(backend="transformers", dtype="float32", batch_size=args.rows_per_task, generation=params)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False)
    started = time.perf_counter() - start
    seconds: dict[str, list[float]] = {}
    fixed: dict[str, list[tuple[float, float]]] = {}
    texts: dict[str, list[list[str]]] = {}
    for _ in range(args.repeats):  # interleaved, so that other work on the machine weighs on every row alike
        for threads in (1, 2):
            name = f"one process, {threads} thread(s)"
            took, texts[name] = one_process(reasoner, queries, threads)
            seconds.setdefault(name, []).append(took)
        for actors in (1, 2):
            name = f"Ray, {actors} actor(s) x 1 CPU"
            probe, pool_start, took, texts[name] = on_ray(queries, params, args.rows_per_task, actors)
            seconds.setdefault(name, []).append(took)
            fixed.setdefault(name, []).append((probe, pool_start))
    ray.shutdown()
    reference = texts["one process, 1 thread(s)"]
    best = {name: min(runs) for name, runs in seconds.items()}
    lines = [
        f"{n} SciFact queries, {args.max_new_tokens} new tokens, seeded, float32, batches of {args.rows_per_task}, "
        f"embedded model, this machine's 2 cores (shared); fastest of {args.repeats} interleaved runs",
        f"ray.init (local instance, 2 CPUs): {started:.1f} s",
    ]
    for name, took in best.items():
        extra = ""
        if name in fixed:
            probe, pool_start = min(fixed[name], key=sum)
            extra = f"  fixed: probe {probe:.1f} s, pool start {pool_start:.1f} s"
        lines.append(
            f"{name + ':':30} {took:7.1f} s {n / took:6.2f} queries/s  same texts: {texts[name] == reference}"
            f"  runs: {', '.join(f'{t:.0f}' for t in seconds[name])} s{extra}"
        )
    one_actor, two_actors = best["Ray, 1 actor(s) x 1 CPU"], best["Ray, 2 actor(s) x 1 CPU"]
    lines.append(f"scaling 1 -> 2 actors: {one_actor / two_actors:.2f}x (generation, the pool's start apart)")
    lines.append(
        f"Ray's overhead per query, 1 actor against one process on 1 thread: "
        f"{(one_actor - best['one process, 1 thread(s)']) / n * 1000:+.0f} ms (generation), plus "
        f"{sum(min(fixed['Ray, 1 actor(s) x 1 CPU'], key=sum)):.1f} s fixed per job"
    )
    text = "\n".join(lines)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
