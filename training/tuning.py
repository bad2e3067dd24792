"""What the stages share around TRL's trainers: the policy's precision and loading, checkpoints to resume
from, fine-tuning with ``SFTTrainer`` / ``DPOTrainer``, and saving a stage's model."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError

from . import ranks
from .config import TrainConfig

log = logging.getLogger(__name__)

#: where a stage (or a round of one) leaves its model
MODEL_DIR = "model"


def weights_dtype(config: TrainConfig) -> Any:
    """The dtype the trained weights are held in: float32 (master weights; ``bf16: true`` in a stage's settings
    computes in bfloat16 through autocast) unless ``weights_dtype`` asks for pure low-precision weights."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.weights_dtype]
    if dtype != torch.float32:
        log.warning("weights_dtype %s: the optimizer updates %s weights directly, so small steps round away "
                    "(a 1e-6 step leaves most weights of magnitude 0.02 unchanged)", config.weights_dtype, dtype)
    return dtype


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
    dtype = weights_dtype(config)
    if folder is not None and not (folder / "adapter_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype), tokenizer
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, source, dtype=dtype)
    if folder is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    return model, tokenizer


@contextlib.contextmanager
def generation_model(model: Any, dtype: str = "auto") -> Iterator[Any]:
    """The model to generate with (validation, rft/dpo sampling): in ``dtype``, where ``auto`` is what inference
    would pick on this device (:func:`~tongsearch_qr.backends.transformers_backend.pick_dtype`), so validation
    measures the reasoner as it will run. On a CPU a copy in that dtype (a 135M model's copy costs less than
    generating in float32); on CUDA the model itself under autocast. The training model is left as it was."""
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


def check_checkpoint(path: str | os.PathLike[str]) -> str:
    """A checkpoint directory the trainer can resume from, or a clear error."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputFormatError(f"cannot resume: checkpoint {folder} does not exist")
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"cannot resume: {folder} is not a usable checkpoint ({state.name}: {exc})") from exc
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json",
                                                       "pytorch_model.bin", "adapter_model.safetensors")):
        raise InputFormatError(f"cannot resume: {folder} holds no model weights")
    return str(folder)


def last_checkpoint(folder: Path) -> str | None:
    """The newest usable ``checkpoint-N`` in ``folder`` (one cut short by a kill is skipped, with a warning)."""
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True) if folder.is_dir() else []
    for candidate in found:
        try:
            return check_checkpoint(candidate)
        except InputFormatError as exc:
            log.warning("skipping %s: %s", candidate, exc)
    return None


def checkpoint_step(checkpoint: str) -> int:
    """The training step a checkpoint was saved at."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def trainer_options(options: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Options of a TRL fine-tuning config (``SFTConfig`` / ``DPOConfig``): ``options`` over defaults for a small
    model on a CPU (no bf16 unless asked and computed natively, see :func:`machine_precision`; no gradient
    checkpointing, which TRL turns on by default and which only recomputes activations a small model can keep; a
    checkpoint every 25 steps to resume from; no reporting)."""
    defaults = {"output_dir": str(output_dir), "report_to": "none", "save_strategy": "steps", "save_steps": 25,
                "save_total_limit": 1, "logging_steps": 5, "bf16": False}
    if not {"gradient_checkpointing", "activation_checkpointing"} & set(options):
        defaults[checkpointing_option()] = False
    return machine_precision({**defaults, **options})


def machine_precision(options: dict[str, Any]) -> dict[str, Any]:
    """A trainer's ``options`` for this machine: ``bf16: true`` (bfloat16 autocast) is dropped, with a warning,
    where training runs on a CPU that computes bfloat16 only by emulation (no AVX512-BF16/AMX; the commoner
    kind): autocast there is several times slower than float32, which the weights are held in anyway. GPUs and
    CPUs with native bf16 keep what was asked."""
    import torch

    from tongsearch_qr.backends.transformers_backend import pick_dtype

    on_cpu = options.get("use_cpu") or not torch.cuda.is_available()
    if not options.get("bf16") or not on_cpu or pick_dtype("auto", "cpu") == torch.bfloat16:
        return options
    log.warning("bf16: true asked, but this CPU computes bfloat16 only by emulation (no avx512_bf16/AMX): training "
                "in float32 instead (faster here; a CPU with native bf16 trains in bfloat16 autocast)")
    return {**options, "bf16": False}


def checkpointing_option() -> str:
    """The name of the activation-checkpointing switch in this transformers (``gradient_checkpointing`` became
    ``activation_checkpointing``; setting the old name warns)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


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


def fine_tune(model: Any, tokenizer: Any, rows: list[dict[str, Any]], objective: str, options: dict[str, Any],
              folder: Path, peft_config: Any, *, where: str, callbacks: list[Any] | None = None) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` on conversational ``rows`` with TRL's trainer of ``objective`` in ``folder`` (a LoRA
    adapter through peft with ``peft_config``, unless the model already carries one), resuming from the
    newest checkpoint there; the result is saved to ``folder/model``. Seeded by ``options["seed"]`` (TRL's
    default 42). DPO's reference is the policy as it is now (a frozen copy of its adapter, which TRL makes for
    a model that carries one; a frozen copy of the weights for full fine-tuning). Returns the model and the
    time and loss."""
    from datasets import Dataset
    from transformers import set_seed

    args = trl_config(objective, options, folder, where)
    trainer_class = trl_classes(objective)[1]
    set_seed(args.seed)  # before the trainer wraps the model: a new LoRA adapter's init is seeded
    extra: dict[str, Any] = {}
    if objective == "dpo" and peft_config is None and not hasattr(model, "peft_config"):
        extra["ref_model"] = copy.deepcopy(model).eval().requires_grad_(False)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            peft_config=None if hasattr(model, "peft_config") else peft_config,
                            callbacks=callbacks or [], **extra)
    started = time.perf_counter()
    resume = last_checkpoint(folder)
    if resume:
        log.info("%s: resuming from %s", where, resume)
    trainer.train(resume_from_checkpoint=resume)
    loss = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), float("nan"))
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if objective == "dpo" and "ref" in getattr(trained, "peft_config", {}):
        trained.delete_adapter("ref")  # TRL's frozen copy of the policy's adapter: not part of the result
    save_model(trained, tokenizer, folder / MODEL_DIR, trainer)
    return trained, {"train_seconds": time.perf_counter() - started, "train_loss": loss,
                     "steps": trainer.state.global_step}


def save_model(model: Any, tokenizer: Any, folder: Path, trainer: Any | None = None) -> None:
    """Save a stage's model (the adapter with LoRA) and tokenizer to ``folder``: through ``trainer.save_model``
    when there is one (it gathers sharded weights under ZeRO-3/FSDP), else from the main process."""
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
