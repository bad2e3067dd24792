"""Rejection-sampling fine-tuning (expert iteration), a warm start that spends CPU where it pays.

Each round: pick ``rft.questions`` training questions whose answer the question alone does not already rank
first (seeded, a new draw per round), sample ``rft.samples`` completions for each with the project's batched
backend (each sample its own seed, so samples differ and are reproducible), score them with the configured
reward callables (weighted as in TRL), and keep, per question, the best completion if it beats the question
by more than ``rft.margin``. TRL's ``SFTTrainer`` then fine-tunes the policy (a LoRA adapter through peft when
``lora:`` is set) on those prompt/completion pairs, and the next round samples from the improved policy.
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


def sample_best(model: Any, tokenizer: Any, examples: Sequence[data_mod.TrainingExample], template: PromptTemplate,
                config: TrainConfig, score: Callable[[list[Any], dict[str, list[Any]]], list[float]],
                seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """SFT rows (conversational prompt/completion) of the best sampled completion per question that beats the
    question by more than the margin, and statistics of the round."""
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    rft = config.rft
    backend = TransformersBackend.from_loaded(model, tokenizer, "rft", batch_size=rft.batch_size)
    short = [data_mod.truncate_question(ex.question, tokenizer, config.data.max_question_tokens) for ex in examples]
    columns = {"question": [ex.question for ex in examples], "positives": [ex.positives for ex in examples],
               "negatives": [ex.negatives for ex in examples]}
    padding_side, was_training = tokenizer.padding_side, model.training
    best: list[tuple[float, str]] = [(float("-inf"), "")] * len(examples)
    started = time.perf_counter()
    try:
        for j in range(rft.samples):
            params = GenerationParams(max_new_tokens=rft.max_new_tokens, seed=seed * 1000 + j)
            texts = backend.generate(short, template, params)
            values = score([[{"role": "assistant", "content": t}] for t in texts], columns)
            best = [max(b, (v, t)) for b, v, t in zip(best, values, texts)]
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    rows = [{"prompt": template.messages(q), "completion": [{"role": "assistant", "content": text}]}
            for q, (value, text) in zip(short, best) if value > rft.margin and text.strip()]
    stats = {"rft/questions": len(examples), "rft/kept": len(rows),
             "rft/mean_best_reward": sum(v for v, _ in best) / max(1, len(best)),
             "rft/sampling_seconds": time.perf_counter() - started,
             "rft/completions_per_second": len(examples) * rft.samples / max(1e-9, time.perf_counter() - started)}
    return rows, stats


def sft_options(config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """``SFTConfig`` options of a round: ``rft.sft`` over defaults for a small model on a CPU (no bf16 unless
    asked, no gradient checkpointing, which TRL turns on by default and which only recomputes activations a
    small model can keep, no checkpoints, no reporting)."""
    return {"output_dir": str(output_dir), "report_to": "none", "save_strategy": "no", "logging_steps": 5,
            "bf16": False, "gradient_checkpointing": False, **config.rft.sft}


def run_rft(model: Any, tokenizer: Any, train: Sequence[data_mod.TrainingExample], template: PromptTemplate,
            config: TrainConfig, rewards: Sequence[Any], weights: Sequence[float], ranker: BM25Rank,
            output_dir: Path, on_round: Callable[[int, Any, dict[str, float]], None]) -> Any:
    """All rounds; returns the fine-tuned model (a peft model when ``lora:`` is set). ``on_round(round,
    model, stats)`` is called after each round (and with round 0 before the first) to validate and log."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    candidates = hard_questions(train, ranker)
    log.info("RFT: %d of %d training questions leave room to gain", len(candidates), len(train))
    on_round(0, model, {"rft/hard_questions": len(candidates)})
    seed = int(config.rft.sft.get("seed", 0))
    peft_config = config.lora_config()
    for round_no in range(1, config.rft.rounds + 1):
        chosen = random.Random(seed + round_no).sample(candidates, min(config.rft.questions, len(candidates)))
        rows, stats = sample_best(model, tokenizer, chosen, template, config,
                                  lambda c, cols: weighted_rewards(rewards, weights, c, cols), seed + round_no)
        log.info("RFT round %d: kept %d of %d questions", round_no, len(rows), len(chosen))
        if rows:
            args = SFTConfig(**sft_options(config, output_dir / f"rft-round-{round_no}"))
            sft = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer,
                             peft_config=None if _is_peft(model) else peft_config)
            started = time.perf_counter()
            sft.train()
            stats["rft/sft_seconds"] = time.perf_counter() - started
            stats["rft/sft_loss"] = next((h["train_loss"] for h in reversed(sft.state.log_history)
                                          if "train_loss" in h), float("nan"))
            model = sft.model
        on_round(round_no, model, stats)
    return model


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")
