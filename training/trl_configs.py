"""TRL's configs from a training config's sections: ``SFTConfig`` / ``DPOConfig`` with defaults for a small model
on a CPU, ``GRPOConfig`` from ``grpo:`` as written; a setting TRL rejects is an error naming its section."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tongsearch_qr.errors import InputFormatError

from .precision import machine_precision

if TYPE_CHECKING:
    from .config import TrainConfig


def checkpointing_option() -> str:
    """The name of the activation-checkpointing switch in this transformers (``gradient_checkpointing`` became
    ``activation_checkpointing``; setting the old name warns)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _checkpointing_unset(options: dict[str, Any]) -> bool:
    return not {"gradient_checkpointing", "activation_checkpointing"} & set(options)


def trainer_options(options: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Options of a TRL fine-tuning config (``SFTConfig`` / ``DPOConfig``): ``options`` over defaults for a small
    model on a CPU (no bf16 unless asked and computed natively, see :func:`~.precision.machine_precision`; no
    gradient checkpointing, which TRL turns on by default and which only recomputes activations a small model can
    keep; a checkpoint every 25 steps to resume from; no reporting)."""
    defaults = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "save_strategy": "steps",
        "save_steps": 25,
        "save_total_limit": 1,
        "logging_steps": 5,
        "bf16": False,
    }
    if _checkpointing_unset(options):
        defaults[checkpointing_option()] = False
    return machine_precision({**defaults, **options})


def trl_classes(objective: str) -> tuple[Any, Any]:
    """TRL's (config class, trainer class) of an objective (``sft`` or ``dpo``)."""
    if objective == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def trl_config(objective: str, options: dict[str, Any], output_dir: Path, where: str) -> Any:
    """The objective's TRL config from ``options`` (a clear error naming ``where`` when TRL rejects them)."""
    config_class = trl_classes(objective)[0]
    try:
        return config_class(**trainer_options(options, output_dir))
    except (TypeError, ValueError) as exc:
        raise InputFormatError(f"{where}: settings rejected by TRL's {config_class.__name__}: {exc}") from exc


def grpo_config(config: TrainConfig, **overrides: Any) -> Any:
    """TRL ``GRPOConfig`` from ``grpo:`` (output_dir from the config unless given there; gradient checkpointing on,
    TRL's default, unless set; bf16 as :func:`~.precision.machine_precision` keeps it)."""
    from trl import GRPOConfig

    options = {"output_dir": str(config.path(config.output_dir)), **config.grpo, **overrides}
    if _checkpointing_unset(options):
        options[checkpointing_option()] = True  # TRL's default, under the name this transformers reads
    try:
        return GRPOConfig(**machine_precision(options))
    except (TypeError, ValueError) as exc:
        raise InputFormatError(f"grpo: settings rejected by TRL's GRPOConfig: {exc}") from exc
