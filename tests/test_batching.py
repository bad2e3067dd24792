import pytest

from tongsearch_qr.backends.batching import plan_batches


def _plan(lengths, new=100, size=64, tokens=65536, overhead=32):
    return [
        (r.start, r.stop)
        for r in plan_batches(lengths, new, max_batch_size=size, max_batch_tokens=tokens, step_overhead_tokens=overhead)
    ]


def test_uniform_lengths_fill_batches():
    assert _plan([100] * 10) == [(0, 10)]
    plan = _plan([100] * 130, size=64)
    assert len(plan) == 3 and all(stop - start <= 64 for start, stop in plan)


def test_a_few_long_prompts_are_split_off_when_padding_costs_more_than_a_batch():
    # 3 prompts of 600 then 45 of 150: padding 45 prompts to 600 wastes 20k tokens > one batch's 3.2k overhead
    assert _plan([600] * 3 + [150] * 45) == [(0, 3), (3, 48)]
    # with a large per-step overhead (GPU-like) one batch is cheaper
    assert _plan([600] * 3 + [150] * 45, overhead=1024) == [(0, 48)]


def test_token_budget_and_single_oversized_prompt():
    assert _plan([8000, 100, 100], new=10, tokens=4096) == [(0, 1), (1, 3)]
    plan = _plan([1000] * 10, new=0, tokens=3000, overhead=0)
    assert all(stop - start <= 3 for start, stop in plan) and plan[-1][1] == 10


def test_plan_covers_everything_in_order_and_checks_sorting():
    lengths = sorted([(i * 37) % 500 + 5 for i in range(300)], reverse=True)
    plan = _plan(lengths, size=16)
    assert plan[0][0] == 0 and plan[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    assert all(stop - start <= 16 for start, stop in plan)
    assert _plan([]) == []
    with pytest.raises(ValueError, match="sorted"):
        _plan([1, 2])
