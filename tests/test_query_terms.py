"""Term queries: the words a rewrite hands a BM25 retriever, and their weights under each mode."""

import pytest

from tongsearch_qr import QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend
from tongsearch_qr.query_terms import DEFAULT_TERMS, TermQuery, term_query, words

QUESTION = "Why can't humans drink sea water?"
REASONING = (
    "1. Identify the essential problem: drinking seawater. Seawater is hypertonic, so drinking it dehydrates "
    "cells by osmosis; the kidneys cannot make urine saltier than seawater. Step 2: kidneys, kidneys."
)


def test_words_are_lowercased_without_stopwords_one_letter_or_overlong_tokens():
    assert words("The Kidneys' cannot_make saltier urine; a b x" + " y" * 3 + " " + "z" * 31) == [
        "kidneys",
        "saltier",
        "urine",
    ]  # 'cannot' and 'make' are stopwords too: generic words of questions
    assert words("caf\u00e9 \ufffd\ufffd na\u00efve") == ["caf\u00e9", "na\u00efve"]


def test_replace_weighs_the_reasonings_words_by_count_grouped_by_stem_without_filler():
    weights = term_query(QUESTION, REASONING, "replace").weights
    # 'drinking' x2: one stem with the question's 'drink', spelled as the question spells it; 'seawater' x3
    assert weights["seawater"] == 3 and weights["kidneys"] == 3 and weights["drink"] == 2 and "drinking" not in weights
    assert not {"identify", "essential", "problem", "step", "1", "2"} & set(weights)
    assert list(weights)[:2] == ["seawater", "kidneys"]  # strongest first, ties in order of first appearance
    assert "humans" not in weights  # replace: the question's own words count only as the reasoning uses them


def test_question_copies_weigh_the_question_and_keep_its_filler_and_numbers():
    question = "Step 42 of the problem: why can't humans drink sea water?"
    weights = term_query(question, REASONING + " Since 1984, 42.", "weighted:3").weights
    assert weights["humans"] == 3 and weights["water"] == 3
    assert weights["drink"] == 3 + 2 and "drinking" not in weights  # one stem: both counts, the question's spelling
    assert weights["step"] == 3 + 1 and weights["problem"] == 3 + 1 and weights["42"] == 3 + 1  # the question uses them
    assert "1984" not in weights
    # a word the question lacks must weigh half a question word: named 3 times it stays, once it goes
    assert weights["seawater"] == 3 and "hypertonic" not in weights and "osmosis" not in weights
    concat = term_query(question, REASONING, "concat").weights
    assert concat["humans"] == 1 and concat["seawater"] == 3 and concat["hypertonic"] == 1
    original = term_query(question, REASONING, "original").weights
    assert set(original) == {"step", "42", "problem", "humans", "drink", "sea", "water"} and set(original.values()) == {1}


def test_a_list_of_terms_counts_each_word_once_however_its_terms_repeat_it():
    keywords = "accidents, road, road-related, road-making, road-making-driving, amaze, amaze-related"
    assert term_query("accidents", keywords, "weighted:3").weights == {
        "accidents": 4.0,
        "road": 4.0,
        "related": 2.0,
        "amaze": 2.0,
    }
    # once: the list's new words weigh 1, under half a question word in weighted:3, and the question's get +1
    assert term_query("accidents", keywords, "weighted:3", once=True).weights == {"accidents": 4.0}
    assert term_query("accidents", keywords, "concat", once=True).weights == {
        "accidents": 2.0,
        "road": 1.0,
        "related": 1.0,
        "driving": 1.0,
        "amaze": 1.0,
    }  # 'making': a stopword


def test_terms_keeps_the_strongest_words():
    full = term_query(QUESTION, REASONING, "concat")
    top = term_query(QUESTION, REASONING, "concat", terms=3)
    assert list(top.weights.items()) == list(full.weights.items())[:3]
    assert full.top(None) is full and full.top(len(full) + 5) is full


def test_renderings_for_each_kind_of_retriever():
    query = TermQuery({"seawater": 6.0, "kidneys": 3.0, "urine": 1.5})
    assert query.as_set() == "seawater kidneys urine"
    assert query.counts() == {"seawater": 4, "kidneys": 2, "urine": 1}
    assert query.as_repeated() == "seawater seawater seawater seawater kidneys kidneys urine"
    assert query.counts(most=2) == {"seawater": 2, "kidneys": 1, "urine": 1}
    # whole-number weights (counts under a mode) stay as they are: the question's words 3 times, a key word 4
    assert TermQuery({"salt": 6.0, "kidneys": 4.0, "urine": 3.0}).counts() == {"salt": 6, "kidneys": 4, "urine": 3}
    assert query.as_lucene() == "seawater^1.000 kidneys^0.500 urine^0.250"
    assert TermQuery({}).as_repeated() == "" and TermQuery({}).counts() == {}


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2"])
def test_weights_must_be_positive_finite_numbers(bad):
    with pytest.raises(ValueError, match="positive finite"):
        TermQuery({"word": bad})


def test_the_reasoner_hands_text_and_terms_from_one_reasoning_call():
    backend = PrecomputedBackend({QUESTION: REASONING}, source="test")
    reasoner = QRReasoner(backend=backend, mode="concat")
    assert reasoner.terms == DEFAULT_TERMS
    [rewrite] = reasoner.rewrites([QUESTION])
    assert rewrite.reasoning == REASONING and rewrite.text == QUESTION + "\n" + REASONING
    assert rewrite.terms == term_query(QUESTION, REASONING, "concat", terms=DEFAULT_TERMS)
    assert reasoner.rewrite([QUESTION], as_terms=True) == [rewrite.terms]
    assert reasoner.with_(terms=2).rewrite([QUESTION], as_terms=True)[0] == rewrite.terms.top(2)
    [[sample]] = reasoner.rewrite_samples([QUESTION], mode="original", as_terms=True)
    assert sample == term_query(QUESTION, None, "original", terms=DEFAULT_TERMS)
    [plain] = reasoner.rewrites([QUESTION], mode="original")
    assert plain.reasoning is None and plain.text == QUESTION
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="terms must be"):
            QRReasoner(backend=backend, terms=bad)
