"""The supervised stages: fixed targets, TRL's ``SFTTrainer``, validation before, every
``validation.every_steps`` steps and after.

- ``keyterms``: each training question's key terms (:mod:`.key_terms`), a warm start that teaches which words of a
  question find its answer;
- ``distil``: a teacher's reasoning shaped for the student (:mod:`.teachers`), which adds what the question
  does not name.
"""

from __future__ import annotations

import logging
from typing import Any

from .fine_tuning import fine_tune
from .key_terms import key_term_rows
from .stage import StageRun
from .teachers import TargetMaker, distil_rows
from .validation import validation_callback

log = logging.getLogger(__name__)


def run_keyterms(model: Any, run: StageRun) -> tuple[Any, int]:
    """SFT on each training question's key terms; returns the model and the trainer's step."""
    config, train = run.config, run.data.train
    rows = key_term_rows(
        train, [run.short(ex.question) for ex in train], run.data.template, run.data.corpus, config.keyterms.terms
    )
    log.info("key terms: %d of %d training questions have some", len(rows), len(train))
    return _fine_tune(model, run, rows, config.keyterms.sft, {"keyterms/examples": len(rows)})


def run_distil(model: Any, run: StageRun) -> tuple[Any, int]:
    """SFT on the teachers' reasoning, shaped and filtered (``distil:``); returns the model and the trainer's step."""
    config, data = run.config, run.data
    settings = config.distil
    maker = TargetMaker(
        settings.target,
        corpus=data.corpus,
        pools=data.pools,
        mode=settings.mode or config.mode,
        question_terms=settings.question_terms,
        teacher_terms=settings.teacher_terms,
        max_words=settings.max_words,
    )
    rows, stats = distil_rows(
        data.train,
        [run.short(ex.question) for ex in data.train],
        config.teacher_files(),
        maker,
        data.template,
        filter_gain=settings.filter == "gain",
    )
    return _fine_tune(model, run, rows, settings.sft, stats)


def _fine_tune(
    model: Any, run: StageRun, rows: list[dict[str, Any]], options: dict[str, Any], stats: dict[str, float]
) -> tuple[Any, int]:
    if not rows:
        raise ValueError(f"{run.name}: no training targets")
    run.log.write(run.name, 0, stats)
    callback = validation_callback(run.name, run.log, run.validator, run.config.validation.every_steps)
    model, trained = fine_tune(
        model,
        run.tokenizer,
        rows,
        "sft",
        options,
        run.folder,
        run.config.lora_config(),
        where=f"{run.name.split('-', 1)[-1]}.sft",
        callbacks=[callback, *run.callbacks],
    )
    steps = int(trained["steps"])
    run.log.write(run.name, steps, {"train_seconds": trained["train_seconds"]})
    return model, steps
