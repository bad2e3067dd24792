"""Generation through any OpenAI-compatible chat completions server (``vllm serve``, ``trl vllm-serve``,
``transformers serve``, TGI, llama.cpp's server, hosted APIs).

Requests go out concurrently (at most ``concurrency`` in flight per server) over async HTTP connection pools,
spread over several servers when given (least outstanding requests first; a dead server's questions go to the
others); each finished completion is handed to ``on_result`` at once, so the reasoner writes it to its cache
before the rest are done. Every call on one backend (threads, asyncio tasks, ``QRReasoner.with_`` copies) shares
one event loop in a background thread, its connection pools and the servers' health: each call asks the servers
which of them answer, so a server taken out of a call comes back in the next one once it answers. 429 and 5xx
answers, timeouts and dropped connections are retried with exponential backoff (``Retry-After`` honoured); when
retries run out the call fails with :class:`~tongsearch_qr.errors.BackendUnavailableError` and everything finished
so far is kept. A request the server rejects for what it holds (400, 413, 422) fails alone: the others finish, then
:class:`~tongsearch_qr.errors.RequestRejectedError` names its question.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any

from ..errors import BackendUnavailableError, RequestRejectedError
from ..generation import GenerationParams
from ..prompts import PromptTemplate
from .base import EngineRequest, ResultCallback, requests_with_n, row_seed, sample_indices
from .engine import resolve, wait_rows
from .openai_servers import ServedModel, ServerPool, asurvey, identify, survey
from .prompting import fit_question

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: answers that refuse a request for what it holds: the question fails alone
REJECT_STATUS = frozenset({400, 413, 422})
#: sampling fields beyond OpenAI's schema (vLLM, TGI and llama.cpp take them; strict APIs refuse them)
SAMPLING_EXTRAS = ("top_k", "repetition_penalty")


class _Rejected(Exception):
    """The server refused one request for what it holds."""


class OpenAIBackend:
    """Reasoning from one or several OpenAI-compatible ``/chat/completions`` endpoints.

    ``model`` is the name the servers serve (``$TONGSEARCH_QR_OPENAI_MODEL`` when not given); ``base_url`` is
    one URL or a list of them (several replicas of the same model, e.g. one ``vllm serve`` per GPU), default
    ``$OPENAI_BASE_URL`` (comma-separated for several), then ``http://127.0.0.1:8000/v1``. The API key comes
    from ``$OPENAI_API_KEY`` (``api_key_env`` names another variable).

    Cached reasoning is keyed by the id the servers list the model under in ``/v1/models`` (see :attr:`cache_id`):
    ``tongsearch-qr serve`` lists ``NAME@<digest of the weights>``, so ``model`` may be ``NAME`` and retrained
    weights get new keys; a server that does not list the model is keyed by ``model`` as given.

    Prompts are fitted to the servers' context: the ``max_model_len`` they list (vLLM does), capped by
    ``max_prompt_tokens`` prompt tokens when given; a question too long is cut as the local backends cut it,
    measured with ``tokenizer`` (a model spec), by default the served model's own when its name is a local
    directory or hub id (else prompts go as they are, with a warning). ``top_k`` and ``repetition_penalty`` are
    sent as extra fields when ``sampling_extras`` is true, never when false; ``None`` (auto) sends them and, for a
    server that rejects them (a 400 or 422 naming them), sends that request again without them, and every later
    one to that server.

    With several servers each request goes to the live server with the fewest requests in flight (at most
    ``concurrency`` per server). A server that refuses connections, or fails ``max_server_failures`` times in a
    row (failed or dropped connections, 5xx answers; a busy server's timeouts do not count), is taken out of the
    call and its in-flight questions go to the others; nothing is lost and each question's completion is reported
    once. The next call asks every server again, and one that answers is back. ``server_counts`` holds the
    completions each server delivered in the call that finished last. ``request_timeout``: seconds to wait for one
    answer (a late one is retried).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        request_timeout: float = 300.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sampling_extras: bool | None = None,
        max_server_failures: int = 2,
        max_prompt_tokens: int | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
    ):
        try:
            import httpx  # noqa: F401
        except ImportError as exc:
            raise ImportError("the openai backend needs httpx: pip install 'tongsearch-qr[openai]'") from exc
        model = model or os.environ.get("TONGSEARCH_QR_OPENAI_MODEL")
        if not model or model == "default":
            raise ValueError(
                "the openai backend needs the served model's name: QRReasoner('<name>', backend='openai') "
                "or --model <name> (or set TONGSEARCH_QR_OPENAI_MODEL)"
            )
        if concurrency < 1 or max_retries < 0 or request_timeout <= 0 or backoff < 0 or max_server_failures < 1:
            raise ValueError(
                "concurrency must be >= 1, max_retries >= 0, request_timeout > 0, backoff >= 0 and max_server_failures >= 1"
            )
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
        if sampling_extras not in (None, True, False):
            raise ValueError(f"sampling_extras must be True, False or None (auto), got {sampling_extras!r}")
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
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sampling_extras = sampling_extras
        self.max_server_failures = max_server_failures
        self.max_prompt_tokens = max_prompt_tokens
        self.tokenizer = tokenizer
        self.server_counts: dict[str, int] = {}
        self._served: ServedModel | None = None
        self._measuring_tokenizer: Any = None
        self._extras_refused: set[str] = set()  # servers that rejected the sampling extras
        self._loop_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # every call's requests run here, in a background thread
        self._pool: ServerPool | None = None  # the loop's connection pools and the servers' health

    @property
    def cache_id(self) -> str:
        """``openai:<id>``: the id the servers list the model under (asked the first time), else the name given;
        not the URL, so the same model behind another host or port hits the cache."""
        if self._served is None:
            self._served = identify(self.model, survey(self.base_urls, self._headers(), self.request_timeout))
        return f"openai:{self._served.id}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request_body(
        self, question: str, template: PromptTemplate, params: GenerationParams, n: int = 1, sample: int = 0
    ) -> dict[str, Any]:
        """The JSON body of the chat completion request for ``n`` completions of ``question``; seeded, drawn
        with the seed of sample index ``sample`` (:func:`~tongsearch_qr.backends.base.row_seed` of the messages)."""
        messages = template.messages(question)
        model = self._served.id if self._served is not None else self.model
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": params.max_new_tokens, "n": n}
        extras = self.sampling_extras is not False
        if params.do_sample:
            body.update(temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                body["seed"] = row_seed(params.seed, messages, params.key(), sample)
            if extras and params.top_k > 0:
                body["top_k"] = params.top_k
        else:
            body["temperature"] = 0.0
        if extras and params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        return body

    def submit(
        self, questions: Sequence[str], template: PromptTemplate, params: GenerationParams, samples: Sequence[int] | None = None
    ) -> list[Future[str]]:
        """Send ``questions`` and return one future per row at once; the requests run on the backend's event loop
        beside every other call's. A request the server rejects fails its rows with
        :class:`~tongsearch_qr.errors.RequestRejectedError`; any other failure fails every row of the call left."""
        samples = sample_indices(questions, samples)
        futures: list[Future[str]] = [Future() for _ in questions]
        if questions:
            self._on_loop(self._call(list(questions), template, params, samples, futures))
        return futures

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions`` in input order; ``on_result`` is called as each one arrives. Unseeded,
        the samples of a question are one request with ``n``; seeded, each (question, sample index) is a request
        with its own seed."""
        return wait_rows(self.submit(questions, template, params, samples), questions, on_result)

    def close(self) -> None:
        """Close the connection pools and stop the event loop's thread (a later call starts them again)."""
        with self._loop_lock:
            loop, pool, self._loop, self._pool = self._loop, self._pool, None, None
        if loop is not None and loop.is_running():
            if pool is not None:
                asyncio.run_coroutine_threadsafe(pool.aclose(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)

    def __del__(self) -> None:
        loop, pool = getattr(self, "_loop", None), getattr(self, "_pool", None)
        if loop is not None and loop.is_running():  # not waited for: the loop closes the pools, then stops

            async def shut() -> None:
                if pool is not None:
                    await pool.aclose()
                asyncio.get_running_loop().stop()

            try:
                asyncio.run_coroutine_threadsafe(shut(), loop)
            except RuntimeError:  # the loop is closing (interpreter exit)
                pass

    def _on_loop(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` on the backend's event loop, started in a background thread on first use."""
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="tongsearch-qr-openai", daemon=True).start()
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _server_pool(self) -> ServerPool:
        """The loop's :class:`ServerPool` (made on first use, on the loop)."""
        if self._pool is None:
            import httpx

            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            timeout = httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout))
            clients = [
                httpx.AsyncClient(base_url=url, headers=self._headers(), limits=limits, timeout=timeout) for url in self.base_urls
            ]
            surveys = [
                httpx.AsyncClient(
                    base_url=url,
                    headers=self._headers(),
                    limits=httpx.Limits(max_connections=4),
                    timeout=min(10.0, self.request_timeout),
                )
                for url in self.base_urls
            ]
            self._pool = ServerPool(self.base_urls, clients, self.concurrency, self.max_server_failures, surveys)
        return self._pool

    async def _call(
        self,
        questions: list[str],
        template: PromptTemplate,
        params: GenerationParams,
        samples: list[int],
        futures: list[Future[str]],
    ) -> None:
        """One call: ask which servers answer and what they serve, then send its requests; every row's future is
        resolved (with an error when the call fails)."""
        try:
            pool = self._server_pool()
            found = await asurvey(pool, min(10.0, self.request_timeout))
            served = identify(self.model, found)
            if self._served is not None and served.id != self._served.id:
                raise BackendUnavailableError(
                    f"the servers now serve {served.id!r}, not {self._served.id!r} as when this backend first asked: "
                    "the weights changed, so new completions would be cached under the old weights' key. Create a new "
                    "backend (QRReasoner) for the new weights"
                )
            self._served = served
            pool.refresh(found)
            sent = await asyncio.to_thread(self._fitted, questions, template, params)
            requests = requests_with_n(questions, samples, params.seed is not None)
            work = [(self.request_body(sent[r.question], template, params, r.n, r.sample or 0), r) for r in requests]
            await self._generate_all(pool, work, futures)
        except BaseException as exc:  # the rows not done fail with it
            for future in futures:
                resolve(future, error=exc)
            if not isinstance(exc, Exception):
                raise

    def _fitted(self, questions: Sequence[str], template: PromptTemplate, params: GenerationParams) -> dict[str, str]:
        """Each distinct question as it is sent: cut to fit the servers' context (their ``max_model_len``, capped
        by ``max_prompt_tokens``) when there is a limit and a tokenizer to measure with."""
        distinct = list(dict.fromkeys(questions))
        limits = [self.max_prompt_tokens + params.max_new_tokens] if self.max_prompt_tokens else []
        if self._served is not None and self._served.context_length:
            limits.append(self._served.context_length)
        tokenizer = self._prompt_tokenizer() if limits else None
        if tokenizer is None:
            return {q: q for q in distinct}
        return {q: fit_question(tokenizer, template, q, min(limits), params.max_new_tokens)[0] for q in distinct}

    def _prompt_tokenizer(self) -> Any:
        """The tokenizer that measures prompts (looked for once): ``tokenizer``'s, else the served model's own when
        its name is a local directory or hub id; ``None`` (warned once) when there is none."""
        if self._measuring_tokenizer is None:
            from transformers import AutoTokenizer

            from ..models import load_pretrained, resolve_model

            served = self._served.id if self._served else self.model
            specs: list[str | os.PathLike[str]] = (
                [self.tokenizer]
                if self.tokenizer
                else [s for s in dict.fromkeys([self.model, served, served.rpartition("@")[0]]) if s]
            )
            problems = []
            for spec in specs:
                try:
                    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolve_model(spec))
                except (OSError, ValueError) as exc:
                    problems.append(f"{spec}: {exc}")
                    continue
                if getattr(tokenizer, "chat_template", None) is None:
                    problems.append(f"{spec}: its tokenizer has no chat template")
                    continue
                self._measuring_tokenizer = tokenizer
                break
            else:
                if self.tokenizer:
                    raise ValueError(f"tokenizer={self.tokenizer!r} cannot measure prompts ({'; '.join(problems)})")
                log.warning(
                    "prompts are sent as they are, not fitted to the server's context: no tokenizer for %r "
                    "(pass tokenizer=<model spec>); a question too long fails alone",
                    served,
                )
                self._measuring_tokenizer = False
        return self._measuring_tokenizer or None

    async def _generate_all(
        self, pool: ServerPool, work: list[tuple[dict[str, Any], EngineRequest]], futures: list[Future[str]]
    ) -> None:
        delivered = self.server_counts = dict.fromkeys(self.base_urls, 0)  # counted before each row is resolved

        async def one(body: dict[str, Any], request: EngineRequest) -> None:
            try:
                url, choices = await self._complete(pool, body)
            except _Rejected as exc:  # this question alone
                for _, row in request.rows:
                    resolve(futures[row], error=RequestRejectedError({request.question: str(exc)}, 1))
                return
            delivered[url] += 1
            for j, row in request.rows:
                resolve(futures[row], choices[j])

        tasks = [asyncio.create_task(one(body, request)) for body, request in work]
        try:
            await asyncio.gather(*tasks)
        finally:  # first failure: stop the rest, but let finished ones have been reported
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if len(self.base_urls) > 1 and len(work) > 1:
                log.info("completions per server: %s%s", delivered, f"; taken out: {sorted(pool.dead)}" if pool.dead else "")

    async def _complete(self, pool: ServerPool, body: dict[str, Any]) -> tuple[str, list[str]]:
        """The server that answered and its ``n`` completions for ``body``, with retries and failover."""
        import httpx

        problem, attempt = "", 0
        tried: set[str] = set()
        while attempt <= self.max_retries:
            url, client = await pool.acquire(tried)
            sent = self._body_for(url, body)
            try:
                response = await client.post("/chat/completions", json=sent)
            except httpx.TransportError as exc:
                problem = f"{url}: {type(exc).__name__}: {exc}"
                busy = isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout))
                if not busy:  # a busy server's timeout says nothing of its health
                    pool.failed(url, refused=isinstance(exc, httpx.ConnectError))
                tried.add(url)
                if pool.untried(tried):
                    continue  # at once to a live server the question has not tried
                attempt += 1
                await asyncio.sleep(self._delay(attempt, None))
                continue
            finally:
                await pool.release(url)
            status = response.status_code
            if status >= 500:
                pool.failed(url)
            else:
                pool.answered(url)
            if status == 200:
                return url, _completion_texts(response, url, body["n"])
            problem = f"{url}: HTTP {status}: {response.text[:300]}"
            if self._refuses_extras(url, sent, response):
                continue  # sent again at once, without them
            if status in RETRY_STATUS:
                tried.add(url)
                attempt += 1
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                continue
            if status in REJECT_STATUS:
                raise _Rejected(f"HTTP {status} from {url}: {response.text[:300]}")
            raise BackendUnavailableError(
                f"{url} refused a request for model {body['model']!r}: HTTP {status}: {response.text[:500]}"
            )
        raise BackendUnavailableError(
            f"{', '.join(self.base_urls)}: a request failed {self.max_retries + 1} times in a row (last: {problem}); "
            "completions finished before this are kept in the reasoning cache: rerun to resume"
        )

    def _body_for(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as sent to ``url``: without the sampling extras when that server rejected them."""
        if url in self._extras_refused:
            return {key: value for key, value in body.items() if key not in SAMPLING_EXTRAS}
        return body

    def _refuses_extras(self, url: str, sent: dict[str, Any], response: Any) -> bool:
        """With ``sampling_extras=None``: whether ``response`` is a 400 or 422 that names sampling extras ``sent``
        carried; then ``url`` gets none from now on."""
        named = [field for field in SAMPLING_EXTRAS if field in sent and field in response.text]
        if self.sampling_extras is not None or response.status_code not in (400, 422) or not named:
            return False
        if url not in self._extras_refused:
            self._extras_refused.add(url)
            log.warning(
                "%s rejects %s: its requests go without top_k and repetition_penalty from now on, so it "
                "samples without them (--sampling-extras makes this an error)",
                url,
                " and ".join(named),
            )
        return True

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry number ``attempt``: the server's ``Retry-After`` (in seconds) when it sent
        one, else exponential backoff with jitter; both capped at ``max_backoff``."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * random.uniform(0.5, 1.0)


def _completion_texts(response: Any, base_url: str, n: int) -> list[str]:
    """The ``n`` completions of a reply, by choice index."""
    try:
        choices = {int(choice.get("index", 0)): choice["message"].get("content") or "" for choice in response.json()["choices"]}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BackendUnavailableError(f"{base_url} sent a reply that is not a chat completion: {response.text[:300]}") from exc
    if set(choices) != set(range(n)):
        raise BackendUnavailableError(
            f"{base_url} sent choices {sorted(choices)} for n={n}; the server must support the 'n' parameter "
            "to sample several reasonings per query (vLLM does)"
        )
    return [choices[j] for j in range(n)]
