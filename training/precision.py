"""The precision policy of training: the dtype the trained weights are held in, and whether a trainer's ``bf16:
true`` (bfloat16 autocast) is kept on this machine."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def weights_dtype(name: str) -> Any:
    """The torch dtype of ``weights_dtype: name``: float32 (master weights; ``bf16: true`` in a stage's settings
    computes in bfloat16 through autocast) unless pure low-precision weights are asked for (with a warning)."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if dtype != torch.float32:
        log.warning(
            "weights_dtype %s: the optimizer updates %s weights directly, so small steps round away "
            "(a 1e-6 step leaves most weights of magnitude 0.02 unchanged)",
            name,
            dtype,
        )
    return dtype


def machine_precision(options: dict[str, Any]) -> dict[str, Any]:
    """A trainer's ``options`` for this machine: ``bf16: true`` (bfloat16 autocast) is dropped, with a warning,
    where training runs on a CPU that computes bfloat16 only by emulation (no AVX512-BF16/AMX; the commoner
    kind): autocast there is several times slower than float32, which the weights are held in anyway. GPUs and
    CPUs with native bf16 keep what was asked."""
    import torch

    from tongsearch_qr.backends.cpu import native_bf16

    on_cpu = options.get("use_cpu") or not torch.cuda.is_available()
    if not options.get("bf16") or not on_cpu or native_bf16():
        return options
    log.warning(
        "bf16: true asked, but this CPU computes bfloat16 only by emulation (no avx512_bf16/AMX): training "
        "in float32 instead (faster here; a CPU with native bf16 trains in bfloat16 autocast)"
    )
    return {**options, "bf16": False}
