"""A stage's checkpoints: finding the newest usable one and training from it, or finishing from it when it is
already at the run's last step."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError

log = logging.getLogger(__name__)

STATE = "trainer_state.json"


def check_checkpoint(path: str | os.PathLike[str]) -> str:
    """A checkpoint directory the trainer can resume from, or a clear error."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputFormatError(f"cannot resume: checkpoint {folder} does not exist")
    state = folder / STATE
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"cannot resume: {folder} is not a usable checkpoint ({state.name}: {exc})") from exc
    if not any(
        (folder / name).is_file()
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
    ):
        raise InputFormatError(f"cannot resume: {folder} holds no model weights")
    return str(folder)


def last_checkpoint(folder: Path) -> str | None:
    """The newest usable ``checkpoint-N`` in ``folder`` (one cut short by a kill is skipped, with a warning)."""
    found = (
        sorted(
            (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
            reverse=True,
        )
        if folder.is_dir()
        else []
    )
    for candidate in found:
        try:
            return check_checkpoint(candidate)
        except InputFormatError as exc:
            log.warning("skipping %s: %s", candidate, exc)
    return None


def checkpoint_step(checkpoint: str) -> int:
    """The training step a checkpoint was saved at."""
    return int(_state(checkpoint)["global_step"])


def _state(checkpoint: str) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE).read_text(encoding="utf-8"))


def train_from(trainer: Any, checkpoint: str | None, callbacks: Sequence[Any]) -> bool:
    """``trainer.train()``, resuming from ``checkpoint`` when there is one; ``True``. A checkpoint already at the
    run's last step (``max_steps``, or the steps it counted for its epochs) is finished from instead: its weights
    and state are loaded into the (unwrapped) model and ``callbacks`` (the stage's own: the closing validation)
    see the end of training, with no training step (``trainer.train`` would take one more, step N+1, after a kill
    between the final checkpoint and the end of the stage); ``False``."""
    if checkpoint is None:
        trainer.train()
        return True
    state = _state(checkpoint)
    last = trainer.args.max_steps if trainer.args.max_steps > 0 else int(state.get("max_steps") or 0)
    if not last or int(state["global_step"]) < last:
        trainer.train(resume_from_checkpoint=checkpoint)
        return True
    from transformers import TrainerState

    log.info("%s is at the last step (%d): finishing from it without training", checkpoint, last)
    trainer._load_from_checkpoint(checkpoint)  # what trainer.train does first on a resume
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / STATE))
    for callback in callbacks:
        callback.on_train_end(
            trainer.args, trainer.state, trainer.control, model=trainer.model, processing_class=trainer.processing_class
        )
    return False
