"""Generation through any OpenAI-compatible chat completions server (``vllm serve``, ``trl vllm-serve``,
``transformers serve``, TGI, llama.cpp's server, hosted APIs).

Requests go out concurrently (at most ``concurrency`` in flight) over one async HTTP connection pool;
each finished completion is handed to ``on_result`` at once, so the reasoner writes it to its cache
before the rest are done. 429 and 5xx answers, timeouts and dropped connections are retried with
exponential backoff (``Retry-After`` honoured); when retries run out the call fails with
:class:`~tongsearch_qr.errors.BackendUnavailableError` and everything finished so far is kept.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import BackendUnavailableError
from ..generation import GenerationParams
from ..prompts import PromptTemplate
from .base import ResultCallback

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIBackend:
    """Reasoning from an OpenAI-compatible ``/chat/completions`` endpoint.

    ``model`` is the name the server serves (``$TONGSEARCH_QR_OPENAI_MODEL`` when not given);
    ``base_url`` defaults to ``$OPENAI_BASE_URL``, then ``http://127.0.0.1:8000/v1``; the API key
    comes from ``$OPENAI_API_KEY`` (``api_key_env`` names another variable). ``top_k`` and
    ``repetition_penalty`` are sent as extra fields, as vLLM, TGI and llama.cpp accept them; set
    ``sampling_extras=False`` for strict APIs that reject unknown fields. Cached reasoning is keyed by the
    served model's name, not the URL: serve different weights under different names.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout: float = 300.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sampling_extras: bool = True,
    ):
        try:
            import httpx  # noqa: F401
        except ImportError as exc:
            raise ImportError("the openai backend needs httpx: pip install 'tongsearch-qr[openai]'") from exc
        model = model or os.environ.get("TONGSEARCH_QR_OPENAI_MODEL")
        if not model or model == "default":
            raise ValueError("the openai backend needs the served model's name: QRReasoner('<name>', backend='openai') "
                             "or --model <name> (or set TONGSEARCH_QR_OPENAI_MODEL)")
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0, timeout > 0 and backoff >= 0")
        self.model = str(model)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self.api_key = os.environ.get(api_key_env, "")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sampling_extras = sampling_extras
        # keyed by the served model, not by where it is served: the same model behind another host or port hits
        self.cache_id = f"openai:{self.model}"

    def request_body(self, question: str, template: PromptTemplate, params: GenerationParams) -> dict[str, Any]:
        """The JSON body of the chat completion request for ``question``."""
        body: dict[str, Any] = {"model": self.model, "messages": template.messages(question),
                                "max_tokens": params.max_new_tokens, "n": 1}
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
    ) -> list[str]:
        """Completions for ``questions`` in input order; ``on_result`` is called as each one arrives."""
        bodies = [self.request_body(q, template, params) for q in questions]
        return _run_coroutine(self._generate_all(bodies, on_result))

    async def _generate_all(self, bodies: list[dict[str, Any]], on_result: ResultCallback | None) -> list[str]:
        import httpx

        results: list[str | None] = [None] * len(bodies)
        gate = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits, timeout=timeout) as client:
            await self._check_reachable(client)

            async def one(i: int) -> None:
                async with gate:
                    results[i] = await self._complete(client, bodies[i])
                if on_result is not None:
                    on_result(i, results[i])

            tasks = [asyncio.create_task(one(i)) for i in range(len(bodies))]
            try:
                await asyncio.gather(*tasks)
            finally:  # first failure: stop the rest, but let finished ones have been reported
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return [r if r is not None else "" for r in results]

    async def _check_reachable(self, client: Any) -> None:
        import httpx

        try:
            await client.get("/models", timeout=min(10.0, self.timeout))
        except httpx.TransportError as exc:
            raise BackendUnavailableError(
                f"no OpenAI-compatible server answers at {self.base_url} ({type(exc).__name__}: {exc}). Start one, e.g. "
                f"`vllm serve <model>` or `transformers serve <model>`, and pass its URL (base_url= / --base-url)"
            ) from exc

    async def _complete(self, client: Any, body: dict[str, Any]) -> str:
        import httpx

        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                response = await client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                retry_after = response.headers.get("retry-after")
                continue
            if response.status_code != 200:
                raise BackendUnavailableError(
                    f"{self.base_url} refused a request for model {self.model!r}: HTTP {response.status_code}: "
                    f"{response.text[:500]}"
                )
            return _completion_text(response, self.base_url)
        raise BackendUnavailableError(
            f"{self.base_url} failed {self.max_retries + 1} times in a row (last: {problem}); completions finished "
            "before this are kept in the reasoning cache: rerun to resume"
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


def _completion_text(response: Any, base_url: str) -> str:
    try:
        message = response.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendUnavailableError(f"{base_url} sent a reply that is not a chat completion: {response.text[:300]}") from exc
    return message.get("content") or ""


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
