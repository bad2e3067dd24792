"""``backend="auto"`` (the default for local models): the fastest installed engine for this machine and model.

The choice is :func:`choose_engine`, a pure function of what the machine reports (:class:`MachineReport`: the
device torch finds, the CPU features llama.cpp's kernels use, or that llama-cpp-python is not installed, and
whether the CPU computes bfloat16 natively, :func:`~.cpu.native_bf16`) and of what the model is, so it is the
same on every call on one machine:

- a ``.gguf`` file: llama.cpp, the one engine that runs it;
- a CUDA device (``device="auto"`` with a GPU, or ``cuda[:N]``): transformers;
- no llama-cpp-python, or a model llama.cpp cannot run from the same weights (a hub id, an architecture other
  than the embedded model's): transformers;
- otherwise (a CPU): llama.cpp, whose batched decoding beat transformers on CPUs with native bfloat16 and without
  (``benchmarks/throughput.py``), with the weight type :func:`~.llamacpp_backend.weights_type_for` gives for its
  CPU (BF16 where native, else F16), or the precision ``dtype`` pins.

llama.cpp offloads layers to a GPU only for ``device="cuda[:N]"``, or ``auto`` on a machine with one (a GGUF
file there). The choice is logged once per model with the device the backend runs on, and kept on the backend
(``backend.choice``); ``eval`` writes both into ``reasoning.json``. The backend's ``cache_id`` names the engine and
weight type, so cached reasoning is never shared across engines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Backend

log = logging.getLogger(__name__)

#: options each engine takes; ``auto`` accepts them all and passes each engine its own
TRANSFORMERS_OPTIONS = frozenset({"device", "dtype", "batch_size", "max_batch_tokens", "step_overhead_tokens"})
LLAMACPP_OPTIONS = frozenset({"device", "parallel", "threads", "kv_cache_gib", "weights_type", "share_prefix"})


@dataclass(frozen=True)
class MachineReport:
    """What the machine reports: the torch ``device`` generation would use, the CPU features llama.cpp's kernels
    use (``None``: llama-cpp-python is not installed) and whether the CPU computes bfloat16 natively
    (``cpu_bf16``: :func:`~.cpu.native_bf16`, which honours an ISA limit set in the environment)."""

    device: str
    llamacpp_features: frozenset[str] | None
    cpu_bf16: bool

    @property
    def native_bf16(self) -> bool | None:
        """Whether llama.cpp computes bfloat16 natively here: the CPU does and llama.cpp's kernels use it
        (``None``: llama.cpp is not installed)."""
        from .llamacpp_backend import NATIVE_BF16_FEATURES

        if self.llamacpp_features is None:
            return None
        return self.cpu_bf16 and bool(self.llamacpp_features & NATIVE_BF16_FEATURES)


@dataclass(frozen=True)
class EngineChoice:
    """The engine ``auto`` picked (``transformers`` or ``llamacpp``), llama.cpp's weight type (``None``: the
    transformers backend's dtype rule, or a GGUF file's own weights) and why."""

    engine: str
    weights_type: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "weights_type": self.weights_type, "reason": self.reason}


_logged: set[tuple[str, EngineChoice]] = set()  # choices already logged, with their model


def _llamacpp_features() -> frozenset[str] | None:
    from .llamacpp_backend import installed_cpu_features

    return installed_cpu_features()


def machine_report(device: str = "auto") -> MachineReport:
    """This machine's :class:`MachineReport` for ``device`` (``auto``: CUDA when torch sees a GPU, else the CPU)."""
    from .cpu import native_bf16
    from .transformers_backend import pick_device

    return MachineReport(pick_device(device), _llamacpp_features(), native_bf16())


def llamacpp_problem(model: str | os.PathLike[str] | None) -> str | None:
    """Why llama.cpp cannot run ``model`` from the weights the transformers backend loads (``None``: it can)."""
    from ..gguf_export import export_problem
    from ..models import is_embedded, resolve_model

    if model is None or is_embedded(model):
        return None
    if not Path(os.fspath(model)).expanduser().is_dir():
        return f"llama.cpp runs local models only, and {os.fspath(model)!r} is not a local directory"
    return export_problem(Path(resolve_model(model).path))


def choose_engine(
    report: MachineReport, *, gguf_file: bool = False, model_problem: str | None = None, dtype: str = "auto"
) -> EngineChoice:
    """The engine for a model on a machine that reports ``report``: see the module's rule. ``gguf_file``: the
    model is a ``.gguf`` file; ``model_problem``: why llama.cpp cannot run it (:func:`llamacpp_problem`);
    ``dtype``: a pinned precision (``auto``: the machine's)."""
    from ..gguf_export import check_weights_type
    from .llamacpp_backend import weights_type_for

    if gguf_file:  # a pinned dtype is passed on, for the backend to refuse
        return EngineChoice("llamacpp", None if dtype == "auto" else check_weights_type(dtype), "a GGUF file runs on llama.cpp")
    if report.device.startswith("cuda"):
        return EngineChoice("transformers", None, f"device {report.device}")
    if report.llamacpp_features is None:
        return EngineChoice(
            "transformers",
            None,
            "llama-cpp-python is not installed (pip install 'tongsearch-qr[llamacpp]' for faster CPU reasoning)",
        )
    if model_problem:
        return EngineChoice("transformers", None, model_problem)
    if dtype != "auto":
        return EngineChoice("llamacpp", check_weights_type(dtype), f"CPU, dtype {dtype} pinned")
    kind = "native bf16" if report.native_bf16 else "no native bf16"
    return EngineChoice("llamacpp", weights_type_for(report.llamacpp_features, report.cpu_bf16), f"CPU with {kind}")


def make_auto_backend(model: str | os.PathLike[str] | None = None, **options: Any) -> Backend:
    """The backend :func:`choose_engine` picks for ``model`` on this machine, given the options of its engine
    (those of the other engine are left out); ``backend.choice`` records the :class:`EngineChoice`."""
    from ..gguf_export import is_gguf_file
    from . import make_backend

    unknown = set(options) - TRANSFORMERS_OPTIONS - LLAMACPP_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} for backend auto; it takes "
            f"{', '.join(sorted(TRANSFORMERS_OPTIONS | LLAMACPP_OPTIONS))}"
        )
    dtype = str(options.get("dtype", "auto"))
    if dtype != "auto" and options.get("weights_type"):
        raise ValueError("give dtype or weights_type, not both: each pins llama.cpp's weight type")
    gguf_file = is_gguf_file(model)
    report = machine_report(str(options.get("device", "auto")))
    problem = None if gguf_file or report.device.startswith("cuda") else llamacpp_problem(model)
    choice = choose_engine(report, gguf_file=gguf_file, model_problem=problem, dtype=str(options.get("weights_type") or dtype))
    if choice.engine == "llamacpp":
        chosen = {k: v for k, v in options.items() if k in LLAMACPP_OPTIONS} | {"weights_type": choice.weights_type}
    else:
        chosen = {k: v for k, v in options.items() if k in TRANSFORMERS_OPTIONS}
    backend = make_backend(choice.engine, model, **chosen)
    backend.choice = choice  # type: ignore[attr-defined]
    key = (str(model), choice)
    if key not in _logged:
        _logged.add(key)
        log.info(
            "backend auto: %s for %s on %s (%s)",
            choice.engine + (f" {choice.weights_type}" if choice.weights_type else ""),
            model or "the default model",
            getattr(backend, "device", report.device),
            choice.reason,
        )
    return backend


def engine_report(backend: Any) -> dict[str, Any]:
    """What generated a run's reasoning, for its outputs: the backend's ``cache_id`` (engine, model, weight type),
    the device it ran on where it reports one and, when ``auto`` chose it, the choice."""
    report: dict[str, Any] = {"cache_id": backend.cache_id}
    if getattr(backend, "device", None) is not None:
        report["device"] = str(backend.device)
    choice = getattr(backend, "choice", None)
    if choice is not None:
        report["auto"] = choice.as_dict()
    return report
