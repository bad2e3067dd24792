"""Training a query reasoner with TRL: data -> rewards -> the configured stages (``keyterms``: supervised warm
start; ``rft``: sampled rounds, SFT or DPO; ``grpo``: ``GRPOTrainer``), with validation before, during and after
training, CSV logs, checkpoints, resume, and a final model ``QRReasoner(path)`` loads."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError, ModelNotAvailableError
from tongsearch_qr.generation import GenerationParams
from tongsearch_qr.prompts import PromptTemplate

from . import data as data_mod
from .config import TrainConfig
from .rewards import BM25Rank, make_reward

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Train and validation examples (with negatives), the TRL datasets built from them, every positive
    (``corpus``) and the positives of the data the validation split was drawn from (``validation_corpus``)."""

    train: list[data_mod.TrainingExample]
    validation: list[data_mod.TrainingExample]
    train_dataset: Any
    validation_dataset: Any
    corpus: list[str]
    validation_corpus: list[str]


def build_examples(config: TrainConfig) -> list[data_mod.TrainingExample]:
    """The examples the config's data section names that are split into train and validation."""
    examples: list[data_mod.TrainingExample] = []
    if config.data.qa_jsonl:
        examples += data_mod.from_qa_jsonl(config.qa_files())
    if config.data.mapping:
        examples += data_mod.from_mapping(config.path(config.data.mapping))
    if config.data.preferences is not None:
        examples += data_mod.from_stack_exchange_preferences(**config.data.preferences)
    return data_mod.check_examples(examples, "training data")


def build_training_only(config: TrainConfig) -> list[data_mod.TrainingExample]:
    """The examples that only ever train (``data.bright``): validation stays on the split data."""
    if config.data.bright is None:
        return []
    return data_mod.from_bright(config.data.bright["tasks"], config.bright_source())


def prepare_data(config: TrainConfig, tokenizer: Any, template: PromptTemplate) -> PreparedData:
    """Build, split (deterministically), mine negatives for and format the config's data. Training-only
    examples join the training split (mixed in by the same hash order); their negatives come from every positive,
    while the split data's come from its own positives, so that validation is the same with or without them."""
    examples = build_examples(config)
    data_mod.mine_negatives(examples, config.data.negatives)
    train, validation = data_mod.split(examples, validation_size=config.data.validation_size)
    validation_corpus = list(dict.fromkeys(p for ex in [*train, *validation] for p in ex.positives))
    extra = build_training_only(config)
    corpus = list(dict.fromkeys([*validation_corpus, *(p for ex in extra for p in ex.positives)]))
    if extra:
        data_mod.mine_negatives(extra, config.data.negatives, corpus=corpus)
        train = data_mod.split(train + extra, validation_size=0)[0]
    if config.data.limit:
        train = train[: config.data.limit]
    to_dataset = data_mod.to_grpo_dataset
    return PreparedData(train, validation, to_dataset(train, template, tokenizer, config.data.max_question_tokens),
                        to_dataset(validation, template, tokenizer, config.data.max_question_tokens)
                        if validation else None, corpus, validation_corpus)


def build_rewards(config: TrainConfig, corpus: list[str] | None = None) -> tuple[list[Any], list[float]]:
    """The reward callables and their weights (``rewards: [{name, weight, options}]``); a ``bm25_rank`` with
    ``pool: corpus`` ranks over ``corpus`` (every answer of the data) instead of each question's pool."""
    funcs, weights = [], []
    for spec in config.rewards:
        options = dict(spec.get("options") or {})
        if spec["name"] in ("embedding_advantage", "bm25_rank"):
            options.setdefault("think", config.think)
            options.setdefault("keywords", config.template().keywords)
        if spec["name"] == "bm25_rank":
            pool = options.pop("pool", "question")
            if pool not in ("question", "corpus"):
                raise InputFormatError(f"bm25_rank: pool must be 'question' or 'corpus', got {pool!r}")
            if pool == "corpus":
                options["corpus"] = corpus
        funcs.append(make_reward(spec["name"], **options))
        weights.append(float(spec.get("weight", 1.0)))
    return funcs, weights


class CSVLog:
    """Appends ``step, name, value`` rows to ``<output_dir>/log.csv`` (and prints validation results)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, values: dict[str, Any]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "name", "value"])
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    writer.writerow([step, name, value])


class Validator:
    """Reasoning for the validation questions with the model being trained, greedy and (per
    ``validation.sampling_seeds``) sampled; reports each reward's mean (and the weighted total) and BM25
    nDCG@10 of the positives in each question's pool, per mode, next to the original question's nDCG@10.
    Sampled scores are means over the seeds, named ``.../sampled``; the training RNG is left untouched."""

    def __init__(self, config: TrainConfig, examples: list[data_mod.TrainingExample], rewards: list[Any],
                 weights: list[float], template: PromptTemplate, tokenizer: Any, corpus: list[str] | None = None):
        self.config, self.examples, self.rewards, self.weights = config, examples, rewards, weights
        self.shortened = [data_mod.truncate_question(ex.question, tokenizer, config.data.max_question_tokens)
                          for ex in examples]
        self.template = template
        tokens = config.validation.max_new_tokens
        self.greedy = GenerationParams.greedy(tokens)
        self.sampled = [GenerationParams(max_new_tokens=tokens, seed=seed) for seed in config.validation.sampling_seeds]
        self.rankers = {mode: BM25Rank(mode=mode, metric="ndcg", gain=False, think=config.think, corpus=corpus)
                        for mode in config.validation.modes}

    def __call__(self, model: Any, tokenizer: Any) -> dict[str, float]:
        import torch

        from tongsearch_qr.backends.transformers_backend import TransformersBackend

        was_training = model.training
        backend = TransformersBackend.from_loaded(model, tokenizer, "training",
                                                  batch_size=self.config.validation.batch_size)
        padding_side = tokenizer.padding_side
        try:
            results = self._score(backend.generate(self.shortened, self.template, self.greedy), "")
            runs = []
            for params in self.sampled:
                with torch.random.fork_rng():
                    runs.append(self._score(backend.generate(self.shortened, self.template, params), "/sampled"))
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)
        for key in runs[0] if runs else ():
            results[key] = sum(run[key] for run in runs) / len(runs)
        questions = [ex.question for ex in self.examples]
        results["val/ndcg@10/original"] = self._mean_ndcg(next(iter(self.rankers.values())), questions)
        return results

    def _score(self, completions: list[str], suffix: str) -> dict[str, float]:
        columns = {"question": [ex.question for ex in self.examples],
                   "positives": [ex.positives for ex in self.examples],
                   "negatives": [ex.negatives for ex in self.examples]}
        results: dict[str, float] = {}
        total = 0.0
        for reward, weight in zip(self.rewards, self.weights):
            mean = sum(reward(completions, **columns)) / len(completions)
            results[f"val/reward/{reward.__name__}{suffix}"] = mean
            total += weight * mean
        results[f"val/reward{suffix}"] = total
        for mode, ranker in self.rankers.items():
            reasoning = [ranker.mode.apply(q, self.template.extract(c)) for q, c in zip(columns["question"], completions)]
            results[f"val/ndcg@10/{mode}{suffix}"] = self._mean_ndcg(ranker, reasoning)
        return results

    def _mean_ndcg(self, ranker: BM25Rank, queries: list[str]) -> float:
        scores = [ranker.score([query], ex.question, ex.positives, ex.negatives)[0]
                  for query, ex in zip(queries, self.examples)]
        return sum(scores) / len(scores)


def validation_logger(csv_log: CSVLog, validator: Validator | None, tokenizer: Any, every_steps: int) -> Any:
    """A ``TrainerCallback`` that writes the trainer's logs to ``log.csv`` and validates before training,
    every ``every_steps`` steps and at the end. Only the main process (``is_world_process_zero``) logs and
    validates: under ``accelerate launch`` the other processes write nothing."""
    from transformers import TrainerCallback

    class _ValidationLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                csv_log.write(state.global_step, logs or {})

        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self._validate(state, kwargs["model"])

        def on_step_end(self, args, state, control, **kwargs):
            if every_steps and state.global_step % every_steps == 0 and state.global_step < state.max_steps:
                self._validate(state, kwargs["model"])

        def on_train_end(self, args, state, control, **kwargs):
            self._validate(state, kwargs["model"])

        def _validate(self, state: Any, policy: Any) -> None:
            if validator is None or not state.is_world_process_zero:
                return
            results = validator(policy, tokenizer)
            csv_log.write(state.global_step, results)
            print(f"[validation step {state.global_step}] " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()),
                  flush=True)

    return _ValidationLogger()


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


def latest_checkpoint(output_dir: Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if found is None:
        raise InputFormatError(f"cannot resume: no checkpoint-* folder in {output_dir}")
    return found


def load_model(config: TrainConfig) -> tuple[Any, Any]:
    """The policy model (float32 unless ``grpo.bf16``) and its tokenizer, via the core's model resolution."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tongsearch_qr.models import load_pretrained, resolve_model

    source = resolve_model(config.model)
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config.grpo.get("bf16") else torch.float32
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, source, dtype=dtype)
    return model, tokenizer


def train(config: TrainConfig, *, resume: str | None = None, max_steps: int | None = None,
          callbacks: list[Any] | None = None) -> Path:
    """Run the config's stages (``rft`` then/or ``grpo``); returns the folder of the final model
    (``<output_dir>/final``: full weights, or a LoRA adapter with ``lora:``; ``QRReasoner(path)`` loads either,
    with the prompt and rewrite mode it was trained for).

    ``resume``: a GRPO checkpoint folder, or ``"latest"`` for the newest ``checkpoint-*`` in the output folder.
    ``max_steps`` overrides ``grpo.max_steps``. ``callbacks``: extra ``transformers.TrainerCallback`` objects.
    """
    from accelerate import PartialState

    output_dir = config.path(config.output_dir)
    overrides = {"max_steps": max_steps} if max_steps else {}
    grpo_config = config.grpo_config(**overrides) if "grpo" in config.stages else None
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(output_dir) if resume == "latest" else check_checkpoint(resume)
    template = config.template()
    model, tokenizer = load_model(config)
    prepared = prepare_data(config, tokenizer, template)
    corpus = prepared.corpus
    rewards, weights = build_rewards(config, corpus)
    main_process = PartialState().is_main_process  # under `accelerate launch`, only the main process writes
    csv_log = CSVLog(output_dir / "log.csv")
    if prepared.validation and main_process:  # so that `tongsearch-qr eval --dataset beir:<output_dir>/validation` scores it
        data_mod.write_beir(prepared.validation, output_dir / "validation")
    validator = (Validator(config, prepared.validation, rewards, weights, template, tokenizer,
                           prepared.validation_corpus if config.validation.pool == "corpus" else None)
                 if prepared.validation else None)
    log.info("%s: %d training questions, %d validation, rewards %s, output %s", "+".join(config.stages),
             len(prepared.train), len(prepared.validation), [r.__name__ for r in rewards], output_dir)
    logged = itertools.count()

    def report(stage: str, policy: Any, stats: dict[str, float]) -> None:
        """Validate ``policy`` and log ``stats`` beside the results (one log.csv step per report)."""
        if not main_process:
            return
        results = {**stats, **(validator(policy, tokenizer) if validator else {})}
        step = next(logged)
        csv_log.write(step, results)
        print(f"[{stage} {step}] " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()), flush=True)

    for stage in config.stages:
        if stage == "keyterms":
            model = _run_key_terms(model, tokenizer, prepared.train, corpus, template, config, output_dir, report)
        elif stage == "rft":
            from .rft import run_rft

            ranker = BM25Rank(mode="original", metric="rr", gain=False, corpus=corpus)
            model = run_rft(model, tokenizer, prepared.train, template, config, rewards, weights, ranker, output_dir,
                            lambda round_no, policy, stats: report(f"rft round {round_no}", policy, stats))
        else:
            model = _run_grpo(model, tokenizer, prepared, rewards, weights, grpo_config, csv_log, validator, config,
                              checkpoint, callbacks)
    final = output_dir / "final"
    if main_process:
        model.save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
        save_reasoner_settings(final, config)
        log.info("final model saved to %s (load it with QRReasoner(%r))", final, str(final))
    return final


def _run_key_terms(model: Any, tokenizer: Any, train: list[data_mod.TrainingExample], corpus: list[str],
                   template: PromptTemplate, config: TrainConfig, output_dir: Path,
                   report: Callable[[str, Any, dict[str, float]], None]) -> Any:
    """The supervised warm start on key terms (:mod:`.key_terms`), validated before and after."""
    from .key_terms import key_term_rows
    from .rft import fine_tune

    short = [data_mod.truncate_question(ex.question, tokenizer, config.data.max_question_tokens) for ex in train]
    rows = key_term_rows(train, short, template, corpus, config.keyterms.terms)
    log.info("key terms: %d of %d training questions have some", len(rows), len(train))
    report("keyterms", model, {"keyterms/examples": len(rows)})
    model, stats = fine_tune(model, tokenizer, rows, "sft", config.keyterms.sft, output_dir / "keyterms",
                             config.lora_config())
    report("keyterms", model, {f"keyterms/{k}": v for k, v in stats.items()})
    return model


def _run_grpo(model: Any, tokenizer: Any, prepared: PreparedData, rewards: list[Any], weights: list[float],
              grpo_config: Any, csv_log: CSVLog, validator: Validator | None, config: TrainConfig,
              checkpoint: str | None, callbacks: list[Any] | None) -> Any:
    from trl import GRPOTrainer

    grpo_config.reward_weights = weights
    logger = validation_logger(csv_log, validator, tokenizer, config.validation.every_steps)
    peft_config = None if hasattr(model, "peft_config") else config.lora_config()
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=grpo_config, train_dataset=prepared.train_dataset,
                          processing_class=tokenizer, callbacks=[logger, *(callbacks or [])], peft_config=peft_config)
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer.accelerator.unwrap_model(trainer.model)


def save_reasoner_settings(folder: Path, config: TrainConfig) -> None:
    """Write what ``QRReasoner(folder)`` needs beside the weights: the prompt and rewrite mode trained for, and,
    for a LoRA adapter, the base model spec (not the local path it was trained from)."""
    from tongsearch_qr.models import write_reasoner_settings

    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        settings = json.loads(adapter_config.read_text(encoding="utf-8"))
        settings["base_model_name_or_path"] = config.model
        adapter_config.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    last = config.stages[-1]
    length = {"keyterms": config.keyterms.max_new_tokens, "rft": config.rft.max_new_tokens,
              "grpo": config.grpo.get("max_completion_length")}[last]
    write_reasoner_settings(folder, config.template(), config.mode, length)


def dry_run(config: TrainConfig, *, sample_size: int = 4) -> dict[str, Any]:
    """Check a config without a model: the stages' TRL configs (GRPOConfig, SFTConfig) and peft's LoraConfig
    parse, the data builds, every reward runs on sample completions (each question's positive, and an empty
    one) and returns finite values."""
    import torch
    from transformers import AutoTokenizer

    notes: list[str] = []
    overrides: dict[str, Any] = {}
    if config.grpo.get("bf16") and not torch.cuda.is_available():  # TrainingArguments refuses bf16 without a GPU
        overrides["use_cpu"] = True
        notes.append("no GPU here: GRPOConfig checked with use_cpu=True (bf16 needs the GPU machine)")
    grpo_config = config.grpo_config(**overrides) if "grpo" in config.stages else None
    from .rft import trainer_options, trl_classes

    checked = [("keyterms.sft", "sft", config.keyterms.sft)] if "keyterms" in config.stages else []
    if "rft" in config.stages:
        objective = config.rft.objective
        checked.append((f"rft.{objective}", objective, config.rft.trainer_options()))
    for where, objective, options in checked:
        config_class = trl_classes(objective)[0]
        try:
            config_class(**trainer_options(options, config.path(config.output_dir)))
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"{where}: settings rejected by TRL's {config_class.__name__}: {exc}") from exc
    config.lora_config()
    examples = build_examples(config) + build_training_only(config)
    sample = examples[:sample_size]
    corpus = [p for ex in examples for p in ex.positives]
    data_mod.mine_negatives(sample, config.data.negatives, corpus=corpus)
    rewards, weights = build_rewards(config, corpus)
    completions = [[{"role": "assistant", "content": ex.positives[0][:1000]}] for ex in sample]
    completions.append([{"role": "assistant", "content": ""}])
    columns = {"question": [ex.question for ex in sample] + [sample[0].question],
               "positives": [ex.positives for ex in sample] + [sample[0].positives],
               "negatives": [ex.negatives for ex in sample] + [sample[0].negatives]}
    values = {}
    for reward in rewards:
        try:
            values[reward.__name__] = reward(completions, **columns)
        except ModelNotAvailableError as exc:  # e.g. the paper's bge embedder, offline: check the maths with the default
            inner = reward.inner
            notes.append(f"{reward.__name__}: {inner.model_spec!r} not available here ({str(exc)[:120]}); "
                         "ran with the offline default embedder instead")
            inner.model_spec, inner._model = None, None
            values[reward.__name__] = reward(completions, **columns)
    if any(not math.isfinite(v) for vals in values.values() for v in vals):
        raise ValueError(f"a reward returned a non-finite value: {values}")
    from tongsearch_qr.models import resolve_model

    source = resolve_model(config.model)
    tokenizer = None
    if source.local:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        data_mod.to_grpo_dataset(sample, config.template(), tokenizer, config.data.max_question_tokens)
    return {"stages": config.stages, "grpo_config": type(grpo_config).__name__ if grpo_config else None,
            "examples": len(examples), "rewards": values, "reward_weights": weights,
            "use_vllm": bool(grpo_config and grpo_config.use_vllm), "lora": config.lora is not None,
            "tokenizer_checked": tokenizer is not None, "notes": notes}
