"""Weighted term queries: a rewrite as the words a bag-of-words retriever should match, each with a weight.

A rewrite mode names a ranking intent: ``replace`` scores the reasoning alone, ``concat`` the question and the
reasoning with equal weight, ``weighted:K`` the question K times as much as the reasoning. As one text, that
intent reaches a retriever only if it counts every repeated word and ignores the filler words a reasoning is full
of; most stacks' BM25 does neither (PISA and Haystack's in-memory store score a query as a set of words). A
:class:`TermQuery` says it directly: word -> weight, with stopwords, the filler words of reasoning, numbers the
question does not hold and garbled tokens left out, and words grouped by their English (Snowball) stem.

Each adapter hands it to its stack in the stack's own form: weights (PyTerrier's ``query_toks``, Lucene boosts),
repeated words for retrievers that count them, or the strongest ``terms`` words for those that score a set.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from .modes import RewriteMode, get_mode

#: words: runs of letters and digits (no underscores), lowercased
_WORD = re.compile(r"[^\W_]+")

#: English stopwords (NLTK's list, as bm25s ships it) ...
_STOPWORDS = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before being below between
both but by can couldn d did didn do does doesn doing don down during each few for from further had hadn has hasn
have haven having he her here hers herself him himself his how i if in into is isn it its itself just ll m ma me
mightn more most mustn my myself needn no nor not now o of off on once only or other our ours ourselves out over
own re s same shan she should shouldn so some such t than that the their theirs them themselves then there these
they this those through to too under until up ve very was wasn we were weren what when where which while who whom
why will with won wouldn y you your yours yourself yourselves
""".split())

#: ... and the words every reasoning is made of, whatever its topic (the paper's prompt asks it to "identify the
#: essential problem", "think step by step" about "relevant and helpful" "information" and "draft an answer"):
#: left out of the reasoning's terms, kept when the question itself uses them
_FILLER = frozenset("""
also answer approach based certain consider could describe detailed determine directly draft due e eg either
else ensure especially essential etc example explanation find first following g given goal help helpful however
identify ie including instance involve involves key leading let like likely may mean means mention mentioned
might must need needs often one particularly possible possibly potentially problem provide query question
rather reason reasoning regarding relevant result seem seems several should since so specific specifically
statement step steps suggest suggests thought thoughts thus typically understand understanding use used user
using various well whether within without would
""".split())

_MAX_WORD = 30

#: how many words a rewrite keeps by default (see benchmarks/stacks.py)
DEFAULT_TERMS = 20


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """The lowercased words of ``text`` a retriever can match: no stopwords, no one-letter or overlong tokens."""
    return [w for w in _WORD.findall(text.lower()) if 1 < len(w) <= _MAX_WORD and w not in _STOPWORDS]


@dataclass(frozen=True)
class TermQuery:
    """Words with weights, strongest first (ties in the order the words first appear).

    ``weights`` maps each word (the most frequent spelling of its stem) to a positive weight.
    """

    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [t for t, w in self.weights.items() if not (isinstance(w, (int, float)) and w > 0 and math.isfinite(w))]
        if bad:
            raise ValueError(f"term weights must be positive finite numbers; not for {bad[:5]}")

    def __len__(self) -> int:
        return len(self.weights)

    def top(self, terms: int | None) -> TermQuery:
        """The ``terms`` strongest words (all with ``None``)."""
        if terms is None or terms >= len(self.weights):
            return self
        return TermQuery(dict(list(self.weights.items())[:terms]))

    def normalized(self) -> dict[str, float]:
        """The weights scaled so that the strongest is 1."""
        if not self.weights:
            return {}
        top = max(self.weights.values())
        return {t: w / top for t, w in self.weights.items()}

    def as_set(self) -> str:
        """The words once each, space-separated (for retrievers that score a query as a set of words)."""
        return " ".join(self.weights)

    def counts(self, most: int = 100) -> dict[str, int]:
        """The weights as whole repeat counts: the weakest word once, the others in proportion (at most ``most``)."""
        if not self.weights:
            return {}
        scale = min(1 / min(self.weights.values()), most / max(self.weights.values()))
        return {t: max(1, round(w * scale)) for t, w in self.weights.items()}

    def as_repeated(self, most: int = 100) -> str:
        """Each word repeated as often as :meth:`counts` says (for retrievers that count a query's repeated words,
        such as bm25s and Lucene)."""
        return " ".join(" ".join([t] * n) for t, n in self.counts(most).items())

    def as_lucene(self, digits: int = 3) -> str:
        """Lucene query syntax with boosts: ``word^weight ...`` (normalised to the strongest; for
        ``query_string`` queries of Elasticsearch, OpenSearch or Solr)."""
        return " ".join(f"{t}^{w:.{digits}f}" for t, w in self.normalized().items())


def term_query(question: str, reasoning: str | None, mode: str | RewriteMode, *, terms: int | None = None,
               saturation: float | None = None) -> TermQuery:
    """The :class:`TermQuery` of ``question`` and its ``reasoning`` under ``mode``.

    A word's weight is ``K * (its count in the question) + (its count in the reasoning)``, K being the mode's
    question copies (``replace`` 0, ``concat`` 1, ``weighted:K`` K); with ``saturation`` k1, that count is
    saturated as BM25 saturates a document's (``w * (k1 + 1) / (w + k1)``), as BRIGHT's BM25 weights a query.
    The reasoning's filler words, and its numbers the question does not hold, are left out. ``terms`` keeps only
    the strongest words.
    """
    mode = get_mode(mode)
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {}
    order: dict[str, int] = {}
    stem = _stemmer().stemWord

    def add(tokens: Iterable[str], weight: float, from_question: bool) -> None:
        for token in tokens:
            key = stem(token)
            if not from_question and key not in question_stems and (token in _FILLER or token.isdigit()):
                continue
            counts[key] += weight
            spellings.setdefault(key, Counter())[token] += 1
            order.setdefault(key, len(order))

    question_words = words(question)
    question_stems = {stem(w) for w in question_words}
    add(question_words, mode.query_repeats, True)
    if mode.with_reasoning and reasoning:
        add(words(reasoning), 1.0, False)
    weights = {}
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], order[item[0]])):
        if count <= 0:
            continue
        value = count * (saturation + 1) / (count + saturation) if saturation else float(count)
        weights[spellings[key].most_common(1)[0][0]] = value
    return TermQuery(weights).top(terms)
