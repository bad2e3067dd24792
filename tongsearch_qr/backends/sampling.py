"""Fast top-k/top-p sampling for ``transformers.generate`` on large batches.

transformers samples by sorting the whole vocabulary for top-p and drawing over all of it, which at
batch 64 on a CPU costs more than the model's forward pass. :class:`TopKTopPSampler` draws the token
inside the logits-processor chain from the top-k candidates only (same distribution: temperature,
then top-k, then top-p, then a multinomial draw) and leaves that token as the only finite score, so
``generate`` run greedily picks exactly it.

With one seeded generator per row (:func:`row_generators`), each row draws from its own random stream, so
a query's sample depends only on the seed, its prompt and the parameters: not on the other queries in the
batch, the batch size or the order of the queries; the global torch RNG is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import row_seed


class TopKTopPSampler:
    """A logits processor that samples; pass with ``do_sample=False`` and ``logits_processor=[...]``."""

    def __init__(self, temperature: float, top_k: int, top_p: float, generators: Sequence[torch.Generator] | None = None):
        if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError("temperature must be > 0, top_p in (0, 1], top_k >= 0")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generators = generators

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = scores.shape[-1] if self.top_k == 0 else min(self.top_k, scores.shape[-1])
        values, candidates = (scores / self.temperature).topk(k, dim=-1)  # sorted, best first
        probs = values.softmax(dim=-1)
        # transformers' top-p keeps a token unless the mass of the tokens strictly better than it
        # already reaches top_p; the best token is always kept.
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= self.top_p, 0.0)
        if self.generators is None:
            choice = torch.multinomial(probs, num_samples=1)
        else:  # inverse CDF with one uniform draw per row from that row's own generator
            if len(self.generators) != scores.shape[0]:
                raise ValueError(f"{len(self.generators)} generators for a batch of {scores.shape[0]} rows")
            draws = torch.cat([torch.rand(1, generator=g, device=g.device) for g in self.generators])
            cdf = probs.cumsum(dim=-1)
            choice = torch.searchsorted(cdf, (draws.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1), right=True)
            choice = choice.clamp_(max=k - 1)
        token = candidates.gather(-1, choice)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)


def row_generators(
    seed: int, prompts: Sequence[Sequence[int]], params_key: object, device: str, samples: Sequence[int] | None = None
) -> list[torch.Generator]:
    """One generator per prompt, seeded from (``seed``, the prompt's token ids, the generation parameters and,
    above 0, the row's sample index)."""
    return [
        torch.Generator(device=device).manual_seed(row_seed(seed, prompt, params_key, sample, bits=63))
        for prompt, sample in zip(prompts, samples or [0] * len(prompts))
    ]
