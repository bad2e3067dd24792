"""Training configuration: one YAML file with the model, data, rewards, validation and TRL ``GRPOConfig``
settings (``grpo:`` is passed to ``GRPOConfig`` as is). Relative paths are read from the config file's folder,
except in the bundled configs (installed inside the package), where they are read from the current directory."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError

#: the bundled configs (``tongsearch-qr train --config cpu-tiny``)
BUNDLED_DIR = Path(__file__).resolve().parent / "configs"


STAGES = ("keyterms", "rft", "grpo")


@dataclass
class DataConfig:
    """Where the questions come from and how they are prepared."""

    qa_jsonl: list[str] = field(default_factory=list)  # globs of Q/A JSONL files
    mapping: str | None = None  # JSON question -> positive text(s)
    preferences: dict[str, Any] | None = None  # options of from_stack_exchange_preferences (hub)
    bright: dict[str, Any] | None = None  # {tasks: [...], source: dir | hub}: training only, never validation
    negatives: int = 30
    validation_size: int = 32
    max_question_tokens: int = 384
    limit: int | None = None  # first N training examples after the split (quick runs)


@dataclass
class ValidationConfig:
    """Periodic evaluation on the validation split: greedy reasoning, one per question, and optionally the
    paper's sampling once per seed in ``sampling_seeds`` (scores averaged over seeds, logged as ``.../sampled``)."""

    every_steps: int = 10
    max_new_tokens: int = 128
    modes: list[str] = field(default_factory=lambda: ["concat", "replace"])
    batch_size: int = 32
    sampling_seeds: list[int] = field(default_factory=list)
    pool: str = "question"  # rank among each question's pool, or "corpus": among every answer of the data


@dataclass
class RFTConfig:
    """Rounds of sampling and scoring (expert iteration): per round, ``samples`` completions for each of
    ``questions`` training questions (``questions_from``: ``hard``, those the question alone does not already
    answer best, or ``all``), scored by the rewards. ``objective: sft``: the best one that beats the question by
    more than ``margin`` becomes an SFT target (TRL ``SFTTrainer``, settings in ``sft`` passed to ``SFTConfig``
    as is); ``objective: dpo``: best (chosen) and worst (rejected) become a preference pair when their rewards
    differ by more than ``margin`` (TRL ``DPOTrainer``, settings in ``dpo`` passed to ``DPOConfig``)."""

    rounds: int = 2
    samples: int = 8
    questions: int = 300
    max_new_tokens: int = 48
    margin: float = 0.0
    batch_size: int = 64
    objective: str = "sft"
    questions_from: str = "hard"
    sft: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)

    def trainer_options(self) -> dict[str, Any]:
        """The options of the objective's TRL config (``sft`` or ``dpo``)."""
        return self.sft if self.objective == "sft" else self.dpo


@dataclass
class KeyTermsConfig:
    """The supervised warm start on key terms (see :mod:`tongsearch_qr.training.key_terms`): at most ``terms``
    per target, ``max_new_tokens`` the reasoning length the trained reasoner uses, ``sft`` passed to TRL's
    ``SFTConfig`` as is."""

    terms: int = 10
    max_new_tokens: int = 48
    sft: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``training/configs/*.yaml``."""

    model: str = "default"
    output_dir: str = "runs/grpo"
    think: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "bm25_rank"}])
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    grpo: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: ["grpo"])  # run in order: keyterms, rft, grpo
    keyterms: KeyTermsConfig = field(default_factory=KeyTermsConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    lora: dict[str, Any] | None = None  # peft LoraConfig options; None: full fine-tuning
    prompt: dict[str, Any] | None = None  # {user, system, keywords}: the reasoner's prompt (default: the paper's)
    mode: str = "concat"  # the rewrite mode the trained reasoner is meant for (written beside the model)
    base_dir: Path = field(default_factory=Path.cwd)

    def template(self) -> Any:
        """The prompt the reasoner is trained (and used) with."""
        from tongsearch_qr.prompts import PromptTemplate

        if self.prompt is None:
            return PromptTemplate.paper(think=self.think)
        return PromptTemplate(user=self.prompt["user"], system=self.prompt.get("system"), think=self.think,
                              keywords=self.prompt.get("keywords", False))

    def lora_config(self) -> Any:
        """peft ``LoraConfig`` from ``lora:`` (``None`` without one)."""
        if self.lora is None:
            return None
        from peft import LoraConfig

        try:
            return LoraConfig(task_type="CAUSAL_LM", **self.lora)
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"lora: settings rejected by peft's LoraConfig: {exc}") from exc

    def path(self, value: str) -> Path:
        """``value`` (with ``~`` and ``$VARS`` expanded) relative to ``base_dir``."""
        expanded = Path(os.path.expandvars(os.path.expanduser(value)))
        return expanded if expanded.is_absolute() else Path(os.path.normpath(self.base_dir / expanded))

    def qa_files(self) -> list[Path]:
        """The Q/A JSONL files the globs name (each glob must match something)."""
        files: list[Path] = []
        for pattern in self.data.qa_jsonl:
            matched = sorted(glob.glob(str(self.path(pattern))))
            if not matched:
                raise InputFormatError(f"data.qa_jsonl: {pattern!r} matches no file (looked in {self.base_dir})")
            files += map(Path, matched)
        return files

    def bright_source(self) -> str | Path | None:
        """Where ``data.bright`` is read from: a local folder (relative to ``base_dir``) or ``None`` (the hub)."""
        source = (self.data.bright or {}).get("source", "hub")
        return None if source == "hub" else self.path(source)

    def grpo_config(self, **overrides: Any) -> Any:
        """TRL ``GRPOConfig`` from ``grpo:`` (output_dir from the config unless given there)."""
        from trl import GRPOConfig

        options = {"output_dir": str(self.path(self.output_dir)), **self.grpo, **overrides}
        try:
            return GRPOConfig(**options)
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"grpo: settings rejected by TRL's GRPOConfig: {exc}") from exc


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML training config; unknown keys are errors. ``overrides`` replace top-level keys."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise InputFormatError(f"training config {file} does not exist")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputFormatError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputFormatError(f"{file}: expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        data = DataConfig(**(raw.pop("data", None) or {}))
        validation = ValidationConfig(**(raw.pop("validation", None) or {}))
        rft = RFTConfig(**(raw.pop("rft", None) or {}))
        keyterms = KeyTermsConfig(**(raw.pop("keyterms", None) or {}))
        folder = file.resolve().parent
        base_dir = Path.cwd() if folder == BUNDLED_DIR else folder
        config = TrainConfig(**raw, data=data, validation=validation, rft=rft, keyterms=keyterms, base_dir=base_dir)
    except TypeError as exc:
        raise InputFormatError(f"{file}: {exc}") from exc
    if not (config.data.qa_jsonl or config.data.mapping or config.data.preferences):
        raise InputFormatError(f"{file}: data needs qa_jsonl, mapping or preferences")
    bright = config.data.bright
    if bright is not None and (not isinstance(bright, dict) or set(bright) - {"tasks", "source"}
                               or not isinstance(bright.get("tasks"), list) or not bright["tasks"]
                               or not all(isinstance(t, str) for t in bright["tasks"])
                               or not isinstance(bright.get("source", "hub"), str)):
        raise InputFormatError(f"{file}: data.bright takes tasks (a list of BRIGHT StackExchange tasks) and source "
                               f"(a folder or 'hub'); got {bright!r}")
    seeds = config.validation.sampling_seeds
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise InputFormatError(f"{file}: validation.sampling_seeds must be a list of integers (got {seeds!r})")
    for reward in config.rewards:
        if not isinstance(reward, dict) or "name" not in reward:
            raise InputFormatError(f"{file}: each reward needs a name (got {reward!r})")
    unknown = [s for s in config.stages if s not in STAGES]
    if not config.stages or unknown:
        raise InputFormatError(f"{file}: stages must be a list of {', '.join(STAGES)} (got {config.stages!r})")
    if config.keyterms.terms < 1 or config.keyterms.max_new_tokens < 1:
        raise InputFormatError(f"{file}: keyterms terms and max_new_tokens must be >= 1")
    if config.prompt is not None and (not isinstance(config.prompt, dict) or "{question}" not in str(config.prompt.get("user"))):
        raise InputFormatError(f"{file}: prompt needs a user text containing {{question}} (got {config.prompt!r})")
    if config.prompt is not None and (set(config.prompt) - {"user", "system", "keywords"}
                                      or not isinstance(config.prompt.get("keywords", False), bool)):
        raise InputFormatError(f"{file}: prompt takes user, system and keywords (true/false); got {config.prompt!r}")
    if config.rft.rounds < 1 or config.rft.samples < 1 or config.rft.questions < 1:
        raise InputFormatError(f"{file}: rft rounds, samples and questions must be >= 1")
    if config.rft.objective not in ("sft", "dpo") or config.rft.questions_from not in ("hard", "all"):
        raise InputFormatError(f"{file}: rft.objective must be sft or dpo and rft.questions_from hard or all "
                               f"(got {config.rft.objective!r}, {config.rft.questions_from!r})")
    from tongsearch_qr.modes import get_mode

    get_mode(config.mode)
    return config
