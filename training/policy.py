"""The policy a run trains: loading it (the config's model, or a stage's saved model) and saving a stage's result."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import ranks
from .config import TrainConfig
from .precision import weights_dtype

#: where a stage (or a round of one) leaves its model
MODEL_DIR = "model"


def load_tokenizer(config: TrainConfig) -> Any:
    """The config's model's tokenizer (padding with EOS when it has no pad token)."""
    from transformers import AutoTokenizer

    from tongsearch_qr.models import load_pretrained, resolve_model

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, resolve_model(config.model_spec()))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(config: TrainConfig, folder: Path | None = None) -> tuple[Any, Any]:
    """The model to train and its tokenizer: the config's model, or, with ``folder``, a stage's saved model (a
    LoRA adapter over the config's model, trainable, or full weights)."""
    from transformers import AutoModelForCausalLM

    from tongsearch_qr.models import load_pretrained, resolve_model

    source = resolve_model(config.model_spec())
    tokenizer = load_tokenizer(config)
    dtype = weights_dtype(config.weights_dtype)
    if folder is not None and not (folder / "adapter_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype), tokenizer
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, source, dtype=dtype)
    if folder is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    return model, tokenizer


def trained_model(trainer: Any) -> Any:
    """The model ``trainer`` trained, unwrapped, without TRL's frozen copy of the adapter it started from (the
    ``ref`` adapter of DPO and of GRPO with ``beta`` > 0: the reference, not part of the result)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    return model


def save_model(model: Any, tokenizer: Any, folder: Path, trainer: Any | None = None) -> None:
    """Save a stage's model (the adapter with LoRA) and tokenizer to ``folder``: through ``trainer.save_model``
    when a trainer trained it (it gathers sharded weights under ZeRO-3/FSDP), else from the main process."""
    if trainer is not None:
        trainer.save_model(str(folder))
    elif ranks.is_main():
        model.save_pretrained(str(folder))
    if ranks.is_main():
        tokenizer.save_pretrained(str(folder))
    ranks.barrier()


def copy_model(source: Path, target: Path) -> None:
    """Copy a saved model folder (main process), replacing ``target``."""
    if ranks.is_main():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
    ranks.barrier()
