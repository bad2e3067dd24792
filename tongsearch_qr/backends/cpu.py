"""Whether this CPU computes bfloat16 natively: the one answer every choice of precision on a CPU uses (the
transformers backend's ``dtype="auto"``, ``backend="auto"``'s llama.cpp weight type, training's bf16 autocast,
the benchmarks and the tests that need native bf16).

A CPU computes bfloat16 natively with AVX512_BF16 or AMX (x86) or ARM's BF16 extension. torch's oneDNN check
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) is not that answer on x86: it is true on every AVX512_CORE CPU
(Skylake-SP, Cascade Lake, Ice Lake), where oneDNN only emulates bfloat16, several times slower than float32.
An instruction-set limit set in the environment holds the kernels below bfloat16 instructions, as on a CPU
without them, and is honoured (:func:`bf16_isa_limit`).
"""

from __future__ import annotations

import os
import platform

#: oneDNN's ``ONEDNN_MAX_CPU_ISA`` (also read as ``DNNL_MAX_CPU_ISA``) values below its first ISA with bfloat16
#: instructions (``AVX512_CORE_BF16``)
ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
#: oneMKL's ``MKL_ENABLE_INSTRUCTIONS`` values below its first with bfloat16 (``AVX512_E3``)
MKL_ISAS_WITHOUT_BF16 = frozenset({"SSE4_2", "AVX", "AVX2", "AVX2_E1", "AVX512", "AVX512_E1", "AVX512_E2"})
#: ``ATEN_CPU_CAPABILITY`` values that hold torch's own kernels below AVX-512
ATEN_CAPABILITIES_WITHOUT_BF16 = frozenset({"DEFAULT", "AVX2"})
_LIMITS = (
    ("ONEDNN_MAX_CPU_ISA", ONEDNN_ISAS_WITHOUT_BF16),
    ("DNNL_MAX_CPU_ISA", ONEDNN_ISAS_WITHOUT_BF16),
    ("MKL_ENABLE_INSTRUCTIONS", MKL_ISAS_WITHOUT_BF16),
    ("ATEN_CPU_CAPABILITY", ATEN_CAPABILITIES_WITHOUT_BF16),
)


def bf16_isa_limit() -> str | None:
    """The instruction-set limit set in the environment that leaves no bfloat16 instructions, as ``NAME=value``
    (e.g. ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), or ``None`` where none is set."""
    for name, without_bf16 in _LIMITS:
        value = os.environ.get(name, "").strip()
        if value.upper() in without_bf16:
            return f"{name}={value}"
    return None


def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU has bfloat16 instructions: AVX512_BF16 or AMX on x86 (torch's CPU feature probes), ARM's
    BF16 extension elsewhere."""
    import torch

    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # off x86 it checks the BF16 extension itself


def native_bf16() -> bool:
    """Whether to compute bfloat16 on this CPU: it has bfloat16 instructions and no limit in the environment
    holds the kernels below them."""
    return bf16_isa_limit() is None and cpu_has_bf16_instructions()
