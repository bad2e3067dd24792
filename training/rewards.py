"""Rewards for GRPO, as plain TRL reward callables: ``reward(completions, **dataset_columns) -> list[float]``.

- :class:`EmbeddingAdvantage`: the paper's reward (how much closer the reasoning is to the positive
  documents than the question is, in a sentence embedding space).
- :class:`BM25Rank`: where the positives rank when the reasoning is the BM25 query over the question's own
  pool (positives + hard negatives): optimises for the retriever the reasoner will feed.
- :class:`LengthPenalty`, :class:`ThinkFormat`: optional shaping, combined through TRL's ``reward_weights``.

Every reward returns one float per completion; :func:`checked` turns NaN/inf into a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tongsearch_qr.modes import get_mode
from tongsearch_qr.prompts import distinct_terms, parse_think_answer

Reward = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or conversational ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise TypeError(f"unexpected completion format: {type(completion).__name__}")


def reasoning_of(completion: Any, think: bool, keywords: bool = False) -> str | None:
    """The reasoning a completion carries (``keywords``: its distinct terms), or ``None`` when it is empty or
    (think mode) has no answer tags."""
    text = completion_text(completion)
    if think:
        text = parse_think_answer(text) or ""
    return (distinct_terms(text) if keywords else text.strip()) or None


class EmbeddingAdvantage:
    """``scale`` x mean over positives of [cos(reasoning, doc) - cos(question, doc)]; ``invalid`` (-1) for an
    empty completion or, with ``think=True``, one without ``<answer>`` tags. ``keywords=True``: the reasoning
    is the completion's distinct terms (as a ``keywords`` prompt template extracts them).

    ``model``: a sentence-transformers model name/path or instance (paper: BAAI/bge-base-en-v1.5; default the
    offline all-MiniLM-L6-v2). All texts of a call (the whole group) are encoded in one batch; question and
    document embeddings are kept between calls.
    """

    __name__ = "embedding_advantage"

    def __init__(
        self,
        model: Any = None,
        *,
        scale: float = 10.0,
        think: bool = False,
        keywords: bool = False,
        invalid: float = -1.0,
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        self.model_spec, self.scale, self.think, self.keywords, self.invalid = model, scale, think, keywords, invalid
        self.batch_size, self.max_length = batch_size, max_length
        self._model: Any = None
        self._memo: dict[str, np.ndarray] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from tongsearch_qr.retrieval.dense import DenseRetriever

            spec = self.model_spec
            self._model = (
                DenseRetriever(spec, max_length=self.max_length).model if spec is None or isinstance(spec, str) else spec
            )
        return self._model

    def _encode(self, texts: list[str], remember: bool) -> dict[str, np.ndarray]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        vectors = (
            self.model.encode(todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True) if todo else []
        )
        fresh = dict(zip(todo, vectors))
        if remember:
            self._memo.update(fresh)
        return {t: fresh[t] if t in fresh else self._memo[t] for t in texts}

    def __call__(
        self, completions: Sequence[Any], question: Sequence[str], positives: Sequence[Sequence[str]], **_: Any
    ) -> list[float]:
        reasoning = [reasoning_of(c, self.think, self.keywords) for c in completions]
        fixed = self._encode([*question, *(d for docs in positives for d in docs)], remember=True)
        made = self._encode([r for r in reasoning if r], remember=False)
        rewards = []
        for text, q, docs in zip(reasoning, question, positives):
            if text is None:
                rewards.append(self.invalid)
                continue
            doc_matrix = np.stack([fixed[d] for d in docs])
            gain = doc_matrix @ made[text] - doc_matrix @ fixed[q]
            rewards.append(float(self.scale * gain.mean()))
        return rewards


def reciprocal_rank(ranked_relevance: Sequence[bool]) -> float:
    """1 / rank of the first relevant item (0 when none)."""
    return next((1.0 / (i + 1) for i, rel in enumerate(ranked_relevance) if rel), 0.0)


def ndcg_at(ranked_relevance: Sequence[bool], k: int = 10, relevant: int | None = None) -> float:
    """Binary-relevance nDCG@k as trec_eval computes it: the ideal ranking holds every relevant document
    (``relevant``, default the relevant items in ``ranked_relevance``), not only those retrieved."""
    total = sum(ranked_relevance) if relevant is None else relevant
    if total < sum(ranked_relevance):
        raise ValueError(f"ndcg_at: {sum(ranked_relevance)} relevant items ranked but relevant={relevant}")
    if not total:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, rel in enumerate(ranked_relevance[:k]) if rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(total, k)))
    return dcg / ideal


class BM25Rank:
    """Retrieval quality of the positives when the rewrite (``mode``: ``concat`` = question + reasoning, or
    ``replace``, ``weighted``...) is the BM25 query over the question's pool (positives + negatives), or, with
    ``corpus``, over a whole corpus: one list of documents (every training answer, ``pool: corpus``), or a
    mapping from each question's ``source`` column to its documents (``pool: source``: its site's or BRIGHT
    task's answers); ranks beyond ``depth`` count as not found.

    ``metric``: ``rr`` (reciprocal rank of the first positive) or ``ndcg`` (nDCG@10 over every positive, as
    trec_eval). With ``gain=True`` the reward is the change against the question alone (0 = no better than not
    reasoning). ``invalid`` for empty/unparseable completions; ``think`` and ``keywords`` as for
    :class:`EmbeddingAdvantage`. Each BM25 index (per question pool, corpus or source) is built once.
    """

    __name__ = "bm25_rank"

    def __init__(
        self,
        *,
        mode: str = "concat",
        metric: str = "rr",
        gain: bool = True,
        think: bool = False,
        keywords: bool = False,
        invalid: float = -1.0,
        corpus: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        depth: int = 100,
    ):
        if metric not in ("rr", "ndcg"):
            raise ValueError(f"metric must be 'rr' or 'ndcg', got {metric!r}")
        self.mode, self.metric, self.gain, self.invalid = get_mode(mode), metric, gain, invalid
        self.think, self.keywords, self.depth = think, keywords, depth
        self.by_source = isinstance(corpus, Mapping)
        if corpus is None:
            self.corpora: dict[str | None, list[str]] = {}
        elif isinstance(corpus, Mapping):
            self.corpora = {source: list(dict.fromkeys(docs)) for source, docs in corpus.items()}
        else:
            self.corpora = {None: list(dict.fromkeys(corpus))}
        self._indexes: dict[Any, Any] = {}

    @property
    def corpus(self) -> list[str] | None:
        """The one corpus every question ranks in (``None`` with per-question pools or per-source corpora)."""
        return self.corpora.get(None) if not self.by_source else None

    def _index(self, key: Any, docs: Sequence[str]) -> Any:
        if key not in self._indexes:
            from tongsearch_qr.retrieval.bm25 import BM25Retriever

            self._indexes[key] = BM25Retriever(show_progress=False).index((str(i), d) for i, d in enumerate(docs))
        return self._indexes[key]

    def score(
        self, queries: Sequence[str], question: str, positives: Sequence[str], negatives: Sequence[str], source: str | None = None
    ) -> list[float]:
        """The metric of each query over ``question``'s pool (or the corpus, or ``source``'s corpus)."""
        wanted = set(positives)
        metric = reciprocal_rank if self.metric == "rr" else (lambda ranked: ndcg_at(ranked, relevant=len(wanted)))
        if self.corpora:
            if self.by_source and source not in self.corpora:
                raise ValueError(f"bm25_rank: no corpus for source {source!r} (sources: {sorted(self.corpora)})")
            docs = self.corpora[source if self.by_source else None]
            missing = wanted - set(docs)
            if missing:
                raise ValueError(f"bm25_rank: a positive of {question[:80]!r} is not in its corpus")
            hits = self._index(("corpus", source), docs).search(list(queries), k=min(self.depth, len(docs)))
            return [metric([docs[int(doc_id)] in wanted for doc_id, _ in ranked]) for ranked in hits]
        docs = list(dict.fromkeys([*positives, *negatives]))
        retriever = self._index(("question", question), docs)
        return [
            metric([docs[int(doc_id)] in wanted for doc_id, _ in ranked])
            for ranked in retriever.search(list(queries), k=len(docs))
        ]

    def margins(
        self, queries: Sequence[str], question: str, positives: Sequence[str], negatives: Sequence[str], source: str | None = None
    ) -> list[float]:
        """For each query, the best positive's BM25 score minus the best other document's (> 0: a positive
        ranks first; the larger, the more clearly), over the same pool as :meth:`score`."""
        wanted = set(positives)
        if self.corpora:
            docs = self.corpora[source if self.by_source else None]
            index = self._index(("corpus", source), docs)
        else:
            docs = list(dict.fromkeys([*positives, *negatives]))
            index = self._index(("question", question), docs)
        found = []
        for ranked in index.search(list(queries), k=len(docs)):
            best = {True: 0.0, False: 0.0}
            for doc_id, value in ranked:
                kind = docs[int(doc_id)] in wanted
                best[kind] = max(best[kind], value)
            found.append(best[True] - best[False])
        return found

    def __call__(
        self,
        completions: Sequence[Any],
        question: Sequence[str],
        positives: Sequence[Sequence[str]],
        negatives: Sequence[Sequence[str]] | None = None,
        source: Sequence[str] | None = None,
        **_: Any,
    ) -> list[float]:
        negatives = negatives if negatives is not None else [[] for _ in question]
        if self.by_source and source is None:
            raise ValueError("bm25_rank with per-source corpora (pool: source) needs the dataset's source column")
        reasoning = [reasoning_of(c, self.think, self.keywords) for c in completions]
        rewards: list[float] = [self.invalid] * len(completions)
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(question):
            groups.setdefault(q, []).append(i)
        for q, members in groups.items():  # one search call per question for the whole group
            first = members[0]
            valid = [i for i in members if reasoning[i] is not None]
            queries = [self.mode.apply(q, reasoning[i]) for i in valid]
            if self.gain:
                queries.append(q)
            scores = (
                self.score(queries, q, positives[first], negatives[first], source[first] if source is not None else None)
                if queries
                else []
            )
            base = scores.pop() if self.gain else 0.0
            for i, s in zip(valid, scores):
                rewards[i] = s - base
        return rewards


class LengthPenalty:
    """0 up to ``max_words`` words, then down linearly to -1 at twice that; -1 for empty completions."""

    __name__ = "length_penalty"

    def __init__(self, max_words: int = 300):
        if max_words < 1:
            raise ValueError("max_words must be >= 1")
        self.max_words = max_words

    def __call__(self, completions: Sequence[Any], **_: Any) -> list[float]:
        out = []
        for c in completions:
            words = len(completion_text(c).split())
            out.append(-1.0 if not words else -min(1.0, max(0, words - self.max_words) / self.max_words))
        return out


class ThinkFormat:
    """1 when a completion has ``<think>…</think><answer>…</answer>`` with a non-empty answer, else 0."""

    __name__ = "think_format"

    def __call__(self, completions: Sequence[Any], **_: Any) -> list[float]:
        return [1.0 if (parse_think_answer(completion_text(c)) or "").strip() else 0.0 for c in completions]


REWARDS: dict[str, type] = {
    "embedding_advantage": EmbeddingAdvantage,
    "bm25_rank": BM25Rank,
    "length_penalty": LengthPenalty,
    "think_format": ThinkFormat,
}


def make_reward(name: str, **options: Any) -> Reward:
    """The reward registered as ``name`` with ``options``, wrapped by :func:`checked`."""
    try:
        cls = REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; choose one of: {', '.join(REWARDS)}") from None
    return checked(cls(**options))


def checked(reward: Reward) -> Reward:
    """``reward`` with its output checked: one finite float (or None, which TRL skips) per completion."""
    name = getattr(reward, "__name__", type(reward).__name__)

    def run(completions: Sequence[Any], **columns: Any) -> list[float]:
        values = reward(completions, **columns)
        if len(values) != len(completions):
            raise ValueError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
        bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"reward {name!r} returned a non-finite value ({values[bad[0]]}) for completion #{bad[0]} "
                f"(question {str(columns.get('question', ['?'] * (bad[0] + 1))[bad[0]])[:80]!r})"
            )
        return values

    run.__name__ = name
    run.inner = reward  # type: ignore[attr-defined]
    return run


__all__ = [
    "REWARDS",
    "BM25Rank",
    "EmbeddingAdvantage",
    "LengthPenalty",
    "ThinkFormat",
    "checked",
    "reasoning_of",
    "make_reward",
    "ndcg_at",
    "reciprocal_rank",
]
