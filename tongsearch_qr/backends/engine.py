"""Requests from many callers served together: one background thread per backend, futures per row.

A backend that serves concurrent callers (threads, asyncio tasks, :meth:`QRReasoner.with_` copies) queues each row
it is asked for as a :class:`Job` and returns the row's future at once (``submit``); one thread, started when work
arrives and gone when there is none, runs the engine over whatever is queued (:class:`BackgroundEngine`), so requests
that arrive while it decodes join its next batch instead of taking turns. ``generate`` is ``submit`` and
:func:`wait_rows`. A backend without ``submit`` is run in a thread of its own per call (:func:`submit_rows`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, as_completed
from dataclasses import dataclass, field
from typing import Any

from ..errors import RequestRejectedError
from ..generation import GenerationParams
from ..prompts import PromptTemplate
from .base import Backend, ResultCallback, generate_rows

_arrivals = itertools.count()


@dataclass(eq=False)
class Job:
    """One row to generate: its prompt token ids, decoding settings, sample index and seed (``None``: unseeded),
    the future its completion goes to, and when it arrived (``order``, across all backends)."""

    prompt: list[int]
    params: GenerationParams
    sample: int
    seed: int | None = None
    future: Future[str] = field(default_factory=Future)
    order: int = field(default_factory=lambda: next(_arrivals))
    context: Any = None  # what else the engine needs for this row (e.g. the prompt's shared prefix)


def resolve(future: Future[str], text: str | None = None, error: BaseException | None = None) -> None:
    """Set a row's result (or ``error``) unless it is already set."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(text or "")
    except InvalidStateError:
        pass


class BackgroundEngine:
    """Jobs queued by any number of callers, served by one background thread that runs while there is work.

    Subclasses implement :meth:`_serve_once` (one unit of work: a decoding step, a batch) and :meth:`_active` (work
    taken from the queue and not finished); the thread ends when both the queue and the active work are empty, and
    the next :meth:`put` starts another. An error that escapes :meth:`_serve_once` fails the jobs it held
    (:meth:`_fail_active`) and the thread goes on with the queue.
    """

    def __init__(self, name: str):
        self._name = name
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` (their futures get the completions) and make sure the thread runs."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            self._pending.extend(jobs)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def shut(self) -> None:
        """Refuse new jobs, fail the queued ones and wait for the thread to finish what it holds."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            thread = self._thread
        for job in pending:
            resolve(job.future, error=RuntimeError(f"{self._name} was closed"))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _take(self) -> list[Job]:
        """Remove and return every queued job, in arrival order; call with the lock held."""
        taken, self._pending = self._pending, []
        return taken

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._pending and not self._active():
                        return
                try:
                    self._serve_once()
                except Exception as exc:  # the rows held fail; the queue is served on
                    self._fail_active(exc)
        finally:
            with self._cond:
                self._thread = None
                if self._pending and not self._closed:  # left by an error that ended the thread: serve them
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()

    def _serve_once(self) -> None:
        raise NotImplementedError

    def _active(self) -> bool:
        return False

    def _fail_active(self, error: BaseException) -> None:
        pass


class GatheringEngine(BackgroundEngine):
    """Dynamic batching: each round takes every queued job and hands them to ``serve(jobs)`` (which resolves their
    futures, e.g. in batches); jobs that arrive meanwhile form the next round."""

    def __init__(self, name: str, serve: Callable[[list[Job]], None]):
        super().__init__(name)
        self._serve = serve
        self._held: list[Job] = []

    def _serve_once(self) -> None:
        with self._cond:
            self._held = self._take()
        try:
            self._serve(self._held)
        except Exception as exc:
            for job in self._held:
                resolve(job.future, error=exc)
        else:
            for job in self._held:  # a row the engine did not answer is an error, never a hang
                resolve(job.future, error=RuntimeError("the engine returned no completion for this row"))
        finally:
            self._held = []

    def _active(self) -> bool:
        return bool(self._held)


def submit_rows(
    backend: Backend, questions: Sequence[str], template: PromptTemplate, params: GenerationParams, samples: Sequence[int]
) -> list[Future[str]]:
    """One future per row: ``backend.submit`` where the backend has it, else its ``generate`` run in a thread of its
    own (the completions it reports go to their futures at once; an error fails the rows it left)."""
    submit = getattr(backend, "submit", None)
    if submit is not None:
        return submit(questions, template, params, samples=samples)
    futures: list[Future[str]] = [Future() for _ in questions]

    def run() -> None:
        try:
            texts = generate_rows(backend, questions, template, params, lambda row, text: resolve(futures[row], text), samples)
            for future, text in zip(futures, texts):
                resolve(future, text)
        except BaseException as exc:
            for future in futures:
                resolve(future, error=exc)

    threading.Thread(target=run, name="tongsearch-qr-generate", daemon=True).start()
    return futures


def wait_rows(futures: Sequence[Future[str]], questions: Sequence[str], on_result: ResultCallback | None) -> list[str]:
    """The rows' completions in input order once all are in, ``on_result`` called (in this thread) as each arrives.
    Rows that failed raise after the others finished: rejected requests together as one
    :class:`~tongsearch_qr.errors.RequestRejectedError`, any other error as it is."""
    index = {future: row for row, future in enumerate(futures)}
    for future in as_completed(futures):
        if future.exception() is None and on_result is not None:
            on_result(index[future], future.result())
    errors = {row: error for row, future in enumerate(futures) if (error := future.exception()) is not None}
    raise_row_errors(errors, questions)
    return [future.result() for future in futures]


def raise_row_errors(errors: dict[Any, BaseException], questions: Sequence[str]) -> None:
    """Raise what failed rows failed with (``errors``: row -> its exception): the first error that is not a rejection,
    else one :class:`~tongsearch_qr.errors.RequestRejectedError` naming every rejected question of ``questions``."""
    if not errors:
        return
    for error in errors.values():
        if not isinstance(error, RequestRejectedError):
            raise error
    rejected: dict[str, str] = {}
    for error in errors.values():
        assert isinstance(error, RequestRejectedError)
        rejected.update(error.rejected)
    raise RequestRejectedError(rejected, len(set(questions)))
