"""Training a query reasoner with TRL: the config's stages in order (``keyterms``, ``distil``: supervised;
``rft``, ``dpo``: sampled rounds; ``grpo``), each in its own folder ``<output_dir>/stages/<n>-<stage>``, and the
final model ``QRReasoner(path)`` loads.

Resuming is by stage: a finished stage leaves its model and a ``done.json`` marker (a fingerprint of the settings
it depends on, and the step it ended at); rerunning the same config skips finished stages, resumes the unfinished
one from its newest checkpoint (or round; a checkpoint at the stage's last step is finished from, without training)
and runs the rest. Settings changed under a finished or started stage are an error, not a silent retrain; settings
of how a run logs and checkpoints are not part of a stage's (``config.RUN_OPTIONS``). ``max_steps`` may grow a
finished GRPO stage: it continues from its last checkpoint."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError, ModelNotAvailableError

from . import ranks
from .checkpoints import check_checkpoint, checkpoint_step, last_checkpoint
from .config import TrainConfig, fingerprint
from .data import reward_columns, write_beir
from .grpo import run_grpo
from .policy import MODEL_DIR, copy_model, load_policy, load_tokenizer
from .prepare import prepare
from .sampled import run_dpo, run_rft
from .stage import Stage, StageRun
from .supervised import run_distil, run_keyterms
from .trl_configs import grpo_config, trl_config
from .validation import RunLog, Validator

log = logging.getLogger(__name__)

RUNNERS: dict[str, Stage] = {"keyterms": run_keyterms, "distil": run_distil, "rft": run_rft, "dpo": run_dpo, "grpo": run_grpo}
DONE, STARTED = "done.json", "stage.json"


@dataclass
class PlannedStage:
    """One stage of a run: its name in the log (``2-distil``), folder, fingerprint, and whether an earlier run
    finished it."""

    kind: str
    name: str
    folder: Path
    fingerprint: str
    done: bool


def stage_folders(config: TrainConfig, output_dir: Path) -> list[tuple[str, str, Path]]:
    """(kind, name in the log, folder) of each of the config's stages in ``output_dir``."""
    return [(kind, f"{n}-{kind}", output_dir / "stages" / f"{n}-{kind}") for n, kind in enumerate(config.stages, 1)]


def plan_stages(config: TrainConfig, output_dir: Path, max_steps: int | None = None) -> list[PlannedStage]:
    """The run's stages and which of them an earlier run in ``output_dir`` finished with the same settings.
    A stage whose settings (or an earlier stage's) changed since it finished or started is an error; a GRPO stage
    finished at fewer steps than now asked is continued; every stage after one that runs runs again."""
    planned: list[PlannedStage] = []
    upstream, running = "", False
    for kind, name, folder in stage_folders(config, output_dir):
        print_ = fingerprint({"settings": config.stage_settings(kind), "upstream": upstream})
        upstream = print_
        done = False
        if not running:
            recorded = _read(folder / DONE) or _read(folder / STARTED)
            if recorded and recorded.get("fingerprint") != print_:
                raise InputFormatError(
                    f"{folder} holds stage {name} of a run with other settings (of this stage or an earlier one); "
                    f"train into another --output-dir, or delete {folder} (and the stages after it) to retrain"
                )
            finished = _read(folder / DONE)
            done = finished is not None
            if done and kind == "grpo":
                wanted = max_steps or config.grpo.get("max_steps") or 0
                done = int(finished.get("steps", 0)) >= wanted
        running = running or not done
        planned.append(PlannedStage(kind, name, folder, print_, done))
    return planned


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"cannot read {path}: {exc}") from exc


def _resume_step(stage: PlannedStage) -> int:
    """Where a stage resumes: its newest checkpoint's step (SFT, GRPO) or finished round (rft, dpo)."""
    if stage.kind in ("rft", "dpo"):
        rounds = [int(p.parent.name.split("-")[1]) for p in stage.folder.glob(f"round-*/{DONE}")]
        return max(rounds, default=0)
    checkpoint = last_checkpoint(stage.folder)
    return checkpoint_step(checkpoint) if checkpoint else 0


def train(
    config: TrainConfig, *, resume: str | None = None, max_steps: int | None = None, callbacks: list[Any] | None = None
) -> Path:
    """Run the config's stages; returns the folder of the final model (``<output_dir>/final``: full weights, or
    a LoRA adapter with ``lora:``; ``QRReasoner(path)`` loads either, with the prompt and rewrite mode it was
    trained for). A rerun of the same config resumes (see the module docstring).

    ``resume``: ``"latest"`` asks for a resume (an error when there is nothing to resume), a checkpoint folder
    resumes the GRPO stage from it. ``max_steps`` overrides ``grpo.max_steps``. ``callbacks``: extra
    ``transformers.TrainerCallback`` objects for the trainers of the supervised and GRPO stages.
    """
    output_dir = config.path(config.output_dir)
    checkpoint = _explicit_checkpoint(config, output_dir, resume)
    stages = plan_stages(config, output_dir, max_steps)
    ranks.check_launch()
    check_trainer_settings(config, max_steps)  # a bad section fails before any model loads
    tokenizer = load_tokenizer(config)
    prepared = prepare(config, tokenizer)
    run_log = RunLog(output_dir / "log.csv")
    if prepared.validation and ranks.is_main():  # `tongsearch-qr eval --dataset beir:<output_dir>/validation`
        write_beir(prepared.validation, output_dir / "validation")
    validator = Validator(prepared, tokenizer) if prepared.validation else None
    log.info(
        "%s: %d training questions, %d validation, rewards %s, output %s",
        "+".join(config.stages),
        len(prepared.train),
        len(prepared.validation),
        [r.__name__ for r in prepared.rewards],
        output_dir,
    )

    model, previous = None, None
    for n, stage in enumerate(stages):
        if stage.done:
            log.info("stage %s: finished by an earlier run, skipped (%s)", stage.name, stage.folder / MODEL_DIR)
            previous = stage
            continue
        if model is None:
            model = load_policy(config, previous.folder / MODEL_DIR if previous else None)[0]
        later = [s.name for s in stages[n + 1 :]]
        if ranks.is_main():
            for other in stages[n + 1 :]:
                shutil.rmtree(other.folder, ignore_errors=True)  # stale work of a stage that now runs again
            (stage.folder / DONE).unlink(missing_ok=True)
            stage.folder.mkdir(parents=True, exist_ok=True)
            (stage.folder / STARTED).write_text(json.dumps({"fingerprint": stage.fingerprint}), encoding="utf-8")
            run_log.keep_until(stage.name, _resume_step(stage), later)
        ranks.barrier()
        run = StageRun(
            config,
            prepared,
            tokenizer,
            stage.folder,
            run_log,
            validator,
            stage.name,
            start=previous.folder / MODEL_DIR if previous else None,
            checkpoint=checkpoint if stage.kind == "grpo" else None,
            max_steps=max_steps if stage.kind == "grpo" else None,
            callbacks=list(callbacks or []),
        )
        model, steps = RUNNERS[stage.kind](model, run)
        if ranks.is_main():
            (stage.folder / DONE).write_text(json.dumps({"fingerprint": stage.fingerprint, "steps": steps}), encoding="utf-8")
        ranks.barrier()
        previous = stage
    final = output_dir / "final"
    copy_model(stages[-1].folder / MODEL_DIR, final)
    if ranks.is_main():
        tokenizer.save_pretrained(str(final))
        for stage in stages:  # every stage's model loads on its own too: QRReasoner(<stage folder>/model)
            save_reasoner_settings(stage.folder / MODEL_DIR, config, stage.kind)
        save_reasoner_settings(final, config)
        run_log.plot()
        log.info("final model saved to %s (load it with QRReasoner(%r))", final, str(final))
    ranks.barrier()
    return final


def _explicit_checkpoint(config: TrainConfig, output_dir: Path, resume: str | None) -> str | None:
    """``resume="latest"``: there must be something to resume; a folder: a GRPO checkpoint to resume from. (Checked
    before the stages are planned: planning reads the model.)"""
    if resume is None:
        return None
    if resume == "latest":
        folders = [folder for _, _, folder in stage_folders(config, output_dir)]
        if not any((f / DONE).is_file() or (f / STARTED).is_file() or last_checkpoint(f) for f in folders):
            raise InputFormatError(f"cannot resume: no finished stage and no checkpoint in {config.path(config.output_dir)}")
        return None
    if "grpo" not in config.stages:
        raise InputFormatError(
            f"--resume {resume}: a checkpoint folder resumes the grpo stage, which this config "
            "does not run (rerun without --resume: finished stages are skipped)"
        )
    return check_checkpoint(resume)


def check_trainer_settings(config: TrainConfig, max_steps: int | None = None, **grpo_overrides: Any) -> Any:
    """Every stage's TRL config (SFTConfig, DPOConfig, GRPOConfig) and peft's LoraConfig, built once to check
    them (clear errors naming the section); returns the GRPOConfig (or ``None``)."""
    output_dir = config.path(config.output_dir)
    for kind, objective, options in (
        ("keyterms", "sft", config.keyterms.sft),
        ("distil", "sft", config.distil.sft),
        ("rft", "sft", config.rft.sft),
        ("dpo", "dpo", config.dpo.dpo),
    ):
        if kind in config.stages:
            trl_config(objective, options, output_dir, f"{kind}.{objective}")
    config.lora_config()
    if "grpo" not in config.stages:
        return None
    return grpo_config(config, **({"max_steps": max_steps} if max_steps else {}), **grpo_overrides)


def save_reasoner_settings(folder: Path, config: TrainConfig, stage: str | None = None) -> None:
    """Write what ``QRReasoner(folder)`` needs beside the weights: the prompt and rewrite mode trained for, the
    reasoning length of ``stage`` (default: the last), and, for a LoRA adapter, the base model as a spec that
    resolves from anywhere (an embedded name, a hub id, or an absolute path; never the path it was trained from
    relative to some working directory)."""
    from tongsearch_qr.models import write_reasoner_settings

    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        settings = json.loads(adapter_config.read_text(encoding="utf-8"))
        settings["base_model_name_or_path"] = config.model_spec()
        adapter_config.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    last = stage or config.stages[-1]
    length = {
        "keyterms": config.keyterms.max_new_tokens,
        "distil": config.distil.max_new_tokens,
        "rft": config.rft.max_new_tokens,
        "dpo": config.dpo.max_new_tokens,
        "grpo": config.grpo.get("max_completion_length"),
    }[last]
    write_reasoner_settings(folder, config.template(), config.mode, length)


def dry_run(config: TrainConfig, *, sample_size: int = 4) -> dict[str, Any]:
    """Check a config without a model: every stage's TRL config (GRPOConfig, SFTConfig, DPOConfig) and peft's
    LoraConfig parse, the data builds (:func:`~.prepare.prepare`: split, negatives, pools; ``examples`` counts
    training and validation questions), teacher files match training questions, every reward runs on sample
    completions (each of the first ``sample_size`` training questions' positive, and an empty one) and returns
    finite values."""
    import torch

    notes: list[str] = []
    overrides: dict[str, Any] = {}
    if config.grpo.get("bf16") and not torch.cuda.is_available():  # TrainingArguments refuses bf16 without a GPU
        overrides["use_cpu"] = True
        notes.append("no GPU here: GRPOConfig checked with use_cpu=True (bf16 needs the GPU machine)")
    grpo_args = check_trainer_settings(config, **overrides)
    teachers = config.teacher_files() if "distil" in config.stages else []
    prepared = prepare(config)
    examples = [*prepared.train, *prepared.validation]
    if "distil" in config.stages:
        from .teachers import read_teacher

        known = set().union(*(read_teacher(path) for path in teachers))
        matched = sum(ex.question in known for ex in examples)
        if not matched:
            raise InputFormatError("distil: no training question has a teacher text")
        notes.append(f"distil: {matched} of {len(examples)} questions have a teacher text")
    sample = prepared.train[:sample_size]
    completions = [[{"role": "assistant", "content": ex.positives[0][:1000]}] for ex in sample]
    completions.append([{"role": "assistant", "content": ""}])
    columns = reward_columns([*sample, sample[0]])
    values = {}
    for reward in prepared.rewards:
        try:
            values[reward.__name__] = reward(completions, **columns)
        except ModelNotAvailableError as exc:  # e.g. the paper's bge embedder, offline: check the maths with the default
            inner = reward.inner
            notes.append(
                f"{reward.__name__}: {inner.model_spec!r} not available here ({str(exc)[:120]}); "
                "ran with the offline default embedder instead"
            )
            inner.model_spec, inner._model = None, None
            values[reward.__name__] = reward(completions, **columns)
    if any(not math.isfinite(v) for vals in values.values() for v in vals):
        raise ValueError(f"a reward returned a non-finite value: {values}")
    from tongsearch_qr.models import resolve_model

    source = resolve_model(config.model_spec())
    tokenizer = None
    if source.local:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source.path)
        prepared.prompt_dataset(sample, tokenizer)
    return {
        "stages": config.stages,
        "grpo_config": type(grpo_args).__name__ if grpo_args else None,
        "examples": len(examples),
        "rewards": values,
        "reward_weights": prepared.weights,
        "use_vllm": bool(grpo_args and grpo_args.use_vllm),
        "lora": config.lora is not None,
        "tokenizer_checked": tokenizer is not None,
        "notes": notes,
    }
