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
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from .modes import RewriteMode, get_mode

#: words: runs of letters and digits (no underscores), lowercased
_WORD = re.compile(r"[^\W_]+")

#: English stopwords: NLTK's list (as bm25s ships it) and the generic words of everyday questions (verbs, quantifiers,
#: adverbs and nouns that say nothing of a topic), which retrievers that score a query as a set of words, or keep
#: stopwords (Haystack's in-memory store), would weigh as much as the words that matter
_STOPWORDS = frozenset(
    """
a about above after again against ain all am an and any are aren as at be because been before being below between
both but by can couldn d did didn do does doesn doing don down during each few for from further had hadn has hasn
have haven having he her here hers herself him himself his how i if in into is isn it its itself just ll m ma me
mightn more most mustn my myself needn no nor not now o of off on once only or other our ours ourselves out over
own re s same shan she should shouldn so some such t than that the their theirs them themselves then there these
they this those through to too under until up ve very was wasn we were weren what when where which while who whom
why will with won wouldn y you your yours yourself yourselves
able actually ago almost along already also although always among another anybody anyone anything anyway anywhere
appear around ask asked asking away basically become becomes began begin behind best better beyond cannot cant
certainly come comes coming could couldnt definitely done either else enough especially etc even ever every
everybody everyone everything everywhere exactly far fine following get gets getting give given gives go goes going
gone good got gotten great guess hello help hence however im indeed instead ive keep kind kinds know known knows
least less let lets like likely little lot lots made make makes making many may maybe mean means meant might mine
much must need needed needs neither never next nobody none noone nothing often ok okay one ones onto others
otherwise ought perhaps please possible possibly pretty probably quite rather really regarding right said say says
see seem seemed seems seen several shall since somebody somehow someone something sometimes somewhat somewhere
soon still sure take taken takes tell thanks thank thing things think thinking though thus together took toward
towards tried tries try trying unless upon us use used uses using usually via want wanted wants way ways well went
whatever whenever wherever whether whole whose within without wonder wondering would wouldnt yes yet
""".split()
)

#: ... and the words every reasoning is made of, whatever its topic (the paper's prompt asks it to "identify the
#: essential problem", "think step by step" about "relevant and helpful" "information" and "draft an answer"):
#: left out of the reasoning's terms, kept when the question itself uses them
_FILLER = frozenset(
    """
answer approach based certain consider describe detailed determine directly draft due e eg ensure essential
example explanation find first g goal helpful identify ie including instance involve involves key leading mention
mentioned particularly potentially problem provide query question reason reasoning relevant result specific
specifically statement step steps suggest suggests thought thoughts typically understand understanding user
various
""".split()
)

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
        """The weights as whole repeat counts, in proportion: whole-number weights as they are, others scaled so
        that the weakest word counts once; scaled down if the strongest would count more than ``most``."""
        if not self.weights:
            return {}
        values = self.weights.values()
        scale = 1.0 if all(float(w).is_integer() for w in values) else 1 / min(values)
        scale = min(scale, most / max(values))
        return {t: max(1, round(w * scale)) for t, w in self.weights.items()}

    def as_repeated(self, most: int = 100) -> str:
        """Each word repeated as often as :meth:`counts` says (for retrievers that count a query's repeated words,
        such as bm25s and Lucene)."""
        return " ".join(" ".join([t] * n) for t, n in self.counts(most).items())

    def as_lucene(self, digits: int = 3) -> str:
        """Lucene query syntax with boosts: ``word^weight ...`` (normalised to the strongest; for
        ``query_string`` queries of Elasticsearch, OpenSearch or Solr)."""
        return " ".join(f"{t}^{w:.{digits}f}" for t, w in self.normalized().items())


def term_query(
    question: str, reasoning: str | None, mode: str | RewriteMode, *, terms: int | None = None, once: bool = False
) -> TermQuery:
    """The :class:`TermQuery` of ``question`` and its ``reasoning`` under ``mode``.

    A word's weight is ``K * (its count in the question) + (its count in the reasoning)``, K being the mode's
    question copies (``replace`` 0, ``concat`` 1, ``weighted:K`` K); with ``once`` (a reasoning that is a list of
    terms) a word counts once in the reasoning however often its terms repeat it. Words are grouped by stem and
    spelled as the question spells them, else as the reasoning does most often. The reasoning's filler words, and
    its numbers the question does not hold, are left out, and so are its words the question lacks that weigh less
    than half a question word (``weighted:3``: words the reasoning names once): a retriever that scores a query as
    a set of words would count them as much as the question's. ``terms`` keeps only the strongest words.
    """
    mode = get_mode(mode)
    stem = _stemmer().stemWord
    question_words = words(question)
    question_stems = {stem(w) for w in question_words}
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {}
    for token in question_words:
        counts[stem(token)] += mode.query_repeats
        spellings.setdefault(stem(token), Counter())[token] += 1
    if mode.with_reasoning and reasoning:
        seen: Counter[str] = Counter()
        for token in words(reasoning):
            key = stem(token)
            if key not in question_stems and (token in _FILLER or token.isdigit()):
                continue
            seen[key] += 1
            if key not in question_stems:
                spellings.setdefault(key, Counter())[token] += 1
        counts.update({key: 1 if once else n for key, n in seen.items()})
    # a word the question lacks, weighing less than half a question word, is what a set of words cannot hold
    least = mode.query_repeats / 2
    kept = [(key, n) for key, n in counts.items() if n > 0 and (key in question_stems or n >= least)]
    order = {key: i for i, key in enumerate(counts)}  # question first, then the reasoning, as they appear
    kept.sort(key=lambda item: (-item[1], order[item[0]]))
    return TermQuery({spellings[key].most_common(1)[0][0]: float(n) for key, n in kept}).top(terms)
