"""The query reasoner: questions in, reasoning (and retriever-ready rewrites) out."""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal, overload

from .backends import Backend, make_backend
from .backends.engine import raise_row_errors, submit_rows
from .cache import ReasoningCache, config_key
from .errors import ReasoningTimeoutError
from .generation import GenerationParams
from .methods import Method, get_method
from .models import reasoner_settings
from .modes import RewriteMode, get_mode
from .online import (
    Budget,
    InFlight,
    await_until,
    budget_for,
    check_on_error,
    check_timeout,
    failure_kind,
    in_thread,
    wait_until,
)
from .prompts import PromptTemplate
from .queries import validate_queries
from .query_terms import DEFAULT_TERMS, TermQuery, term_query

log = logging.getLogger(__name__)

CacheSpec = bool | str | os.PathLike[str] | ReasoningCache | None
#: queries -> the texts of each one's top retrieved passages (for prompts that show them)
Feedback = Callable[[list[str]], list[list[str]]]


def _open_cache(cache: CacheSpec) -> ReasoningCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, ReasoningCache):
        return cache
    if cache is True:
        from .paths import default_reasoning_cache

        return ReasoningCache(default_reasoning_cache())
    return ReasoningCache(Path(cache))


class QRReasoner:
    """Writes out the reasoning an expert would do for each query, for a retriever to use.

    >>> r = QRReasoner()                              # embedded SmolLM2-135M-Instruct, offline
    >>> r = QRReasoner("TongSearch/TongSearch-QR-7B")  # hub id or local directory
    >>> r.rewrite(["why can't humans drink sea water?"], mode="concat")

    ``backend`` is a name (``auto``: the fastest installed local engine for this machine and model, see
    :mod:`~tongsearch_qr.backends.auto`; ``transformers``, ``llamacpp``, ``precomputed``, ...) or a
    :class:`~tongsearch_qr.backends.Backend` instance; extra keyword arguments go to the backend (e.g. ``device``,
    ``dtype``, ``batch_size``).
    ``cache`` is ``None``/``False`` (off), ``True`` (the user cache file), a path or a
    :class:`ReasoningCache`. A model trained by ``tongsearch-qr train`` carries the prompt, rewrite mode and
    reasoning length it was trained for (``tongsearch_qr.json``); they are the defaults of ``template``,
    ``mode`` and ``generation.max_new_tokens`` (else the paper's prompt, ``replace`` and 500).
    ``method`` names a reformulation method of the bank (:mod:`tongsearch_qr.methods`: ``hyde``,
    ``query2doc``, ``lamer``, ...) whose prompt, mode, samples and decoding become the defaults instead.

    A prompt that shows retrieved passages (corpus feedback, e.g. ``lamer``) needs ``feedback``: a function
    from queries to the texts of their top passages.

    ``samples=N`` draws N reasonings per query (sampling only; each cached under its own sample index and,
    with a seed, reproducible): :meth:`reason` and :meth:`rewrite` join them into one text (MuGI-style),
    :meth:`reason_samples` and :meth:`rewrite_samples` keep them apart (e.g. for rank fusion).

    ``terms`` is how many words a :class:`~tongsearch_qr.query_terms.TermQuery` keeps (``rewrite(...,
    as_terms=True)``, what the stack adapters hand their BM25 retrievers; ``None`` keeps every word); default:
    the trained model's (``tongsearch_qr.json``), else 20.

    Serving: one reasoner serves any number of threads and asyncio tasks at once (:meth:`areason`,
    :meth:`arewrite`, :meth:`arewrites`), and its ``with_`` copies share it: their requests join the engine's next
    batch, and a query another caller is already waiting for is generated once. ``timeout`` (seconds; default none)
    bounds each call, and ``on_error`` says what a query gets when its reasoning fails or is late: ``"raise"`` (the
    error, or :class:`~tongsearch_qr.errors.ReasoningTimeoutError`) or ``"question"`` (the question alone: the
    rewrite is the question, as mode ``original`` gives it, and :meth:`reason` returns the question); both can be
    given per call too. A late reasoning is still generated and cached for the next call.

    ``stats`` counts, over the reasoner's life, the unique queries reasoned about (``queries``) and, of
    their reasonings (one per query and sample), those found in the cache (``cached``), those generated
    (``generated``), those another call was already generating (``joined``) and the generations that came back
    empty (``empty``: a failure, warned about, never cached, and retried on the next call); with ``on_error=
    "question"``, the queries that went alone, by why (``fallback_timeout``, ``fallback_unavailable``: no server,
    ``fallback_rejected``: the server refused the request, ``fallback_error``: anything else), each kind warned
    about once.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: str | Backend = "auto",
        think: bool = False,
        template: PromptTemplate | None = None,
        generation: GenerationParams | None = None,
        mode: str | RewriteMode | None = None,
        method: str | Method | None = None,
        cache: CacheSpec = None,
        samples: int | None = None,
        feedback: Feedback | None = None,
        terms: int | None | EllipsisType = ...,
        progress: bool = False,
        timeout: float | None = None,
        on_error: str = "raise",
        **backend_options: Any,
    ):
        if template is not None and think and not template.think:
            raise ValueError("think=True conflicts with a template whose think flag is off")
        if method is not None:
            chosen = get_method(method)
            if chosen.template is None:
                raise ValueError(
                    f"method {chosen.name!r} uses no LLM: it is a retriever setting "
                    f"(make_retriever({chosen.retriever!r}, **{chosen.retriever_options}); "
                    f"eval --method {chosen.name})"
                )
            if think:
                raise ValueError("think mode belongs to TongSearch QR's prompt; drop think=True or method=")
            defaults: dict[str, Any] = {
                "template": chosen.template,
                "mode": chosen.mode,
                "generation": chosen.generation,
                "samples": chosen.samples,
            }
        else:  # a trained model's settings (tongsearch_qr.json), if any
            defaults = reasoner_settings(model) if isinstance(backend, str) and backend != "precomputed" else {}
            if "template" in defaults:
                defaults["template"] = PromptTemplate(**defaults["template"])
            if "max_new_tokens" in defaults:
                defaults["generation"] = GenerationParams(max_new_tokens=defaults["max_new_tokens"])
        if template is None and "template" in defaults and not think:
            template = defaults["template"]
        self.template = template or PromptTemplate.paper(think=think)
        self.generation: GenerationParams = generation or defaults.get("generation") or GenerationParams()
        self.mode = get_mode(mode if mode is not None else defaults.get("mode", "replace"))
        if samples is None:  # a method's samples, unless decoding is greedy
            samples = defaults.get("samples", 1) if self.generation.do_sample else 1
        self.samples = _check_samples(samples, self.generation)
        self.feedback = feedback
        self.terms = _check_terms(defaults.get("terms", DEFAULT_TERMS) if isinstance(terms, EllipsisType) else terms)
        self.progress = progress
        if isinstance(backend, str):
            self.backend = make_backend(backend, model, **backend_options)
        else:
            if model is not None or backend_options:
                raise ValueError("pass model and backend options to the backend itself when giving a Backend instance")
            self.backend = backend
        self.cache = _open_cache(cache)
        self.timeout, self.on_error = check_timeout(timeout), check_on_error(on_error)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._inflight = InFlight()  # shared with with_ copies
        self._warned: set[str] = set()  # the kinds of fallback warned about

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        fallback: str | os.PathLike[str] | Backend | None = None,
        **kwargs: Any,
    ) -> "QRReasoner":
        """A reasoner that returns precomputed reasoning (the paper's published JSON files).

        A query missing from the file raises :class:`~tongsearch_qr.errors.MissingReasoningError`,
        unless ``fallback`` (a model spec such as ``"default"``, or a backend) generates it.
        """
        from .backends.precomputed import PrecomputedBackend

        if fallback is not None and not isinstance(fallback, Backend):
            fallback = make_backend("auto", fallback)
        return cls(backend=PrecomputedBackend.from_file(path, fallback=fallback), **kwargs)

    def with_(
        self,
        *,
        template: PromptTemplate | None = None,
        generation: GenerationParams | None = None,
        mode: str | RewriteMode | None = None,
        samples: int | None = None,
        feedback: Feedback | None = None,
        terms: int | None | EllipsisType = ...,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> "QRReasoner":
        """A reasoner sharing this one's backend (the loaded model), cache and reasoning in flight, with some
        settings changed; this one is left as it is, so pipelines that share it keep their behaviour."""
        other = copy.copy(self)
        other.stats, other._lock, other._warned = Counter(), threading.Lock(), set()
        if not isinstance(timeout, EllipsisType):
            other.timeout = check_timeout(timeout)
        if on_error is not None:
            other.on_error = check_on_error(on_error)
        if template is not None:
            other.template = template
        if generation is not None:
            other.generation = generation
        if mode is not None:
            other.mode = get_mode(mode)
        other.samples = _check_samples(self.samples if samples is None else samples, other.generation)
        if feedback is not None:
            other.feedback = feedback
        if not isinstance(terms, EllipsisType):
            other.terms = _check_terms(terms)
        return other

    @property
    def config_hash(self) -> str:
        """Hash of everything that determines a completion apart from the query (of sample 0)."""
        return self._sample_config(0)

    def _sample_config(self, sample: int) -> str:
        key = {"model": self.backend.cache_id, "template": self.template.key(), "generation": self.generation.key()}
        return config_key({**key, "sample": sample} if sample else key)

    def reason(
        self,
        queries: Sequence[str],
        *,
        progress: bool | None = None,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[str]:
        """The reasoning for each query, in order (with ``samples`` > 1, its samples joined by newlines).
        Repeated and cached queries are not regenerated. ``timeout`` and ``on_error``: this call's (default: the
        reasoner's); with ``on_error="question"`` a query whose reasoning failed or is late gets the question."""
        return self._reasoned(queries, progress, self._budget(timeout, on_error)).joined()

    def reason_samples(
        self,
        queries: Sequence[str],
        *,
        progress: bool | None = None,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[list[str]]:
        """The ``samples`` reasonings of each query, in order. Each (query, sample) is cached on its own, so
        an interrupted run resumes where it stopped. A prompt that shows retrieved passages gets them from
        ``feedback`` and is cached under the filled prompt (other passages, another entry). ``timeout`` and
        ``on_error`` as for :meth:`reason` (a query that falls back gets the question as each sample)."""
        return self._reasoned(queries, progress, self._budget(timeout, on_error)).samples

    async def areason(
        self, queries: Sequence[str], *, timeout: float | None | EllipsisType = ..., on_error: str | None = None
    ) -> list[str]:
        """:meth:`reason` for a coroutine: the event loop runs on while the engine (shared with every other caller)
        generates."""
        return (await self._areasoned(queries, self._budget(timeout, on_error))).joined()

    async def areason_samples(
        self, queries: Sequence[str], *, timeout: float | None | EllipsisType = ..., on_error: str | None = None
    ) -> list[list[str]]:
        """:meth:`reason_samples` for a coroutine."""
        return (await self._areasoned(queries, self._budget(timeout, on_error))).samples

    def _budget(self, timeout: float | None | EllipsisType, on_error: str | None) -> Budget:
        return budget_for(timeout, on_error, self.timeout, self.on_error)

    def _reasoned(self, queries: Sequence[str], progress: bool | None, budget: Budget) -> _Reasoned:
        from tqdm.auto import tqdm

        queries = validate_queries(queries)
        try:
            if budget.deadline is None:
                call = self._begin(queries)
            else:  # the cache, the prompts and a server's first answer count in the budget too
                started = in_thread(self._begin, queries)
                wait_until([started], budget)
                if not started.done():
                    return self._failed(queries, None, budget)
                call = started.result()
        except Exception as exc:
            return self._failed(queries, exc, budget)
        if call.waiting:
            shown = self.progress if progress is None else progress
            with tqdm(total=len(call.waiting), desc="reasoning", unit="query", disable=not shown) as bar:
                wait_until(call.waiting.values(), budget, bar.update)
        return self._settle(call, budget)

    async def _areasoned(self, queries: Sequence[str], budget: Budget) -> _Reasoned:
        queries = validate_queries(queries)
        started = in_thread(self._begin, queries)  # the cache and the prompts, off the event loop
        await await_until([started], budget)
        if not started.done():
            return self._failed(queries, None, budget)
        try:
            call = started.result()
        except Exception as exc:
            return self._failed(queries, exc, budget)
        await await_until(call.waiting.values(), budget)
        return self._settle(call, budget)

    def _begin(self, queries: list[str]) -> _Call:
        """Read the cache and start generating what it lacks (or join the calls already generating it)."""
        unique = list(dict.fromkeys(queries))
        inputs = self._prompt_inputs(unique)
        keys = list(dict.fromkeys(inputs.values()))
        done: dict[tuple[str, int], str] = {}
        for sample in range(self.samples):
            found = self.cache.get_many(self._sample_config(sample), keys) if self.cache else {}
            done.update(((key, sample), text) for key, text in found.items())
        pending = [(key, s) for key in keys for s in range(self.samples) if (key, s) not in done]
        log.info(
            "%d queries (%d unique)%s, %d already in the reasoning cache",
            len(queries),
            len(unique),
            f" x {self.samples} samples" if self.samples > 1 else "",
            len(done),
        )
        with self._lock:
            self.stats.update(queries=len(unique), cached=len(done))
        return _Call(queries, inputs, done, self._start(pending) if pending else {})

    def _start(self, pending: list[tuple[str, int]]) -> dict[tuple[str, int], Future[str]]:
        """The future of each pending (input, sample): one another call is generating, or one generated now."""
        configs = {s: self._sample_config(s) for s in {s for _, s in pending}}
        slots = [(configs[s], key, s) for key, s in pending]
        futures, fresh = self._inflight.claim(slots)
        with self._lock:
            self.stats["joined"] += len(slots) - len(fresh)
        if fresh:
            template = self.template.filled() if self.template.passages else self.template
            try:
                rows = submit_rows(
                    self.backend, [key for _, key, _ in fresh], template, self.generation, [sample for *_, sample in fresh]
                )
                if len(rows) != len(fresh):
                    raise RuntimeError(f"backend returned {len(rows)} completions for {len(fresh)} queries")
            except Exception as exc:
                for slot in fresh:
                    self._inflight.finish(slot, error=exc)
            else:
                for slot, row in zip(fresh, rows):
                    row.add_done_callback(functools.partial(self._store, slot))
        return {(key, sample): futures[config, key, sample] for config, key, sample in slots}

    def _store(self, slot: tuple[str, str, int], row: Future[str]) -> None:
        """A generated completion: counted, cached (the first stored under its key wins) and handed to every call
        waiting for it, whether or not they are still waiting."""
        config, key, _ = slot
        try:
            completion = row.result()
            with self._lock:
                self.stats["generated"] += 1
                if not completion or not completion.strip():
                    self.stats["empty"] += 1
                    log.warning("empty completion for query %r (not cached; a rerun retries it)", key[:80])
                    text = ""
                elif self.cache is not None:
                    text = self.cache.put_many(config, [(key, completion)]).get(key, completion)
                else:
                    text = completion
        except Exception as exc:
            self._inflight.finish(slot, error=exc)
        else:
            self._inflight.finish(slot, text)

    def _settle(self, call: _Call, budget: Budget) -> _Reasoned:
        """A call's outcome once its reasonings are in or its deadline passed: raised or fallen back per query."""
        failed: dict[str, BaseException | None] = {}
        for (key, sample), future in call.waiting.items():
            if not future.done():
                failed.setdefault(key, None)
            elif future.exception() is not None:
                failed[key] = future.exception()
            else:
                call.done[key, sample] = future.result()
        if failed and budget.on_error == "raise":
            asked = list(dict.fromkeys(key for key, _ in call.waiting))
            raise_row_errors({key: error for key, error in failed.items() if error is not None}, asked)
            raise ReasoningTimeoutError(len(failed), len(asked), budget.timeout or 0.0)
        fallbacks = [None if call.inputs[q] not in failed else failure_kind(failed[call.inputs[q]]) for q in call.queries]
        self._count_fallbacks(call.queries, fallbacks, failed.values(), budget)
        samples = [
            [q] * self.samples if kind else [self.template.extract(call.done[call.inputs[q], s]) for s in range(self.samples)]
            for q, kind in zip(call.queries, fallbacks)
        ]
        return _Reasoned(call.queries, samples, fallbacks)

    def _failed(self, queries: list[str], error: Exception | None, budget: Budget) -> _Reasoned:
        """A call that failed (or ran out of time: ``error`` ``None``) before its reasoning started."""
        if budget.on_error == "raise":
            if error is None:
                raise ReasoningTimeoutError(len(set(queries)), len(set(queries)), budget.timeout or 0.0)
            raise error
        kind = failure_kind(error)
        self._count_fallbacks(queries, [kind] * len(queries), [error], budget)
        return _Reasoned(queries, [[q] * self.samples for q in queries], [kind] * len(queries))

    def _count_fallbacks(self, queries: list[str], fallbacks: list[str | None], errors: Any, budget: Budget) -> None:
        """Count the queries that fell back, by kind, and warn once per kind over the reasoner's life."""
        kinds = Counter(kind for kind in dict(zip(queries, fallbacks)).values() if kind)
        if not kinds:
            return
        with self._lock:
            for kind, count in kinds.items():
                self.stats[f"fallback_{kind}"] += count
            new = [kind for kind in kinds if kind not in self._warned]
            self._warned.update(new)
        for kind in new:
            example = next((e for e in errors if e is not None and failure_kind(e) == kind), None)
            why = f"not done within {budget.timeout:g} s" if example is None else f"{type(example).__name__}: {example}"
            log.warning(
                "reasoning failed for %d quer%s (%s); they go to the retriever as the question alone "
                "(on_error='question'). Further %s failures are only counted, in reasoner.stats['fallback_%s']",
                kinds[kind],
                "y" if kinds[kind] == 1 else "ies",
                why[:500],
                kind,
                kind,
            )

    def _prompt_inputs(self, queries: list[str]) -> dict[str, str]:
        """What the backend gets as the question of each query: the query, or the filled user turn when the
        prompt shows retrieved passages."""
        if not self.template.passages:
            return {q: q for q in queries}
        if self.feedback is None:
            raise ValueError(
                "this method's prompt shows retrieved passages: give the reasoner feedback= (a "
                "function from queries to their top passages' texts); eval does this itself"
            )
        passages = self.feedback(queries)
        if len(passages) != len(queries):
            raise ValueError(f"feedback returned passages for {len(passages)} of {len(queries)} queries")
        return {q: self.template.fill(q, texts) for q, texts in zip(queries, passages)}

    @overload
    def rewrite(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        progress: bool | None = None,
        as_terms: Literal[False] = False,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[str]: ...

    @overload
    def rewrite(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        progress: bool | None = None,
        as_terms: Literal[True],
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[TermQuery]: ...

    def rewrite(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        progress: bool | None = None,
        as_terms: bool = False,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[str] | list[TermQuery]:
        """What to send to a retriever for each query under ``mode`` (default: the reasoner's mode): the text, or
        with ``as_terms`` its :class:`~tongsearch_qr.query_terms.TermQuery` (the ``terms`` strongest words with
        their weights, for BM25 retrievers). ``timeout`` and ``on_error`` as for :meth:`reason`: a query that falls
        back is sent as the question alone."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        reasoned = self._reasoned(queries, progress, self._budget(timeout, on_error)) if chosen.with_reasoning else None
        return [texts[0] for texts in self._rewritten(queries, chosen, reasoned, as_terms, joined=True)]

    async def arewrite(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        as_terms: bool = False,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[Any]:
        """:meth:`rewrite` for a coroutine."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        budget = self._budget(timeout, on_error)
        reasoned = await self._areasoned(queries, budget) if chosen.with_reasoning else None
        return [texts[0] for texts in self._rewritten(queries, chosen, reasoned, as_terms, joined=True)]

    def rewrites(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        progress: bool | None = None,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[Rewrite]:
        """Each query's :class:`Rewrite` under ``mode`` (default: the reasoner's mode): its reasoning, the text and
        the term query, from one reasoning call (what the stack adapters hand on). ``timeout`` and ``on_error`` as
        for :meth:`reason`: a query that falls back is rewritten as the question alone (``Rewrite.fallback`` says
        why)."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        reasoned = self._reasoned(queries, progress, self._budget(timeout, on_error)) if chosen.with_reasoning else None
        return self._rewrite_objects(queries, chosen, reasoned)

    async def arewrites(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[Rewrite]:
        """:meth:`rewrites` for a coroutine."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        budget = self._budget(timeout, on_error)
        reasoned = await self._areasoned(queries, budget) if chosen.with_reasoning else None
        return self._rewrite_objects(queries, chosen, reasoned)

    def rewrite_samples(
        self,
        queries: Sequence[str],
        mode: str | RewriteMode | None = None,
        *,
        progress: bool | None = None,
        as_terms: bool = False,
        timeout: float | None | EllipsisType = ...,
        on_error: str | None = None,
    ) -> list[list[Any]]:
        """One rewrite per sample for each query under ``mode`` (default: the reasoner's mode), as text or, with
        ``as_terms``, as :class:`~tongsearch_qr.query_terms.TermQuery`."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        reasoned = self._reasoned(queries, progress, self._budget(timeout, on_error)) if chosen.with_reasoning else None
        return self._rewritten(queries, chosen, reasoned, as_terms, joined=False)

    def _rewritten(
        self, queries: list[str], chosen: RewriteMode, reasoned: _Reasoned | None, as_terms: bool, joined: bool
    ) -> list[list[Any]]:
        """Each query's rewrites (one, or one per sample) under ``chosen``; the question alone where it fell back."""
        out = []
        joined_texts = reasoned.joined() if reasoned is not None and joined else []
        for i, q in enumerate(queries):
            mode = chosen
            texts: list[str | None] = [None] * (1 if joined else self.samples)
            if reasoned is not None and reasoned.fallbacks[i]:
                mode = get_mode("original")
            elif reasoned is not None:
                texts = [joined_texts[i]] if joined else [*reasoned.samples[i]]
            out.append([self._terms(q, r, mode) if as_terms else mode.apply(q, r) for r in texts])
        return out

    def _terms(self, question: str, reasoning: str | None, mode: RewriteMode) -> TermQuery:
        """The term query of one rewrite (a keyword list's words each counted once)."""
        return term_query(question, reasoning, mode, terms=self.terms, once=self.template.keywords)

    def _rewrite_objects(self, queries: list[str], chosen: RewriteMode, reasoned: _Reasoned | None) -> list[Rewrite]:
        if reasoned is None:
            return [Rewrite(q, None, chosen.apply(q, None), self._terms(q, None, chosen)) for q in queries]
        out = []
        for q, r, kind in zip(queries, reasoned.joined(), reasoned.fallbacks):
            if kind:
                out.append(Rewrite(q, None, q, self._terms(q, None, get_mode("original")), fallback=kind))
            else:
                out.append(Rewrite(q, r, chosen.apply(q, r), self._terms(q, r, chosen)))
        return out


@dataclass
class _Call:
    """One call's queries, what the backend gets for each (``inputs``), the reasonings in hand (``done``, by input
    and sample) and the futures of those on their way (``waiting``)."""

    queries: list[str]
    inputs: dict[str, str]
    done: dict[tuple[str, int], str]
    waiting: dict[tuple[str, int], Future[str]]


@dataclass(frozen=True)
class _Reasoned:
    """A call's outcome: each query's samples (the question, per sample, where it fell back) and why it fell back
    (``None``: reasoned)."""

    queries: list[str]
    samples: list[list[str]]
    fallbacks: list[str | None]

    def joined(self) -> list[str]:
        """Each query's samples joined by newlines (the question alone where it fell back)."""
        return [q if kind else "\n".join(texts) for q, texts, kind in zip(self.queries, self.samples, self.fallbacks)]


@dataclass(frozen=True)
class Rewrite:
    """One query rewritten under a mode: its ``reasoning`` (``None`` when the mode uses none), the ``text`` to
    send to a retriever that reads text (an embedder) and the ``terms`` for BM25 retrievers. ``fallback``: why
    the question went alone instead (``timeout``, ``unavailable``, ``rejected``, ``error``; ``None``: it did not)."""

    question: str
    reasoning: str | None
    text: str
    terms: TermQuery
    fallback: str | None = None


def _check_terms(terms: int | None) -> int | None:
    if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int) or terms < 1):
        raise ValueError(f"terms must be a whole number >= 1 or None (every word), got {terms!r}")
    return terms


def _check_samples(samples: int, generation: GenerationParams) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a whole number >= 1, got {samples!r}")
    if samples > 1 and not generation.do_sample:
        raise ValueError(f"samples={samples} needs sampling: greedy decoding gives the same reasoning every time")
    return samples
