"""Rounds of sampling and scoring (expert iteration), a warm start that spends CPU where it pays.

Each round: pick ``rft.questions`` training questions (seeded, a new draw per round; with ``rft.questions_from:
hard`` only those whose answer the question alone does not already rank first), sample ``rft.samples``
completions for each with the project's batched backend (each sample its own seed, so samples differ and are
reproducible), and score them with the configured reward callables (weighted as in TRL). Then, by
``rft.objective``:

- ``sft`` (rejection-sampling fine-tuning): per question, the best completion if it beats the question by more
  than ``rft.margin`` becomes a target for TRL's ``SFTTrainer``;
- ``dpo`` (iterative preference optimisation): per question, the best completion is *chosen* and the worst
  *rejected* when their rewards differ by more than ``rft.margin``, for TRL's ``DPOTrainer``. Rejected texts
  teach the model what hurts, so questions the question alone already answers teach it to stay out of the way.

The policy is fine-tuned (a LoRA adapter through peft when ``lora:`` is set) and the next round samples from it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tongsearch_qr.generation import GenerationParams
from tongsearch_qr.prompts import PromptTemplate

from . import data as data_mod
from .config import TrainConfig
from .rewards import BM25Rank

log = logging.getLogger(__name__)


def weighted_rewards(rewards: Sequence[Any], weights: Sequence[float], completions: list[Any],
                     columns: dict[str, list[Any]]) -> list[float]:
    """The weighted sum of every reward for each completion (as TRL combines them with ``reward_weights``)."""
    totals = [0.0] * len(completions)
    for reward, weight in zip(rewards, weights):
        for i, value in enumerate(reward(completions, **columns)):
            totals[i] += weight * (value or 0.0)
    return totals


def hard_questions(examples: Sequence[data_mod.TrainingExample], ranker: BM25Rank) -> list[data_mod.TrainingExample]:
    """The examples whose question alone does not rank a positive first (the others leave nothing to gain)."""
    return [ex for ex in examples if ranker.score([ex.question], ex.question, ex.positives, ex.negatives)[0] < 1.0]


def sample_rows(model: Any, tokenizer: Any, examples: Sequence[data_mod.TrainingExample], template: PromptTemplate,
                config: TrainConfig, score: Callable[[list[Any], dict[str, list[Any]]], list[float]],
                seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The round's training rows (conversational, for the objective's TRL trainer) and its statistics."""
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    rft = config.rft
    backend = TransformersBackend.from_loaded(model, tokenizer, "rft", batch_size=rft.batch_size)
    short = [data_mod.truncate_question(ex.question, tokenizer, config.data.max_question_tokens) for ex in examples]
    columns = {"question": [ex.question for ex in examples], "positives": [ex.positives for ex in examples],
               "negatives": [ex.negatives for ex in examples]}
    padding_side, was_training = tokenizer.padding_side, model.training
    scored: list[list[tuple[float, str]]] = [[] for _ in examples]
    started = time.perf_counter()
    try:
        for j in range(rft.samples):
            params = GenerationParams(max_new_tokens=rft.max_new_tokens, seed=seed * 1000 + j)
            texts = backend.generate(short, template, params)
            values = score([[{"role": "assistant", "content": t}] for t in texts], columns)
            for found, value, text in zip(scored, values, texts):
                if text.strip():
                    found.append((value, text))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    rows = []
    for question, found in zip(short, scored):
        if not found:
            continue
        (best, chosen), (worst, rejected) = max(found), min(found)
        answer = {"role": "assistant", "content": chosen}
        if rft.objective == "sft" and best > rft.margin:
            rows.append({"prompt": template.messages(question), "completion": [answer]})
        elif rft.objective == "dpo" and best - worst > rft.margin and chosen != rejected:
            rows.append({"prompt": template.messages(question), "chosen": [answer],
                         "rejected": [{"role": "assistant", "content": rejected}]})
    stats = {"rft/questions": len(examples), "rft/kept": len(rows),
             "rft/mean_best_reward": sum(max(f)[0] for f in scored if f) / max(1, len(examples)),
             "rft/mean_reward": sum(v for f in scored for v, _ in f) / max(1, sum(map(len, scored))),
             "rft/sampling_seconds": time.perf_counter() - started,
             "rft/completions_per_second": len(examples) * rft.samples / max(1e-9, time.perf_counter() - started)}
    return rows, stats


def trainer_options(options: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Options of a TRL fine-tuning config (``SFTConfig`` / ``DPOConfig``): ``options`` over defaults for a small
    model on a CPU (no bf16 unless asked, no gradient checkpointing, which TRL turns on by default and which only
    recomputes activations a small model can keep, no checkpoints, no reporting)."""
    return {"output_dir": str(output_dir), "report_to": "none", "save_strategy": "no", "logging_steps": 5,
            "bf16": False, "gradient_checkpointing": False, **options}


def trl_classes(objective: str) -> tuple[Any, Any]:
    """TRL's (config class, trainer class) of an objective (``sft`` or ``dpo``)."""
    if objective == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def fine_tune(model: Any, tokenizer: Any, rows: list[dict[str, Any]], objective: str, options: dict[str, Any],
              output_dir: Path, peft_config: Any) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` on conversational ``rows`` with TRL's trainer of ``objective`` (a LoRA adapter through
    peft with ``peft_config``, unless the model already carries one), seeded by ``options["seed"]`` (TRL's default
    42); returns the model and time and loss."""
    from datasets import Dataset
    from transformers import set_seed

    config_class, trainer_class = trl_classes(objective)
    set_seed(int(options.get("seed", 42)))  # before the trainer wraps the model: a new LoRA adapter's init is seeded
    trainer = trainer_class(model=model, args=config_class(**trainer_options(options, output_dir)),
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            peft_config=None if hasattr(model, "peft_config") else peft_config)
    started = time.perf_counter()
    trainer.train()
    loss = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), float("nan"))
    return trainer.accelerator.unwrap_model(trainer.model), {"train_seconds": time.perf_counter() - started,
                                                            "train_loss": loss}


def run_rft(model: Any, tokenizer: Any, train: Sequence[data_mod.TrainingExample], template: PromptTemplate,
            config: TrainConfig, rewards: Sequence[Any], weights: Sequence[float], ranker: BM25Rank,
            output_dir: Path, on_round: Callable[[int, Any, dict[str, float]], None]) -> Any:
    """All rounds; returns the fine-tuned model (a peft model when ``lora:`` is set). ``on_round(round,
    model, stats)`` is called after each round (and with round 0 before the first) to validate and log."""
    rft = config.rft
    options = rft.trainer_options()
    candidates = hard_questions(train, ranker) if rft.questions_from == "hard" else list(train)
    log.info("RFT (%s): %d of %d training questions to sample from", rft.objective, len(candidates), len(train))
    on_round(0, model, {"rft/candidate_questions": len(candidates)})
    seed = int(options.get("seed", 0))
    for round_no in range(1, rft.rounds + 1):
        chosen = random.Random(seed + round_no).sample(candidates, min(rft.questions, len(candidates)))
        rows, stats = sample_rows(model, tokenizer, chosen, template, config,
                                  lambda c, cols: weighted_rewards(rewards, weights, c, cols), seed + round_no)
        log.info("RFT round %d: kept %d of %d questions", round_no, len(rows), len(chosen))
        if rows:
            model, trained = fine_tune(model, tokenizer, rows, rft.objective, options,
                                       output_dir / f"rft-round-{round_no}", config.lora_config())
            stats.update({f"rft/{k}": v for k, v in trained.items()})
        on_round(round_no, model, stats)
    return model
