"""The one interface every stage has: ``run(model, StageRun) -> (model, steps)``. A stage gets the model to train
and the run's prepared data, works (and checkpoints) in its own folder, logs through the run's log, leaves its
model in ``folder/model`` and returns it with the step it ended at (the trainer's global step; for the sampled
stages the rounds); :mod:`.trainer` orders the stages and owns resuming them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .prepare import Prepared
from .validation import RunLog, Validator, report


@dataclass
class StageRun:
    """What a stage gets: the config, the prepared data, the tokenizer, its folder (checkpoints and its saved
    model), the run's log and validator, its name in the log (``2-distil``), where the model it starts from is
    saved (the previous stage's ``model`` folder; ``None``: the config's model), a GRPO checkpoint to resume from
    (``--resume DIR``), and extra trainer callbacks."""

    config: TrainConfig
    data: Prepared
    tokenizer: Any
    folder: Path
    log: RunLog
    validator: Validator | None
    name: str
    start: Path | None = None
    checkpoint: str | None = None
    max_steps: int | None = None
    callbacks: list[Any] = field(default_factory=list)

    def validate(self, step: int, model: Any, stats: dict[str, float] | None = None) -> None:
        """Validate ``model`` (every process its share) and log the results with ``stats`` at ``step``."""
        results = dict(stats or {})
        if self.validator is not None:
            results.update(self.validator(model))
        report(self.name, step, self.log, results)

    def short(self, question: str) -> str:
        """``question`` as the model sees it."""
        return self.data.short(question, self.tokenizer)


Stage = Callable[[Any, StageRun], tuple[Any, int]]
