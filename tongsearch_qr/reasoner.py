"""The query reasoner: questions in, reasoning (and retriever-ready rewrites) out."""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal, overload

from .backends import Backend, make_backend
from .backends.base import generate_rows
from .cache import ReasoningCache, config_key
from .generation import GenerationParams
from .methods import Method, get_method
from .models import reasoner_settings
from .modes import RewriteMode, get_mode
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

    ``stats`` counts, over the reasoner's life, the unique queries reasoned about (``queries``) and, of
    their reasonings (one per query and sample), those found in the cache (``cached``), those generated
    (``generated``) and the generations that came back empty (``empty``: a failure, warned about, never
    cached, and retried on the next call).
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
        **backend_options: Any,
    ):
        if template is not None and think and not template.think:
            raise ValueError("think=True conflicts with a template whose think flag is off")
        if method is not None:
            chosen = get_method(method)
            if chosen.template is None:
                raise ValueError(f"method {chosen.name!r} uses no LLM: it is a retriever setting "
                                 f"(make_retriever({chosen.retriever!r}, **{chosen.retriever_options}); "
                                 f"eval --method {chosen.name})")
            if think:
                raise ValueError("think mode belongs to TongSearch QR's prompt; drop think=True or method=")
            defaults = {"template": chosen.template, "mode": chosen.mode, "generation": chosen.generation,
                        "samples": chosen.samples}
        else:  # a trained model's settings (tongsearch_qr.json), if any
            defaults = reasoner_settings(model) if isinstance(backend, str) and backend != "precomputed" else {}
            if "template" in defaults:
                defaults["template"] = PromptTemplate(**defaults["template"])
            if "max_new_tokens" in defaults:
                defaults["generation"] = GenerationParams(max_new_tokens=defaults["max_new_tokens"])
        if template is None and "template" in defaults and not think:
            template = defaults["template"]
        self.template = template or PromptTemplate.paper(think=think)
        self.generation = generation or defaults.get("generation") or GenerationParams()
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
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

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

    def with_(self, *, template: PromptTemplate | None = None, generation: GenerationParams | None = None,
              mode: str | RewriteMode | None = None, samples: int | None = None,
              feedback: Feedback | None = None, terms: int | None | EllipsisType = ...) -> "QRReasoner":
        """A reasoner sharing this one's backend (the loaded model) and cache, with some settings changed;
        this one is left as it is, so pipelines that share it keep their behaviour."""
        other = copy.copy(self)
        other.stats, other._lock = Counter(), threading.Lock()
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

    def reason(self, queries: Sequence[str], *, progress: bool | None = None) -> list[str]:
        """The reasoning for each query, in order (with ``samples`` > 1, its samples joined by newlines).
        Repeated and cached queries are not regenerated."""
        return ["\n".join(texts) for texts in self.reason_samples(queries, progress=progress)]

    def reason_samples(self, queries: Sequence[str], *, progress: bool | None = None) -> list[list[str]]:
        """The ``samples`` reasonings of each query, in order. Each (query, sample) is cached on its own, so
        an interrupted run resumes where it stopped. A prompt that shows retrieved passages gets them from
        ``feedback`` and is cached under the filled prompt (other passages, another entry)."""
        queries = validate_queries(queries)
        unique = list(dict.fromkeys(queries))
        inputs = self._prompt_inputs(unique)
        keys = list(dict.fromkeys(inputs.values()))
        done: dict[tuple[str, int], str] = {}
        for sample in range(self.samples):
            found = self.cache.get_many(self._sample_config(sample), keys) if self.cache else {}
            done.update(((key, sample), text) for key, text in found.items())
        pending = [(key, s) for key in keys for s in range(self.samples) if (key, s) not in done]
        log.info("%d queries (%d unique)%s, %d already in the reasoning cache", len(queries), len(unique),
                 f" x {self.samples} samples" if self.samples > 1 else "", len(done))
        self.stats.update(queries=len(unique), cached=len(done))
        if pending:
            self._generate(pending, done, self.progress if progress is None else progress)
        return [[self.template.extract(done[inputs[q], s]) for s in range(self.samples)] for q in queries]

    def _prompt_inputs(self, queries: list[str]) -> dict[str, str]:
        """What the backend gets as the question of each query: the query, or the filled user turn when the
        prompt shows retrieved passages."""
        if not self.template.passages:
            return {q: q for q in queries}
        if self.feedback is None:
            raise ValueError("this method's prompt shows retrieved passages: give the reasoner feedback= (a "
                             "function from queries to their top passages' texts); eval does this itself")
        passages = self.feedback(queries)
        if len(passages) != len(queries):
            raise ValueError(f"feedback returned passages for {len(passages)} of {len(queries)} queries")
        return {q: self.template.fill(q, texts) for q, texts in zip(queries, passages)}

    def _generate(self, pending: list[tuple[str, int]], done: dict[tuple[str, int], str], progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="reasoning", unit="query", disable=not progress)

        def store(i: int, completion: str) -> None:
            query, sample = pending[i]
            with self._lock:
                if (query, sample) in done:
                    return
                self.stats["generated"] += 1
                if not completion or not completion.strip():
                    self.stats["empty"] += 1
                    log.warning("empty completion for query %r (not cached; a rerun retries it)", query[:80])
                    done[query, sample] = ""
                elif self.cache is not None:  # the first completion stored under this key wins
                    stored = self.cache.put_many(self._sample_config(sample), [(query, completion)])
                    done[query, sample] = stored.get(query, completion)
                else:
                    done[query, sample] = completion
                bar.update(1)

        try:
            template = self.template.filled() if self.template.passages else self.template
            completions = generate_rows(self.backend, [q for q, _ in pending], template, self.generation, store,
                                        [s for _, s in pending])
        finally:
            bar.close()
        if len(completions) != len(pending):
            raise RuntimeError(f"backend returned {len(completions)} completions for {len(pending)} queries")
        for i, completion in enumerate(completions):
            store(i, completion)

    @overload
    def rewrite(self, queries: Sequence[str], mode: str | RewriteMode | None = None, *,
                progress: bool | None = None, as_terms: Literal[False] = False) -> list[str]: ...

    @overload
    def rewrite(self, queries: Sequence[str], mode: str | RewriteMode | None = None, *,
                progress: bool | None = None, as_terms: Literal[True]) -> list[TermQuery]: ...

    def rewrite(self, queries: Sequence[str], mode: str | RewriteMode | None = None, *,
                progress: bool | None = None, as_terms: bool = False) -> list[str] | list[TermQuery]:
        """What to send to a retriever for each query under ``mode`` (default: the reasoner's mode): the text, or
        with ``as_terms`` its :class:`~tongsearch_qr.query_terms.TermQuery` (the ``terms`` strongest words with
        their weights, for BM25 retrievers)."""
        return [texts[0] for texts in self._rewrites(queries, mode, progress, as_terms, joined=True)]

    def rewrites(self, queries: Sequence[str], mode: str | RewriteMode | None = None, *,
                 progress: bool | None = None) -> list[Rewrite]:
        """Each query's :class:`Rewrite` under ``mode`` (default: the reasoner's mode): its reasoning, the text and
        the term query, from one reasoning call (what the stack adapters hand on)."""
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        reasoning = self.reason(queries, progress=progress) if chosen.with_reasoning else [None] * len(queries)
        return [Rewrite(q, r, chosen.apply(q, r), term_query(q, r, chosen, terms=self.terms))
                for q, r in zip(queries, reasoning)]

    def rewrite_samples(self, queries: Sequence[str], mode: str | RewriteMode | None = None, *,
                        progress: bool | None = None, as_terms: bool = False) -> list[list[Any]]:
        """One rewrite per sample for each query under ``mode`` (default: the reasoner's mode), as text or, with
        ``as_terms``, as :class:`~tongsearch_qr.query_terms.TermQuery`."""
        return self._rewrites(queries, mode, progress, as_terms, joined=False)

    def _rewrites(self, queries: Sequence[str], mode: str | RewriteMode | None, progress: bool | None,
                  as_terms: bool, joined: bool) -> list[list[Any]]:
        chosen = self.mode if mode is None else get_mode(mode)
        queries = validate_queries(queries)
        if not chosen.with_reasoning:
            samples = [[None] * (1 if joined else self.samples) for _ in queries]
        elif joined:
            samples = [[text] for text in self.reason(queries, progress=progress)]
        else:
            samples = self.reason_samples(queries, progress=progress)
        if as_terms:
            return [[term_query(q, r, chosen, terms=self.terms) for r in texts] for q, texts in zip(queries, samples)]
        return [[chosen.apply(q, r) for r in texts] for q, texts in zip(queries, samples)]


@dataclass(frozen=True)
class Rewrite:
    """One query rewritten under a mode: its ``reasoning`` (``None`` when the mode uses none), the ``text`` to
    send to a retriever that reads text (an embedder) and the ``terms`` for BM25 retrievers."""

    question: str
    reasoning: str | None
    text: str
    terms: TermQuery


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
