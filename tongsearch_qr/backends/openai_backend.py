"""Generation through any OpenAI-compatible chat completions server (``vllm serve``, ``trl vllm-serve``,
``transformers serve``, TGI, llama.cpp's server, hosted APIs).

Requests go out concurrently (at most ``concurrency`` in flight per server) over async HTTP connection pools,
spread over several servers when given (least outstanding requests first; a dead server's questions go to the
others); each finished completion is handed to ``on_result`` at once, so the reasoner writes it to its cache
before the rest are done. 429 and 5xx answers, timeouts and dropped connections are retried with
exponential backoff (``Retry-After`` honoured); when retries run out the call fails with
:class:`~tongsearch_qr.errors.BackendUnavailableError` and everything finished so far is kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from ..errors import BackendUnavailableError
from ..generation import GenerationParams
from ..prompts import PromptTemplate
from .base import ResultCallback, requests_with_n, sample_indices

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIBackend:
    """Reasoning from one or several OpenAI-compatible ``/chat/completions`` endpoints.

    ``model`` is the name the servers serve (``$TONGSEARCH_QR_OPENAI_MODEL`` when not given); ``base_url`` is
    one URL or a list of them (several replicas of the same model, e.g. one ``vllm serve`` per GPU), default
    ``$OPENAI_BASE_URL`` (comma-separated for several), then ``http://127.0.0.1:8000/v1``. The API key comes
    from ``$OPENAI_API_KEY`` (``api_key_env`` names another variable). ``top_k`` and ``repetition_penalty`` are
    sent as extra fields, as vLLM, TGI and llama.cpp accept them; set ``sampling_extras=False`` for strict APIs
    that reject unknown fields. Cached reasoning is keyed by the served model's name, not the URL: serve
    different weights under different names.

    With several servers each request goes to the live server with the fewest requests in flight (at most
    ``concurrency`` per server). A server that cannot be connected to, or drops connections
    ``max_server_failures`` times in a row, is taken out of the run and its in-flight questions go to the
    others; nothing is lost and each question's completion is reported once. ``server_counts`` holds the
    completions each server delivered in the last call.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout: float = 300.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sampling_extras: bool = True,
        max_server_failures: int = 2,
    ):
        try:
            import httpx  # noqa: F401
        except ImportError as exc:
            raise ImportError("the openai backend needs httpx: pip install 'tongsearch-qr[openai]'") from exc
        model = model or os.environ.get("TONGSEARCH_QR_OPENAI_MODEL")
        if not model or model == "default":
            raise ValueError("the openai backend needs the served model's name: QRReasoner('<name>', backend='openai') "
                             "or --model <name> (or set TONGSEARCH_QR_OPENAI_MODEL)")
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0 or max_server_failures < 1:
            raise ValueError("concurrency must be >= 1, max_retries >= 0, timeout > 0, backoff >= 0 and "
                             "max_server_failures >= 1")
        self.model = str(model)
        urls = base_url if base_url is not None else (os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else [str(u).strip() for u in urls]
        self.base_urls = list(dict.fromkeys(u.rstrip("/") for u in urls if u))
        if not self.base_urls:
            raise ValueError("base_url names no server")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        self.base_url = self.base_urls[0]
        self.api_key = os.environ.get(api_key_env, "")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sampling_extras = sampling_extras
        self.max_server_failures = max_server_failures
        self.server_counts: dict[str, int] = {}
        # keyed by the served model, not by where it is served: the same model behind another host or port hits
        self.cache_id = f"openai:{self.model}"

    def request_body(self, question: str, template: PromptTemplate, params: GenerationParams,
                     n: int = 1) -> dict[str, Any]:
        """The JSON body of the chat completion request for ``n`` completions of ``question``."""
        body: dict[str, Any] = {"model": self.model, "messages": template.messages(question),
                                "max_tokens": params.max_new_tokens, "n": n}
        if params.do_sample:
            body.update(temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                body["seed"] = params.seed
            if self.sampling_extras and params.top_k > 0:
                body["top_k"] = params.top_k
        else:
            body["temperature"] = 0.0
        if self.sampling_extras and params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        return body

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions`` in input order; ``on_result`` is called as each one arrives. The
        samples of a question are one request with ``n`` (seeded, choice ``j`` is sample ``j``)."""
        requests = requests_with_n(questions, sample_indices(questions, samples), params.seed is not None)
        bodies = [(self.request_body(q, template, params, n), rows) for q, n, rows in requests]
        return _run_coroutine(self._generate_all(bodies, len(questions), on_result))

    async def _generate_all(self, bodies: list[tuple[dict[str, Any], list[tuple[int, int]]]], count: int,
                            on_result: ResultCallback | None) -> list[str]:
        import httpx

        results: list[str | None] = [None] * count
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
        clients = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout)
                   for url in self.base_urls]
        try:
            pool = _ServerPool(self.base_urls, clients, self.concurrency, self.max_server_failures)
            await self._check_reachable(pool)

            async def one(i: int) -> None:
                body, rows = bodies[i]
                choices = await self._complete(pool, body)
                for j, row in rows:
                    results[row] = choices[j]
                    if on_result is not None:
                        on_result(row, choices[j])

            tasks = [asyncio.create_task(one(i)) for i in range(len(bodies))]
            try:
                await asyncio.gather(*tasks)
            finally:  # first failure: stop the rest, but let finished ones have been reported
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.server_counts = dict(pool.delivered)
                if len(self.base_urls) > 1:
                    log.info("completions per server: %s%s", pool.delivered,
                             f"; taken out: {sorted(pool.dead)}" if pool.dead else "")
        finally:
            for client in clients:
                await client.aclose()
        return [r if r is not None else "" for r in results]

    async def _check_reachable(self, pool: _ServerPool) -> None:
        import httpx

        problems = {}
        for url, client in zip(pool.urls, pool.clients):
            try:
                await client.get("/models", timeout=min(10.0, self.timeout))
            except httpx.TransportError as exc:
                problems[url] = f"{type(exc).__name__}: {exc}"
                pool.dead.add(url)
        if len(problems) == len(pool.urls):
            listing = "; ".join(f"{url} ({why})" for url, why in problems.items())
            raise BackendUnavailableError(
                f"no OpenAI-compatible server answers at {listing}. Start one, e.g. `vllm serve <model>` or "
                "`transformers serve <model>`, and pass its URL (base_url= / --base-url)")
        for url, why in problems.items():
            log.warning("server %s does not answer (%s); going on with the others", url, why)

    async def _complete(self, pool: _ServerPool, body: dict[str, Any]) -> list[str]:
        import httpx

        problem, retry_after, attempt, tried = "", None, 0, set()
        while attempt <= self.max_retries:
            url, client = await pool.acquire(tried)
            try:
                response = await client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:
                problem = f"{url}: {type(exc).__name__}: {exc}"
                pool.failed(url, connect=isinstance(exc, httpx.ConnectError))
                tried.add(url)
                if pool.untried(tried):
                    continue  # a dropped connection: the question goes at once to a live server it has not tried
                attempt += 1
                await asyncio.sleep(self._delay(attempt, None))
                continue
            finally:
                await pool.release(url)
            if response.status_code in RETRY_STATUS:
                problem = f"{url}: HTTP {response.status_code}: {response.text[:200]}"
                retry_after = response.headers.get("retry-after")
                attempt += 1
                await asyncio.sleep(self._delay(attempt, retry_after))
                continue
            if response.status_code != 200:
                raise BackendUnavailableError(
                    f"{url} refused a request for model {self.model!r}: HTTP {response.status_code}: "
                    f"{response.text[:500]}"
                )
            pool.succeeded(url)
            return _completion_texts(response, url, body["n"])
        raise BackendUnavailableError(
            f"{', '.join(self.base_urls)}: a request failed {self.max_retries + 1} times in a row (last: {problem}); "
            "completions finished before this are kept in the reasoning cache: rerun to resume"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry number ``attempt``: the server's ``Retry-After`` (in seconds) when it sent
        one, else exponential backoff with jitter; both capped at ``max_backoff``."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * random.uniform(0.5, 1.0)


class _ServerPool:
    """Client-side spreading over replicas: least outstanding requests among the live servers, at most
    ``per_server`` in flight on each; a server is taken out after ``max_failures`` dropped connections in a
    row (at once when it refuses connections) while others are live."""

    def __init__(self, urls: list[str], clients: list[Any], per_server: int, max_failures: int):
        self.urls, self.clients, self.per_server, self.max_failures = urls, clients, per_server, max_failures
        self.in_flight = dict.fromkeys(urls, 0)
        self.failures = dict.fromkeys(urls, 0)
        self.delivered = dict.fromkeys(urls, 0)
        self.dead: set[str] = set()
        self._changed = asyncio.Condition()

    def alive(self) -> list[str]:
        return [u for u in self.urls if u not in self.dead]

    def untried(self, tried: AbstractSet[str]) -> list[str]:
        """Live servers a question has not failed on yet."""
        return [u for u in self.alive() if u not in tried]

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

    def succeeded(self, url: str) -> None:
        self.failures[url] = 0
        self.delivered[url] += 1

    def failed(self, url: str, *, connect: bool) -> None:
        """Count a dropped connection; ``url`` goes out of the run (never the last live server) when it
        refused the connection or dropped ``max_failures`` in a row."""
        self.failures[url] += 1
        if (connect or self.failures[url] >= self.max_failures) and len(self.alive()) > 1 and url not in self.dead:
            self.dead.add(url)
            log.warning("server %s is out of this run (%d failed requests); its questions go to the others", url,
                        self.failures[url])


def _completion_texts(response: Any, base_url: str, n: int) -> list[str]:
    """The ``n`` completions of a reply, by choice index."""
    try:
        choices = {int(choice.get("index", 0)): choice["message"].get("content") or ""
                   for choice in response.json()["choices"]}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BackendUnavailableError(f"{base_url} sent a reply that is not a chat completion: {response.text[:300]}") from exc
    if set(choices) != set(range(n)):
        raise BackendUnavailableError(
            f"{base_url} sent choices {sorted(choices)} for n={n}; the server must support the 'n' parameter "
            "to sample several reasonings per query (vLLM does)")
    return [choices[j] for j in range(n)]


def _run_coroutine(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion, also when called from inside a running event loop (notebooks,
    async frameworks): then it runs on its own loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="tongsearch-qr-openai")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
