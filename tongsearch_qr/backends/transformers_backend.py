"""Local generation with Hugging Face transformers: batched, left-padded, length-sorted, CPU or CUDA."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ..generation import GenerationParams
from ..models import ModelSource, load_pretrained, resolve_model
from ..prompts import PromptTemplate
from .base import ResultCallback, sample_indices
from .batching import plan_batches
from .cpu import native_bf16
from .engine import GatheringEngine, Job, resolve, wait_rows
from .prompting import fit_prompt
from .sampling import TopKTopPSampler, row_generators


def pick_device(device: str = "auto") -> str:
    """``auto`` means CUDA when available, else CPU."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 where the device computes it natively (CUDA GPUs of compute capability 8.0 and up, CPUs
    with AVX512-BF16/AMX unless an ISA limit in the environment holds them back: :func:`~.cpu.native_bf16`), else
    float16 on CUDA (T4, V100: bf16 there is emulated and slow) and float32 on CPU. The requested GPU (``cuda:N``)
    is the one asked, not the current device."""
    import torch

    if dtype != "auto":
        try:
            return {
                "float32": torch.float32,
                "fp32": torch.float32,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
                "float16": torch.float16,
                "fp16": torch.float16,
            }[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda"):
        native = bool(torch.version.hip) or torch.cuda.get_device_properties(torch.device(device)).major >= 8
        return torch.bfloat16 if native else torch.float16
    return torch.bfloat16 if native_bf16() else torch.float32


#: batching on a CPU: the per-step overhead is small, so moderate batches are as fast as big ones
CPU_BATCH_SIZE, CPU_BATCH_TOKENS = 64, 65536
#: on CUDA: at most this many sequences per batch, and this share of the free memory for their KV cache
CUDA_MAX_BATCH_SIZE, CUDA_MEMORY_SHARE = 512, 0.5


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Bytes of KV cache one token takes in every layer (keys and values)."""
    text = getattr(config, "text_config", None) or config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def cuda_batching(free_bytes: int, config: Any, dtype_bytes: int) -> tuple[int, int]:
    """(sequences, tokens) per batch on a GPU with ``free_bytes`` free: the KV cache of a batch's padded tokens
    (prompt and new) fits in :data:`CUDA_MEMORY_SHARE` of the free memory, at most :data:`CUDA_MAX_BATCH_SIZE`
    sequences. A GPU's step costs nearly the same for 1 or 512 sequences, so batches are as large as fit."""
    tokens = int(free_bytes * CUDA_MEMORY_SHARE) // kv_bytes_per_token(config, dtype_bytes)
    if tokens < 1024:
        raise MemoryError(
            f"only {free_bytes / 2**30:.1f} GiB free on the GPU: not enough for a batch of this "
            "model's KV cache; free memory or pass batch_size/max_batch_tokens"
        )
    return CUDA_MAX_BATCH_SIZE, tokens


class TransformersBackend:
    """Generation with ``AutoModelForCausalLM.generate``.

    Questions are sorted by token length and cut into batches (of at most ``batch_size`` sequences
    and ``max_batch_tokens`` padded tokens; by default 64 and 65,536 on a CPU, and on CUDA sized from the
    GPU's free memory, see :func:`cuda_batching`) that trade padding against per-step overhead (see
    :func:`~tongsearch_qr.backends.batching.plan_batches`), generated with left padding; a
    question too long for the model's context (minus ``max_new_tokens``) is cut with a warning.
    Sampling uses :class:`~tongsearch_qr.backends.sampling.TopKTopPSampler` (same distribution as
    transformers' sampler, far cheaper on large batches); with ``seed`` set, each query draws from its own
    generator seeded by (seed, prompt, parameters), so its completion does not depend on batching or order.

    Concurrent calls (threads, asyncio tasks) share the model: one background thread generates, and the rows asked
    for while it runs a round of batches form its next round (dynamic batching, :class:`~.engine.GatheringEngine`),
    planned as one call's rows are. In float32 a row's completion does not depend on the rows beside it, so each
    caller gets what a batch call gives. (transformers' own continuous batching, ``generate_batch``, draws every
    row from one random generator and drops custom logits processors, so it cannot keep each row's seeded draw.)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        step_overhead_tokens: int | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source: ModelSource = resolve_model(model)
        device = pick_device(device)
        dtype_ = pick_dtype(dtype, device)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, self.source)
        # transformers decorates PreTrainedModel.to with functools.wraps, which typeshed types as an unbound function
        loaded = load_pretrained(AutoModelForCausalLM.from_pretrained, self.source, dtype=dtype_).to(device)  # type: ignore[arg-type]
        self._attach(loaded, tokenizer, self.source.identity(), batch_size, max_batch_tokens, step_overhead_tokens)

    @classmethod
    def from_loaded(
        cls,
        model: Any,
        tokenizer: Any,
        name: str,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        step_overhead_tokens: int | None = None,
    ) -> TransformersBackend:
        """Generate with a model already in memory (e.g. one being trained), as it is: not moved nor cast.
        ``generate`` switches it to eval mode; switch it back to train mode yourself."""
        backend = cls.__new__(cls)
        backend._attach(model, tokenizer, name, batch_size, max_batch_tokens, step_overhead_tokens)
        return backend

    def _attach(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        batch_size: int | None,
        max_batch_tokens: int | None,
        step_overhead_tokens: int | None,
    ) -> None:
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.device, self.dtype = str(model.device), model.dtype
        if self.device.startswith("cuda") and (batch_size is None or max_batch_tokens is None):
            free = torch.cuda.mem_get_info(torch.device(self.device))[0]
            sized = cuda_batching(free, model.config, torch.tensor([], dtype=self.dtype).element_size())
        else:
            sized = (CPU_BATCH_SIZE, CPU_BATCH_TOKENS)
        batch_size, max_batch_tokens = batch_size or sized[0], max_batch_tokens or sized[1]
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size}, {max_batch_tokens}")
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
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to use from several threads at once
        self._engine = GatheringEngine("tongsearch-qr-transformers", self._serve)

    def submit(
        self, questions: Sequence[str], template: PromptTemplate, params: GenerationParams, samples: Sequence[int] | None = None
    ) -> list[Future[str]]:
        """Queue ``questions`` and return one future per row at once; they are generated in the engine's next round
        with whatever else is queued by then. The round runs under the caller's CUDA autocast, if any."""
        samples = sample_indices(questions, samples)
        with self._tokenizer_lock:
            prompts = [fit_prompt(self.tokenizer, template, q, self.context_length, params.max_new_tokens) for q in questions]
        autocast = self._autocast()
        jobs = [Job(prompt, params, sample, context=autocast) for prompt, sample in zip(prompts, samples)]
        self._engine.put(jobs)
        return [job.future for job in jobs]

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
        return wait_rows(self.submit(questions, template, params, samples), questions, on_result)

    def _autocast(self) -> Any:
        """The CUDA autocast dtype the calling thread has on (``None``: off), for the engine's thread to use too."""
        torch = self._torch
        if self.device.startswith("cuda") and torch.is_autocast_enabled("cuda"):
            return torch.get_autocast_dtype("cuda")
        return None

    def _serve(self, jobs: list[Job]) -> None:
        """One round: the jobs grouped by decoding settings (and autocast), each group in length-sorted batches."""
        self.model.eval()
        groups: dict[tuple[GenerationParams, Any], list[Job]] = {}
        for job in sorted(jobs, key=lambda job: job.order):
            groups.setdefault((job.params, job.context), []).append(job)
        for (_, autocast), members in groups.items():
            if autocast is None:
                self._generate_rows(members)
            else:
                with self._torch.autocast("cuda", dtype=autocast):
                    self._generate_rows(members)

    def _generate_rows(self, jobs: list[Job]) -> None:
        """Jobs of one decoding setting, in the batches :func:`plan_batches` cuts, each job resolved with its batch."""
        params = jobs[0].params
        order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].prompt), reverse=True)
        plan = plan_batches(
            [len(jobs[i].prompt) for i in order],
            params.max_new_tokens,
            max_batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            step_overhead_tokens=self.step_overhead_tokens,
        )
        for positions in plan:
            batch = [jobs[order[p]] for p in positions]
            texts = self._generate_batch([job.prompt for job in batch], params, [job.sample for job in batch])
            for job, text in zip(batch, texts):
                resolve(job.future, text)

    def _generate_batch(self, prompts: list[list[int]], params: GenerationParams, samples: list[int]) -> list[str]:
        torch = self._torch
        with self._tokenizer_lock:
            enc = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        processors = []
        if params.do_sample:
            generators = None if params.seed is None else row_generators(params.seed, prompts, params.key(), self.device, samples)
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
        with self._tokenizer_lock:
            return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
