"""Splitting length-sorted prompts into generation batches that waste little on padding."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int],
    new_tokens: int,
    *,
    max_batch_size: int,
    max_batch_tokens: int,
    step_overhead_tokens: int,
) -> list[range]:
    """Cut prompts sorted longest first into contiguous batches of least estimated cost.

    A batch of ``n`` prompts padded to length ``L`` costs ``n * L`` (prefill and attention over
    padding) plus ``new_tokens * step_overhead_tokens`` (the fixed cost of every decoding step, in
    prompt-token equivalents). Batches hold at most ``max_batch_size`` prompts and
    ``n * (L + new_tokens) <= max_batch_tokens`` tokens (a single longer prompt still gets its own batch).
    Exact dynamic programme, ``O(len(lengths) * max_batch_size)``.
    """
    if any(a < b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("lengths must be sorted longest first")
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    per_batch = new_tokens * step_overhead_tokens
    for end in range(1, n + 1):
        for start in range(end - 1, max(0, end - max_batch_size) - 1, -1):
            count = end - start
            if count > 1 and count * (lengths[start] + new_tokens) > max_batch_tokens:
                break
            cost = best[start] + count * lengths[start] + per_batch
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches = []
    end = n
    while end > 0:
        batches.append(range(cut[end], end))
        end = cut[end]
    return batches[::-1]
