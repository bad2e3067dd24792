"""Fine-tuning on fixed rows with TRL's ``SFTTrainer`` / ``DPOTrainer`` (the supervised stages and the rounds of
the sampled ones)."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

from .checkpoints import last_checkpoint, train_from
from .policy import MODEL_DIR, save_model, trained_model
from .trl_configs import trl_classes, trl_config

log = logging.getLogger(__name__)


def fine_tune(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    objective: str,
    options: dict[str, Any],
    folder: Path,
    peft_config: Any,
    *,
    where: str,
    callbacks: list[Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` on conversational ``rows`` with TRL's trainer of ``objective`` in ``folder`` (a LoRA
    adapter through peft with ``peft_config``, unless the model already carries one), resuming from the
    newest checkpoint there (see :func:`~.checkpoints.train_from`); the result is saved to ``folder/model``.
    Seeded by ``options["seed"]`` (TRL's default 42). DPO's reference is the policy as it is now (a frozen copy
    of its adapter, which TRL makes for a model that carries one; a frozen copy of the weights for full
    fine-tuning). Returns the model and the time, the steps and (when it trained) the loss."""
    from datasets import Dataset
    from transformers import set_seed

    args = trl_config(objective, options, folder, where)
    trainer_class = trl_classes(objective)[1]
    set_seed(args.seed)  # before the trainer wraps the model: a new LoRA adapter's init is seeded
    extra: dict[str, Any] = {}
    if objective == "dpo" and peft_config is None and not hasattr(model, "peft_config"):
        extra["ref_model"] = copy.deepcopy(model).eval().requires_grad_(False)
    callbacks = list(callbacks or [])
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=None if hasattr(model, "peft_config") else peft_config,
        callbacks=callbacks,
        **extra,
    )
    started = time.perf_counter()
    resume = last_checkpoint(folder)
    if resume:
        log.info("%s: resuming from %s", where, resume)
    ran = train_from(trainer, resume, callbacks)
    trained = trained_model(trainer)
    save_model(trained, tokenizer, folder / MODEL_DIR, trainer if ran else None)
    stats = {"train_seconds": time.perf_counter() - started, "steps": trainer.state.global_step}
    loss = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None)
    if loss is not None:
        stats["train_loss"] = loss
    return trained, stats
