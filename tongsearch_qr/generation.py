"""Sampling parameters shared by every generating backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. The defaults are the paper's (max 500 new tokens, T=0.7, top-p 0.8,
    top-k 20, repetition penalty 1.05); ``GenerationParams.greedy()`` decodes deterministically."""

    max_new_tokens: int = 500
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.05
    do_sample: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @classmethod
    def greedy(cls, max_new_tokens: int = 500, repetition_penalty: float = 1.05) -> "GenerationParams":
        """Deterministic decoding (argmax at every step)."""
        return cls(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, do_sample=False)

    def with_(self, **changes: Any) -> "GenerationParams":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def key(self) -> dict[str, object]:
        """Identity of the settings for cache keys (sampling-only fields dropped when greedy)."""
        fields = asdict(self)
        if not self.do_sample:
            for name in ("temperature", "top_p", "top_k", "seed"):
                fields.pop(name)
        return fields
