"""What the openai backend knows of its servers: the model they serve (its id in ``/v1/models`` and the context
length they report) and which of them are healthy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """The model the servers serve under a name: ``id``, what they list it as in ``/v1/models`` (requests send it
    and the reasoning cache keys by it), and the smallest context length they report (``None``: none does)."""

    id: str
    context_length: int | None


@dataclass(frozen=True)
class Survey:
    """Each answering server's ``/v1/models`` entries (``None``: it answered without a listing) and, for those that
    could not be reached, why."""

    listings: dict[str, list[dict[str, Any]] | None]
    unreachable: dict[str, str]


def survey(urls: Sequence[str], headers: dict[str, str], timeout: float) -> Survey:
    """Ask every server for ``/v1/models``; :class:`BackendUnavailableError` when none answers."""
    import httpx

    listings: dict[str, list[dict[str, Any]] | None] = {}
    unreachable: dict[str, str] = {}
    with httpx.Client(headers=headers, timeout=min(10.0, timeout)) as client:
        for url in urls:
            try:
                listings[url] = model_entries(client.get(f"{url}/models"))
            except httpx.TransportError as exc:
                unreachable[url] = f"{type(exc).__name__}: {exc}"
    for url, why in unreachable.items():
        if listings:
            log.warning("server %s does not answer (%s); going on with the others", url, why)
    return answering(listings, unreachable)


async def asurvey(pool: ServerPool, timeout: float) -> Survey:
    """:func:`survey` over the pool's survey connections (apart from the requests', so it never waits behind them),
    every server asked at once."""
    import httpx

    async def ask(url: str, client: Any) -> list[dict[str, Any]] | None | str:
        try:
            return model_entries(await client.get("/models", timeout=timeout))
        except httpx.TransportError as exc:
            return f"{type(exc).__name__}: {exc}"

    answers = await asyncio.gather(*(ask(url, client) for url, client in zip(pool.urls, pool.survey_clients)))
    return answering(
        {url: a for url, a in zip(pool.urls, answers) if not isinstance(a, str)},
        {url: a for url, a in zip(pool.urls, answers) if isinstance(a, str)},
    )


def answering(listings: dict[str, list[dict[str, Any]] | None], unreachable: dict[str, str]) -> Survey:
    """The :class:`Survey` of these answers; :class:`BackendUnavailableError` when no server answered."""
    if not listings:
        listing = "; ".join(f"{url} ({why})" for url, why in unreachable.items())
        raise BackendUnavailableError(
            f"no OpenAI-compatible server answers at {listing}. Start one, e.g. `tongsearch-qr serve`, `vllm serve "
            "<model>` or `transformers serve <model>`, and pass its URL (base_url= / --base-url)"
        )
    return Survey(listings, unreachable)


def model_entries(response: Any) -> list[dict[str, Any]] | None:
    """The model entries of a ``/v1/models`` answer (``None`` when it is not such a listing)."""
    if response.status_code != 200:
        return None
    try:
        data = response.json()["data"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, list):
        return None
    return [entry for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]


def listed_entry(entries: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The entry of the model called ``name`` in a listing: listed as ``name`` itself, else as ``name@<digest>`` (how
    ``tongsearch-qr serve`` lists a model); ``None`` when it is not listed."""
    entries = list(entries)
    exact = [entry for entry in entries if entry["id"] == name]
    if exact:
        return exact[0]
    digested = [entry for entry in entries if entry["id"].startswith(f"{name}@")]
    if len(digested) > 1:
        raise BackendUnavailableError(
            f"the server lists several models named {name}@...: "
            f"{', '.join(entry['id'] for entry in digested)}; pass the one to use as the model name"
        )
    return digested[0] if digested else None


def identify(name: str, found: Survey) -> ServedModel:
    """The model the servers serve as ``name``: the id they list it under (the same on every server that lists it;
    ``name`` itself when none does) and the smallest ``max_model_len`` they report for it."""
    entries = {
        url: entry for url, listing in found.listings.items() if listing and (entry := listed_entry(listing, name)) is not None
    }
    ids = {entry["id"] for entry in entries.values()}
    if len(ids) > 1:
        served = "; ".join(f"{url} serves {entry['id']!r}" for url, entry in entries.items())
        raise BackendUnavailableError(
            f"the servers serve different models as {name!r} ({served}); replicas must serve the same weights"
        )
    lengths = [
        entry["max_model_len"]
        for entry in entries.values()
        if isinstance(entry.get("max_model_len"), int) and entry["max_model_len"] > 0
    ]
    return ServedModel(ids.pop() if ids else name, min(lengths) if lengths else None)


class ServerPool:
    """Client-side spreading over replicas, shared by every call of a backend: least outstanding requests among the
    live servers, at most ``per_server`` in flight on each. A server goes out (never the last live one) when it
    refuses a connection, or after ``max_failures`` failures in a row: connections that failed or dropped, and 5xx
    answers. A busy server's timeouts count neither way; any other answer ends its run of failures. Each call's
    survey (:meth:`refresh`) brings back the servers that answer it and takes out those it cannot reach."""

    def __init__(
        self, urls: list[str], clients: list[Any], per_server: int, max_failures: int, survey_clients: list[Any] | None = None
    ):
        self.urls, self.clients, self.per_server, self.max_failures = urls, clients, per_server, max_failures
        self.survey_clients = survey_clients or clients
        self.in_flight = dict.fromkeys(urls, 0)
        self.failures = dict.fromkeys(urls, 0)
        self.dead: set[str] = set()
        self._changed = asyncio.Condition()

    def alive(self) -> list[str]:
        return [u for u in self.urls if u not in self.dead]

    def untried(self, tried: AbstractSet[str]) -> list[str]:
        """Live servers a question has not failed on yet."""
        return [u for u in self.alive() if u not in tried]

    def refresh(self, found: Survey) -> None:
        """A survey's news: the servers that answered it are live (their failures forgotten), those it could not
        reach are out."""
        for url in found.listings:
            if url in self.dead:
                log.warning("server %s answers again; it takes requests again", url)
            self.dead.discard(url)
            self.failures[url] = 0
        for url, why in found.unreachable.items():
            if url not in self.dead:
                self.dead.add(url)
                log.warning("server %s does not answer (%s); going on with the others", url, why)

    async def acquire(self, tried: AbstractSet[str] = frozenset()) -> tuple[str, Any]:
        """A server for a request, preferring those the question has not failed on."""
        async with self._changed:
            while True:
                live = self.untried(tried) or self.alive() or self.urls  # all out: retries and backoff decide
                free = [u for u in live if self.in_flight[u] < self.per_server]
                if free:
                    url = min(free, key=lambda u: self.in_flight[u])
                    self.in_flight[url] += 1
                    return url, self.clients[self.urls.index(url)]
                await self._changed.wait()

    async def release(self, url: str) -> None:
        async with self._changed:
            self.in_flight[url] -= 1
            self._changed.notify_all()

    def answered(self, url: str) -> None:
        """``url`` answered (not with a 5xx): its run of failures ends."""
        self.failures[url] = 0

    def failed(self, url: str, *, refused: bool = False) -> None:
        """Count a failed or dropped connection or a 5xx answer; ``url`` goes out (never the last live server) when it
        ``refused`` the connection or failed ``max_failures`` times in a row."""
        self.failures[url] += 1
        if (refused or self.failures[url] >= self.max_failures) and len(self.alive()) > 1 and url not in self.dead:
            self.dead.add(url)
            log.warning(
                "server %s is out of this run (%d failures in a row); its questions go to the others", url, self.failures[url]
            )

    async def aclose(self) -> None:
        """Close the connection pools."""
        for client in {id(c): c for c in self.clients + self.survey_clients}.values():
            await client.aclose()
