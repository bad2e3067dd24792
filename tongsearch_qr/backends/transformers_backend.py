"""Local generation with Hugging Face transformers: batched, left-padded, length-sorted, CPU or CUDA."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..generation import GenerationParams
from ..models import ModelSource, load_pretrained, resolve_model
from ..prompts import PromptTemplate
from .base import ResultCallback, sample_indices
from .batching import plan_batches
from .prompting import fit_prompt
from .sampling import TopKTopPSampler, row_generators


def pick_device(device: str = "auto") -> str:
    """``auto`` means CUDA when available, else CPU."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on CUDA and on CPUs with native bf16 support, else float32."""
    import torch

    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


class TransformersBackend:
    """Generation with ``AutoModelForCausalLM.generate``.

    Questions are sorted by token length and cut into batches (of at most ``batch_size`` sequences
    and ``max_batch_tokens`` padded tokens) that trade padding against per-step overhead (see
    :func:`~tongsearch_qr.backends.batching.plan_batches`), generated with left padding; a
    question too long for the model's context (minus ``max_new_tokens``) is cut with a warning.
    Sampling uses :class:`~tongsearch_qr.backends.sampling.TopKTopPSampler` (same distribution as
    transformers' sampler, far cheaper on large batches); with ``seed`` set, each query draws from its own
    generator seeded by (seed, prompt, parameters), so its completion does not depend on batching or order.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 65536,
        step_overhead_tokens: int | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source: ModelSource = resolve_model(model)
        device = pick_device(device)
        dtype_ = pick_dtype(dtype, device)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, self.source)
        loaded = load_pretrained(AutoModelForCausalLM.from_pretrained, self.source, dtype=dtype_).to(device)
        self._attach(loaded, tokenizer, self.source.identity(), batch_size, max_batch_tokens, step_overhead_tokens)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, name: str, *, batch_size: int = 64, max_batch_tokens: int = 65536,
                    step_overhead_tokens: int | None = None) -> TransformersBackend:
        """Generate with a model already in memory (e.g. one being trained), as it is: not moved nor cast.
        ``generate`` switches it to eval mode; switch it back to train mode yourself."""
        backend = cls.__new__(cls)
        backend._attach(model, tokenizer, name, batch_size, max_batch_tokens, step_overhead_tokens)
        return backend

    def _attach(self, model: Any, tokenizer: Any, name: str, batch_size: int, max_batch_tokens: int,
                step_overhead_tokens: int | None) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size}, {max_batch_tokens}")
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.device, self.dtype = str(model.device), model.dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        # fixed cost of a decoding step in prompt-token equivalents: small on CPUs, large on GPUs
        self.step_overhead_tokens = step_overhead_tokens or (32 if self.device == "cpu" else 1024)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.chat_template is None:
            raise ValueError(f"model {name!r} has no chat template; use an instruct/chat model")
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        self.cache_id = f"transformers:{name}:{str(self.dtype).removeprefix('torch.')}"
        self._torch = torch

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions``, longest prompts first, in input order; the samples of a question
        are rows of the same batches."""
        samples = sample_indices(questions, samples)
        self.model.eval()
        prompts = [fit_prompt(self.tokenizer, template, q, self.context_length, params.max_new_tokens) for q in questions]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        results: list[str] = [""] * len(prompts)
        plan = plan_batches([len(prompts[i]) for i in order], params.max_new_tokens, max_batch_size=self.batch_size,
                            max_batch_tokens=self.max_batch_tokens, step_overhead_tokens=self.step_overhead_tokens)
        for positions in plan:
            batch = [order[p] for p in positions]
            for i, text in zip(batch, self._generate_batch([prompts[i] for i in batch], params,
                                                           [samples[i] for i in batch])):
                results[i] = text
                if on_result is not None:
                    on_result(i, text)
        return results

    def _generate_batch(self, prompts: list[list[int]], params: GenerationParams, samples: list[int]) -> list[str]:
        torch = self._torch
        enc = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        processors = []
        if params.do_sample:
            generators = None if params.seed is None else row_generators(params.seed, prompts, params.key(), self.device,
                                                                             samples)
            processors.append(TopKTopPSampler(params.temperature, params.top_k, params.top_p, generators))
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                repetition_penalty=params.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=processors,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
