"""The sampled stages: rounds of sampling and scoring (expert iteration) from the policy being trained.

Each round: pick training questions (seeded, a new draw per round; ``questions_from: hard`` keeps those the
configured BM25 reward can score a gain on, see :func:`hard_questions`), sample completions for each with the
project's batched backend (each sample its own seed, so samples differ and are reproducible, and do not depend on
how questions are split across processes), score them with the configured rewards (weighted as in TRL), then:

- ``rft`` (rejection-sampling fine-tuning): per question, the best completion, if it beats the question by more
  than ``margin``, is a target for TRL's ``SFTTrainer``;
- ``dpo`` (iterative preference optimisation): per question, the best completion is *chosen* and the worst
  *rejected* when their rewards differ by more than ``margin``, for TRL's ``DPOTrainer``, against the policy as
  the round starts.

A round's samples are saved (``round-K/rows.jsonl``) before it trains, and its model (``round-K/model``) when it
is done, so a killed run resumes inside the round it was in. The next round samples from the improved policy.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.generation import GenerationParams

from . import ranks
from .config import SampledRoundsConfig
from .data import TrainingExample, reward_columns
from .fine_tuning import fine_tune
from .generation import generation_backend
from .policy import MODEL_DIR, copy_model, load_policy, save_model
from .rewards import BM25Rank
from .stage import StageRun

log = logging.getLogger(__name__)


def weighted_rewards(
    rewards: Sequence[Any], weights: Sequence[float], completions: list[Any], columns: dict[str, list[Any]]
) -> list[float]:
    """The weighted sum of every reward for each completion (as TRL combines them with ``reward_weights``)."""
    totals = [0.0] * len(completions)
    for reward, weight in zip(rewards, weights):
        for i, value in enumerate(reward(completions, **columns)):
            totals[i] += weight * (value or 0.0)
    return totals


def hard_questions(run: StageRun) -> list[TrainingExample]:
    """The training examples the configured BM25 reward (the first ``bm25_rank``) can score a gain on: those whose
    question alone does not already reach the best score (1) of its metric (reciprocal rank, or nDCG@10 over every
    positive) in the pool that reward ranks in (the question's own, every training answer, or its source's). The
    others leave nothing to gain."""
    ranker = next((reward.inner for reward in run.data.rewards if isinstance(getattr(reward, "inner", None), BM25Rank)), None)
    if ranker is None:
        raise InputFormatError("hard questions are judged by the bm25_rank reward, and the config has none")
    hard = [
        ex for ex in run.data.train if ranker.score([ex.question], ex.question, ex.positives, ex.negatives, ex.source)[0] < 1.0
    ]
    log.info("%s: %d of %d training questions are hard", run.name, len(hard), len(run.data.train))
    return hard


def sample_scored(
    model: Any, run: StageRun, examples: Sequence[TrainingExample], settings: SampledRoundsConfig, seed: int
) -> tuple[list[list[tuple[float, str]]], float]:
    """Per example, ``(reward, completion)`` of each non-empty sample, and the seconds it took. Every process
    samples its share of the examples; all get every result."""
    prepared = run.data
    started = time.perf_counter()

    def sample(shard: list[TrainingExample]) -> list[list[tuple[float, str]]]:
        if not shard:
            return []
        short = [run.short(ex.question) for ex in shard]
        columns = reward_columns(shard)
        scored: list[list[tuple[float, str]]] = [[] for _ in shard]
        with generation_backend(model, run.tokenizer, run.config.generation_dtype, settings.batch_size, "sampling") as backend:
            for j in range(settings.samples):
                params = GenerationParams(max_new_tokens=settings.max_new_tokens, seed=seed * 1000 + j)
                texts = backend.generate(short, prepared.template, params)
                values = weighted_rewards(
                    prepared.rewards, prepared.weights, [[{"role": "assistant", "content": t}] for t in texts], columns
                )
                for found, value, text in zip(scored, values, texts):
                    if text.strip():
                        found.append((value, text))
        return scored

    scored = ranks.map_sharded(list(examples), sample)
    return scored, time.perf_counter() - started


def rows_of(
    kind: str, run: StageRun, examples: Sequence[TrainingExample], scored: list[list[tuple[float, str]]], margin: float
) -> list[dict[str, Any]]:
    """The round's training rows (conversational) for ``kind`` (``rft``: best completion; ``dpo``: best and
    worst)."""
    template = run.data.template
    rows = []
    for ex, found in zip(examples, scored):
        if not found:
            continue
        (best, chosen), (worst, rejected) = max(found), min(found)
        prompt = template.messages(run.short(ex.question))
        answer = [{"role": "assistant", "content": chosen}]
        if kind == "rft" and best > margin:
            rows.append({"prompt": prompt, "completion": answer})
        elif kind == "dpo" and best - worst > margin and chosen != rejected:
            rows.append({"prompt": prompt, "chosen": answer, "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def _rounds(kind: str, objective: str, options_of: Callable[[Any], dict[str, Any]]) -> Callable[[Any, StageRun], tuple[Any, int]]:
    def run_rounds(model: Any, run: StageRun) -> tuple[Any, int]:
        settings = getattr(run.config, kind)
        options = options_of(settings)
        candidates = hard_questions(run) if settings.questions_from == "hard" else list(run.data.train)
        done = [r for r in range(1, settings.rounds + 1) if _round_done(run.folder, r)]
        if not done:
            run.validate(0, model, {f"{kind}/candidate_questions": len(candidates)})
        else:  # resumed: the last finished round's model
            model = load_policy(run.config, run.folder / f"round-{done[-1]}" / MODEL_DIR)[0]
        seed = int(options.get("seed", 0))
        for round_no in range(1, settings.rounds + 1):
            if round_no in done:
                continue
            folder = run.folder / f"round-{round_no}"
            chosen = random.Random(seed + round_no).sample(candidates, min(settings.questions, len(candidates)))
            rows, stats = _round_rows(kind, model, run, chosen, settings, seed + round_no, folder)
            log.info("%s round %d: kept %d of %d questions", run.name, round_no, len(rows), len(chosen))
            if rows:
                model, trained = fine_tune(
                    model, run.tokenizer, rows, objective, options, folder, run.config.lora_config(), where=f"{kind}.{objective}"
                )
                stats.update({f"{kind}/{k}": v for k, v in trained.items()})
            else:
                save_model(model, run.tokenizer, folder / MODEL_DIR)
            run.validate(round_no, model, stats)
            if ranks.is_main():
                (folder / "done.json").write_text(json.dumps({"round": round_no, "rows": len(rows)}), encoding="utf-8")
            ranks.barrier()
        copy_model(run.folder / f"round-{settings.rounds}" / MODEL_DIR, run.folder / MODEL_DIR)
        return model, settings.rounds

    run_rounds.__name__ = f"run_{kind}"
    run_rounds.__doc__ = f"The {kind} stage's rounds; returns the fine-tuned model and the rounds done."
    return run_rounds


def _round_done(folder: Path, round_no: int) -> bool:
    return (folder / f"round-{round_no}" / "done.json").is_file()


def _round_rows(
    kind: str, model: Any, run: StageRun, chosen: list[TrainingExample], settings: SampledRoundsConfig, seed: int, folder: Path
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The round's rows: read back when an earlier run sampled them, else sampled, scored and saved."""
    saved = folder / "rows.jsonl"
    if saved.is_file():
        lines = saved.read_text(encoding="utf-8").splitlines()
        stats = json.loads(lines[0])
        log.info("%s: samples of %s read back (%d rows)", run.name, folder.name, len(lines) - 1)
        return [json.loads(line) for line in lines[1:]], stats
    scored, seconds = sample_scored(model, run, chosen, settings, seed)
    rows = rows_of(kind, run, chosen, scored, settings.margin)
    found = [f for f in scored if f]
    stats = {
        f"{kind}/questions": len(chosen),
        f"{kind}/kept": len(rows),
        f"{kind}/mean_best_reward": sum(max(f)[0] for f in found) / max(1, len(chosen)),
        f"{kind}/mean_reward": sum(v for f in found for v, _ in f) / max(1, sum(map(len, found))),
        f"{kind}/sampling_seconds": seconds,
        f"{kind}/completions_per_second": len(chosen) * settings.samples / max(1e-9, seconds),
    }
    if ranks.is_main():
        folder.mkdir(parents=True, exist_ok=True)
        partial = saved.with_suffix(".partial")
        partial.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [stats, *rows]) + "\n", encoding="utf-8")
        partial.replace(saved)
    ranks.barrier()
    return rows, stats


run_rft = _rounds("rft", "sft", lambda settings: settings.sft)
run_dpo = _rounds("dpo", "dpo", lambda settings: settings.dpo)
