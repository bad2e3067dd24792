"""Reasoning as a Ray Data job: a pool of actors, each holding a loaded reasoner, fed from the driver.

The driver owns the reasoning cache (one SQLite file: SQLite's locking is not safe on the network file systems
that nodes would share): it looks every (query, sample) up there, sends only the missing ones to the pool, and
stores each completion as its batch comes back, so a killed job rerun generates only what is missing.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..backends.base import ResultCallback, generate_rows, sample_indices
from ..errors import BackendUnavailableError, TongSearchError
from ..generation import GenerationParams
from ..modes import RewriteMode, get_mode
from ..prompts import PromptTemplate
from ..query_io import QueryRecord
from ..reasoner import CacheSpec, Feedback, QRReasoner
from .spec import ReasonerSpec, ResolvedSettings, resolve_settings
from .tables import query_columns, query_records, read_query_file, reasoning_rows, write_reasoning

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """``ray`` with Ray Data, or an error that says what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("ray"):
            raise
        raise ModuleNotFoundError(
            f"reasoning on Ray needs Ray Data ({exc}): pip install 'tongsearch-qr[ray]'", name="ray"
        ) from exc
    return ray


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``host:port`` of a ``ray start --head``, ``ray://host:port``, ``auto``),
    or, with ``None``, the one ``$RAY_ADDRESS`` names, else a new local instance. A Ray already started in this
    process is used as it is. An address that does not answer is a :class:`BackendUnavailableError` at once (Ray
    itself would retry for ever)."""
    ray = import_ray()
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target not in (None, "auto", "local"):
        host, _, port = target.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Ray address {target!r} is not host:port, ray://host:port, auto or local")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise BackendUnavailableError(
                f"no Ray cluster answers at {target} ({exc}): start one there with `ray start --head`, or check the address"
            ) from exc
    try:
        ray.init(address=address)
    except ConnectionError as exc:
        hint = ""
        if target not in (None, "auto", "local") and not os.environ.get("RAY_AUTH_MODE"):
            hint = (
                "; if the cluster uses Ray's token authentication (`ray start --head` turns it on since Ray 2.59), "
                "set RAY_AUTH_MODE=token here, with the cluster's token in ~/.ray/auth_token or $RAY_AUTH_TOKEN "
                "(`ray get-auth-token` on the head prints it): Ray sends it to an address given explicitly only "
                "then"
            )
        raise BackendUnavailableError(f"cannot join a Ray cluster at {target}: {exc}{hint}") from exc


@dataclass(frozen=True)
class ActorPool:
    """How many reasoner actors run, and what each one holds."""

    actors: int
    cpus: float
    gpus: float


def plan_pool(
    spec: ReasonerSpec,
    resources: Mapping[str, float],
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
) -> ActorPool:
    """The actor pool for ``spec`` on a cluster with ``resources`` (``ray.cluster_resources()``). By default an
    actor takes one CPU, and, when the cluster has GPUs and the backend uses them (auto, transformers or vllm, not
    ``device="cpu"``; llamacpp with ``device="cuda[:N]"``), one GPU (vllm: ``tensor_parallel_size`` of them); as
    many actors as the cluster holds."""
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ValueError(f"actors must be a whole number >= 1, got {actors!r}")
    for name, value in (("cpus_per_actor", cpus_per_actor), ("gpus_per_actor", gpus_per_actor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if gpus_per_actor is None:
        device = str(spec.kwargs.get("device", "auto"))
        uses_gpus = (spec.backend in ("auto", "transformers", "vllm") and device != "cpu") or (
            spec.backend == "llamacpp" and device.startswith("cuda")
        )  # llama.cpp offloads only when asked
        gpus_per_actor = float(spec.kwargs.get("tensor_parallel_size", 1)) if uses_gpus and resources.get("GPU") else 0.0
    cpus_per_actor = 1.0 if cpus_per_actor is None else float(cpus_per_actor)
    if actors is None:
        kind, need = ("GPU", gpus_per_actor) if gpus_per_actor else ("CPU", cpus_per_actor)
        actors = int(resources.get(kind, 0) // need) if need else 1
        if actors < 1:
            raise TongSearchError(
                f"the Ray cluster has {resources.get(kind, 0):g} {kind}s: not enough for one actor "
                f"of {need:g}; lower the {kind}s per actor"
            )
    return ActorPool(actors, cpus_per_actor, float(gpus_per_actor))


def remote_error(ray: Any, exc: BaseException) -> BaseException:
    """The error a Ray task or actor raised, out of Ray's wrappers (its remote traceback is logged at debug level)."""
    log.debug("remote failure: %s", exc)
    seen, current = set(), exc
    while isinstance(current, ray.exceptions.RayError) and id(current) not in seen:
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__
    return current if isinstance(current, BaseException) else exc


class ReasonerWorker:
    """A Ray Data actor: builds the spec's reasoner once, then generates the rows of each batch it is given."""

    def __init__(self, spec: ReasonerSpec, template: PromptTemplate, params: GenerationParams):
        self.backend = spec.build().backend
        self.template, self.params = template, params

    def __call__(self, batch: Any) -> dict[str, list]:
        questions, samples = batch["question"].to_pylist(), batch["sample"].to_pylist()
        texts = generate_rows(self.backend, questions, self.template, self.params, None, samples)
        return {"row": batch["row"].to_pylist(), "completion": list(texts), "cache_id": [self.backend.cache_id] * len(texts)}


class RayPoolBackend:
    """A :class:`~tongsearch_qr.backends.Backend` whose ``generate`` runs as a Ray Data job over an actor pool of
    ``spec``'s reasoner: rows go out in tasks of ``rows_per_task`` (longest questions first, so each task's batches
    pad little) and come back, as each task finishes, through ``on_result``. An actor that dies is restarted and
    its task retried (Ray Data's actor pools: ``max_restarts=-1``, ``max_task_retries=-1``); a row that comes back
    twice is counted in ``duplicates`` and reported once."""

    def __init__(self, spec: ReasonerSpec, cache_id: str, pool: ActorPool, *, rows_per_task: int = 64):
        if isinstance(rows_per_task, bool) or not isinstance(rows_per_task, int) or rows_per_task < 1:
            raise ValueError(f"rows_per_task must be a whole number >= 1, got {rows_per_task!r}")
        self.spec, self.cache_id, self.pool, self.rows_per_task = spec, cache_id, pool, rows_per_task
        self.duplicates = 0

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions``, in input order, generated by the pool."""
        import pyarrow as pa

        ray = import_ray()
        samples = sample_indices(questions, samples)
        if not questions:
            return []
        order = sorted(range(len(questions)), key=lambda i: len(questions[i]), reverse=True)
        tasks = [order[start : start + self.rows_per_task] for start in range(0, len(order), self.rows_per_task)]
        blocks = [
            pa.table({"row": rows, "question": [questions[i] for i in rows], "sample": [samples[i] for i in rows]})
            for rows in tasks
        ]
        dataset = ray.data.from_arrow(blocks).map_batches(
            ReasonerWorker,
            fn_constructor_args=(self.spec, template, params),
            batch_size=self.rows_per_task,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=min(self.pool.actors, len(tasks))),
            num_cpus=self.pool.cpus,
            num_gpus=self.pool.gpus,
        )
        dataset.context.enable_progress_bars = False  # the reasoner's own bar counts the queries
        dataset.context.raise_original_map_exception = True  # a worker's error as it raised it, not Ray's wrapper
        results: list[str | None] = [None] * len(questions)
        log.info(
            "%d rows in %d tasks of %d for %d actor(s) of %g CPU, %g GPU",
            len(questions),
            len(tasks),
            self.rows_per_task,
            self.pool.actors,
            self.pool.cpus,
            self.pool.gpus,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                self._collect(batch, results, on_result)
        except ray.exceptions.RayError as exc:
            raise remote_error(ray, exc) from None
        missing = sum(text is None for text in results)
        if missing:
            raise TongSearchError(f"the Ray job ended with {missing} of {len(questions)} rows not generated")
        return [text for text in results if text is not None]

    def _collect(self, batch: Any, results: list[str | None], on_result: ResultCallback | None) -> None:
        for row, text, cache_id in zip(*(batch[name].to_pylist() for name in ("row", "completion", "cache_id"))):
            if cache_id != self.cache_id:
                raise TongSearchError(
                    f"a Ray worker generated with {cache_id}, not {self.cache_id} as the first one "
                    "did (e.g. dtype auto on unlike hardware): give the dtype (--dtype)"
                )
            if results[row] is not None:
                self.duplicates += 1
                log.warning("row %d came back twice (a retried task): kept the first", row)
                continue
            results[row] = text
            if on_result is not None:
                on_result(row, text)


def ray_reasoner(
    spec: ReasonerSpec | None = None,
    *,
    cache: CacheSpec = None,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    rows_per_task: int = 64,
    progress: bool = False,
    feedback: Feedback | None = None,
) -> QRReasoner:
    """A :class:`~tongsearch_qr.QRReasoner` on this machine (the driver) that generates on a Ray actor pool.

    It joins the cluster (see :func:`connect`), builds ``spec``'s reasoner once on a worker to learn its settings
    and cache identity (a trained model's or a method's defaults applied there, as in one process), and keeps the
    ``cache`` here: cached (query, sample) pairs are never sent out, and each completion is cached as its task
    comes back. The pool (see :func:`plan_pool`) starts at each call that has anything to generate; on CPU actors,
    llama.cpp (``auto``/``llamacpp``) gets as many ``threads`` as the actor has CPUs unless ``spec`` sets them.
    """
    spec = spec or ReasonerSpec()
    ray = import_ray()
    connect(address)
    pool = plan_pool(spec, ray.cluster_resources(), actors, cpus_per_actor, gpus_per_actor)
    if not pool.gpus and spec.backend in ("auto", "llamacpp") and spec.kwargs.get("threads") is None:
        spec = spec.with_options(threads=max(1, int(pool.cpus)))
    probe = ray.remote(num_cpus=pool.cpus, num_gpus=pool.gpus)(resolve_settings)
    try:
        settings: ResolvedSettings = ray.get(probe.remote(spec))
    except ray.exceptions.RayError as exc:
        raise remote_error(ray, exc) from None
    backend = RayPoolBackend(spec, settings.cache_id, pool, rows_per_task=rows_per_task)
    return QRReasoner(
        backend=backend,
        template=settings.template,
        generation=settings.generation,
        mode=settings.mode,
        samples=settings.samples,
        cache=cache,
        progress=progress,
        feedback=feedback,
    )


def read_query_source(queries: str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | Dataset) -> list[QueryRecord]:
    """Query records from a file (JSONL, TSV, Parquet), a ``ray.data.Dataset`` with ``id, query`` (or ``_id,
    text``) columns (read in its order), a mapping of id to query, or a sequence of queries (ids ``"0"``, ``"1"``, ...)."""
    if isinstance(queries, (str, os.PathLike)):
        return read_query_file(queries)
    if isinstance(queries, Mapping):
        return query_records(queries.items(), "the queries")
    ray_data = sys.modules.get("ray.data")  # a Dataset exists only once Ray Data is imported
    if ray_data is not None and isinstance(queries, ray_data.Dataset):
        columns = query_columns(queries.columns(), "the dataset")
        selected = queries.select_columns(list(columns))
        options = selected.context.execution_options  # shared with ``queries``: restored below
        kept, options.preserve_order = options.preserve_order, True  # rows in the dataset's order, not as blocks finish
        try:
            batches = selected.iter_batches(batch_size=None, batch_format="pyarrow")
            return query_records(
                ((qid, query) for batch in batches for qid, query in zip(*(batch.column(name).to_pylist() for name in columns))),
                "the dataset",
            )
        finally:
            options.preserve_order = kept
    if isinstance(queries, Sequence):
        return query_records(enumerate(queries), "the queries")
    raise TypeError(f"queries must be a file path, a ray.data.Dataset, a mapping or a sequence, got {type(queries)}")


def reason_dataset(
    queries: str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | Dataset,
    spec: ReasonerSpec | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    mode: str | RewriteMode | None = None,
    progress: bool = True,
    **ray_options: Any,
) -> list[dict[str, object]]:
    """Reason about every query on a Ray cluster and return (and, with ``output``, write: JSONL, or Parquet for a
    ``.parquet`` path) the rows ``tongsearch-qr reason`` writes: ``id, query, reasoning, rewritten`` (and
    ``samples`` with several). ``queries``: see :func:`read_query_source`; ``ray_options`` go to
    :func:`ray_reasoner` (``cache``, ``address``, ``actors``, ``cpus_per_actor``, ``gpus_per_actor``,
    ``rows_per_task``)."""
    records = read_query_source(queries)
    reasoner = ray_reasoner(spec, progress=progress, **ray_options)
    samples = reasoner.reason_samples(cast("list[str]", [r.query for r in records]))  # unchecked: the reasoner checks them
    rows = reasoning_rows(records, samples, get_mode(mode) if mode is not None else reasoner.mode)
    if output is not None:
        write_reasoning(output, rows)
    log.info(
        "reasoning on Ray: %(queries)d unique queries, %(cached)d from the cache, %(generated)d generated, %(empty)d empty",
        {name: reasoner.stats[name] for name in ("queries", "cached", "generated", "empty")},
    )
    return rows
