"""Seeded sampling and batching in bfloat16 on a CPU with native bf16 (avx512_bf16), what ``dtype="auto"`` picks
there: where a seeded query's text depends on the other queries generated beside it, as docs/reasoners.md says."""

from __future__ import annotations

import pytest

from tongsearch_qr import GenerationParams, PromptTemplate
from tongsearch_qr.backends.cpu import native_bf16

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not native_bf16(), reason="needs a CPU with native bf16")]

QUESTIONS = [
    "Why is the sea salty?",
    "How do magnets work?",
    "Why do we dream?",
    "What is a black hole?",
    "Why do onions make people cry?",
    "Why does ice float?",
    "Why do cats purr?",
    "Why does bread go stale?",
]
PARAMS = GenerationParams(max_new_tokens=16, seed=7)
TEMPLATE = PromptTemplate.paper()


@pytest.fixture(scope="module")
def bf16():
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(dtype="bfloat16", device="cpu", batch_size=8)
    return backend, backend.generate(QUESTIONS, TEMPLATE, PARAMS)


def test_in_bf16_the_same_queries_in_one_batch_repeat_in_any_order(bf16):
    backend, together = bf16
    assert backend.generate(QUESTIONS, TEMPLATE, PARAMS) == together
    order = [3, 1, 7, 0, 5, 2, 6, 4]
    shuffled = backend.generate([QUESTIONS[i] for i in order], TEMPLATE, PARAMS)
    assert [shuffled[order.index(i)] for i in range(len(QUESTIONS))] == together


def test_in_bf16_a_seeded_querys_text_depends_on_the_batch_it_is_generated_in(bf16):
    # bf16 matrix products round differently for another number of rows, so a query generated alone (or at another
    # batch size) can draw another text; in float32 it does not (test_reasoner). Should this start to fail, bf16
    # became batch-invariant here: docs/reasoners.md' --seed sentence says where it holds and must be updated.
    backend, together = bf16
    alone = [backend.generate([q], TEMPLATE, PARAMS)[0] for q in QUESTIONS]
    assert sum(a != b for a, b in zip(alone, together)) >= 2
