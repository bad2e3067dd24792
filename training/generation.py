"""Generating with the model being trained (validation, rft/dpo sampling, GRPO rollouts): in the dtype inference
would use, in batches sized for the memory there is, leaving the training model as it was."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def generation_model(model: Any, dtype: str = "auto") -> Iterator[Any]:
    """The model to generate with: in ``dtype``, where ``auto`` is what inference would pick on this device
    (:func:`~tongsearch_qr.backends.transformers_backend.pick_dtype`), so validation measures the reasoner as it
    will run. On a CPU a copy in that dtype (a 135M model's copy costs less than generating in float32); on CUDA
    the model itself under autocast. The training model is left as it was."""
    import torch

    from tongsearch_qr.backends.transformers_backend import pick_dtype

    device = str(next(model.parameters()).device)
    wanted = pick_dtype(dtype, device)
    held = next(model.parameters()).dtype
    if wanted == held:
        yield model
    elif device.startswith("cuda"):
        with torch.autocast("cuda", dtype=wanted):
            yield model
    else:
        yield copy.deepcopy(model).to(wanted)


@contextlib.contextmanager
def generation_backend(model: Any, tokenizer: Any, dtype: str, batch_size: int, name: str = "training") -> Iterator[Any]:
    """A :class:`~tongsearch_qr.backends.transformers_backend.TransformersBackend` over :func:`generation_model`
    (at most ``batch_size`` sequences a batch; on CUDA as many padded tokens as :func:`batch_tokens` allows).
    Afterwards the tokenizer pads on the side it did and the model is back in the mode (train or eval) it was in."""
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    padding_side, was_training = tokenizer.padding_side, model.training
    try:
        with generation_model(model, dtype) as generator:
            yield TransformersBackend.from_loaded(
                generator, tokenizer, name, batch_size=batch_size, max_batch_tokens=batch_tokens(generator)
            )
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)


def free_cuda_memory(device: Any) -> int:
    """Bytes a CUDA device has for generation: what the driver reports free plus what PyTorch's caching allocator
    holds reserved but unused (mid-training most of the memory is there, and ``mem_get_info`` counts it as used)."""
    import torch

    free = torch.cuda.mem_get_info(device)[0]
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def batch_tokens(model: Any) -> int | None:
    """The padded tokens a generation batch of ``model`` may hold: on CUDA, what
    :func:`~tongsearch_qr.backends.transformers_backend.cuda_batching` allows in :func:`free_cuda_memory`;
    ``None`` elsewhere (the backend's CPU batching)."""
    device = str(model.device)
    if not device.startswith("cuda"):
        return None
    import torch

    from tongsearch_qr.backends.transformers_backend import cuda_batching

    element = torch.tensor([], dtype=model.dtype).element_size()
    return cuda_batching(free_cuda_memory(torch.device(device)), model.config, element)[1]
