"""A supervised warm start that teaches a small model which words of a question find its answer.

The target for each training question is its *key terms*: the words of the question (as the model sees it) that
BM25 would match in the question's accepted answer (same analyzer: English stopwords, Snowball stemming), rarest
first by document frequency over every training answer, at most ``keyterms.terms`` of them, comma-separated.
Sent after the question (mode ``concat``), they raise the weight of the words that matter. The model never sees
the answer at inference: it learns, across many questions, which kinds of words carry a question. TRL's
``SFTTrainer`` fine-tunes on the prompt/completion pairs (``keyterms.sft`` goes to ``SFTConfig``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from . import data as data_mod

_WORD = re.compile(r"\w+(?:[-'.]\w+)*")


class KeyTerms:
    """Key terms of questions with respect to their answers, with document frequencies over ``corpus``."""

    def __init__(self, corpus: Sequence[str]):
        self._stemmer = None
        documents = [set(tokens) for tokens in self.analyze(list(corpus))]
        self._df = Counter(term for terms in documents for term in terms)
        self._size = len(documents)

    def analyze(self, texts: list[str]) -> list[list[str]]:
        """BM25's terms of each text (bm25s' English stopwords and Snowball stemmer, as the retriever)."""
        import Stemmer

        from tongsearch_qr.retrieval.bm25 import bm25s_tokenize

        self._stemmer = self._stemmer or Stemmer.Stemmer("english")
        return bm25s_tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False)

    def term_set(self, texts: Sequence[str]) -> set[str]:
        """Every BM25 term of ``texts``."""
        return {term for tokens in self.analyze(list(texts)) for term in tokens}

    def rarest_first(self, terms: Sequence[str]) -> list[str]:
        """``terms`` by document frequency over the corpus, rarest first (ties keep their order)."""
        return sorted(terms, key=lambda t: -math.log((self._size + 1) / (self._df[t] + 1)))

    def of(self, question: str, positives: Sequence[str], limit: int) -> str:
        """The question's words whose BM25 term occurs in a positive, rarest first, comma-separated ("" if none)."""
        answer = self.term_set(positives)
        chosen: dict[str, str] = {}
        for word, term in words_of(question, self):
            if term in answer and term not in chosen:
                chosen[term] = word
        return ", ".join(chosen[t] for t in self.rarest_first(list(chosen))[:limit])


def words_of(text: str, terms: KeyTerms) -> list[tuple[str, str]]:
    """(word as written, BM25 term) for each word of ``text`` that has a term, in order."""
    words = _WORD.findall(text)
    return [(word, term) for word, found in zip(words, terms.analyze(words)) for term in found]


def key_term_rows(
    examples: Sequence[data_mod.TrainingExample], questions: Sequence[str], template, corpus: Sequence[str], limit: int
) -> list[dict]:
    """SFT rows (conversational prompt/completion): each question as the model sees it (``questions``, cut to
    the configured length) and its key terms; questions without any are left out."""
    terms = KeyTerms(corpus)
    rows = []
    for ex, question in zip(examples, questions):
        target = terms.of(question, ex.positives, limit)
        if target:
            rows.append({"prompt": template.messages(question), "completion": [{"role": "assistant", "content": target}]})
    return rows
