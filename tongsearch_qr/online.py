"""Serving many callers from one reasoner: reasoning in flight shared between calls, time budgets, and what a
query gets when its reasoning fails or comes late (``on_error``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, TypeVar

from .errors import BackendUnavailableError, RequestRejectedError

T = TypeVar("T")

#: what a call does when a query's reasoning fails or is late: raise, or send the question alone
ON_ERROR = ("raise", "question")
#: the kinds of failure a fallback is counted under (``reasoner.stats["fallback_<kind>"]``)
FAILURE_KINDS = ("timeout", "unavailable", "rejected", "error")


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
    return on_error


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0 or None (no limit), got {timeout!r}")
    return timeout


@dataclass(frozen=True)
class Budget:
    """A call's ``timeout`` (seconds, ``None``: none), its ``deadline`` on :func:`time.monotonic`'s clock and its
    ``on_error``."""

    timeout: float | None
    deadline: float | None
    on_error: str

    @classmethod
    def start(cls, timeout: float | None, on_error: str) -> Budget:
        return cls(timeout, None if timeout is None else time.monotonic() + timeout, on_error)

    def left(self) -> float | None:
        """Seconds left (``None``: no limit; never below 0)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


def budget_for(
    timeout: float | None | EllipsisType, on_error: str | None, default_timeout: float | None, default_on_error: str
) -> Budget:
    """A call's budget: its own ``timeout`` and ``on_error`` where given (``...`` / ``None``: the reasoner's)."""
    chosen = default_timeout if isinstance(timeout, EllipsisType) else check_timeout(timeout)
    return Budget.start(chosen, check_on_error(on_error or default_on_error))


def failure_kind(error: BaseException | None) -> str:
    """The kind of failure (one of :data:`FAILURE_KINDS`) a reasoning failed with (``None``: it came late)."""
    if error is None or isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, RequestRejectedError):
        return "rejected"
    if isinstance(error, BackendUnavailableError):
        return "unavailable"
    return "error"


class InFlight:
    """Reasonings being generated, by (configuration, input, sample), shared by every caller of a reasoner and its
    copies: a caller that asks for one already on its way waits for it instead of generating it again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.futures: dict[tuple[str, str, int], Future[str]] = {}

    def claim(
        self, slots: Iterable[tuple[str, str, int]]
    ) -> tuple[dict[tuple[str, str, int], Future[str]], list[tuple[str, str, int]]]:
        """The future of each slot, and the slots this caller must generate (those nobody was generating)."""
        futures, fresh = {}, []
        with self.lock:
            for slot in slots:
                if slot not in self.futures:
                    self.futures[slot] = Future()
                    fresh.append(slot)
                futures[slot] = self.futures[slot]
        return futures, fresh

    def finish(self, slot: tuple[str, str, int], text: str | None = None, error: BaseException | None = None) -> None:
        """Hand the slot's reasoning (or ``error``) to everyone waiting for it; later callers read the cache."""
        future = self.futures[slot]
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(text or "")
        with self.lock:
            self.futures.pop(slot, None)


def in_thread(function: Callable[..., T], *args: Any) -> Future[T]:
    """``function(*args)`` in a thread of its own; its result (or error) in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)

    threading.Thread(target=run, name="tongsearch-qr-call", daemon=True).start()
    return future


def wait_until(futures: Iterable[Future[Any]], budget: Budget, on_done: Callable[[int], None] | None = None) -> None:
    """Block until every future is done or the budget's deadline passes; ``on_done(n)`` as ``n`` more finish."""
    left = {future for future in futures if not future.done()}
    while left:
        done, left = wait(left, timeout=budget.left(), return_when=FIRST_COMPLETED)
        if not done:  # the deadline passed
            return
        if on_done is not None:
            on_done(len(done))


async def await_until(futures: Iterable[Future[Any]], budget: Budget) -> None:
    """:func:`wait_until` for a coroutine: the event loop runs on while the futures (done in other threads) finish."""
    left = [future for future in futures if not future.done()]
    if not left:
        return
    loop = asyncio.get_running_loop()
    all_done = loop.create_future()
    count, lock = [len(left)], threading.Lock()

    def set_done() -> None:
        if not all_done.done():
            all_done.set_result(None)

    def one_done(_: Future[Any]) -> None:
        with lock:
            count[0] -= 1
            last = count[0] == 0
        if last:
            try:
                loop.call_soon_threadsafe(set_done)
            except RuntimeError:  # the caller's loop has closed
                pass

    for future in left:
        future.add_done_callback(one_done)
    try:
        await asyncio.wait_for(asyncio.shield(all_done), budget.left())
    except asyncio.TimeoutError:  # the deadline passed (not the builtin TimeoutError before Python 3.11)
        pass
