"""Training configuration: one YAML file with the model, data, rewards, validation and the settings of each stage
(``grpo:`` is passed to TRL's ``GRPOConfig`` as is; ``*.sft`` / ``dpo.dpo`` to ``SFTConfig`` / ``DPOConfig``).
Relative paths (and a local ``model:``) are read from the config file's folder, except in the bundled configs
(installed inside the package), where they are read from the current directory."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tongsearch_qr.errors import InputFormatError

#: the bundled configs (``tongsearch-qr train --config cpu-tiny``)
BUNDLED_DIR = Path(__file__).resolve().parent / "configs"

#: every stage, in the order a config may name them
STAGES = ("keyterms", "distil", "rft", "dpo", "grpo")
#: model specs that name the embedded models rather than a path or hub id
NAMED_MODELS = ("default", "base", "smollm2-base")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class DataConfig:
    """Where the questions come from and how they are prepared."""

    qa_jsonl: list[str] = field(default_factory=list)  # globs of Q/A JSONL files
    mapping: str | None = None  # JSON question -> positive text(s)
    preferences: dict[str, Any] | None = None  # options of from_stack_exchange_preferences (hub)
    bright: dict[str, Any] | None = None  # {tasks: [...], source: dir | hub, validation_size: N}
    negatives: int = 30
    validation_size: int = 32
    max_question_tokens: int = 384
    limit: int | None = None  # first N training examples after the split (quick runs)


@dataclass
class ValidationConfig:
    """Periodic evaluation on the validation split: greedy reasoning, one per question, and optionally the
    paper's sampling once per seed in ``sampling_seeds`` (scores averaged over seeds, logged as ``.../sampled``).
    ``pool``: each question ranks among its own pool (``question``: positives + mined negatives), every positive
    of the split data (``corpus``), or every positive of its own source (``source``: its StackExchange site or
    BRIGHT task, as ``eval --dataset qa:FILE`` / ``bright-answers:TASK`` rank)."""

    every_steps: int = 10
    max_new_tokens: int = 128
    modes: list[str] = field(default_factory=lambda: ["concat", "replace"])
    batch_size: int = 32
    sampling_seeds: list[int] = field(default_factory=list)
    pool: str = "question"


@dataclass
class KeyTermsConfig:
    """The supervised warm start on key terms (:mod:`.key_terms`): at most ``terms`` per target,
    ``max_new_tokens`` the reasoning length the trained reasoner uses, ``sft`` passed to TRL's ``SFTConfig``."""

    terms: int = 10
    max_new_tokens: int = 48
    sft: dict[str, Any] = field(default_factory=dict)


@dataclass
class DistilConfig:
    """Distillation of teacher reasoning (:mod:`.teachers`): each file in ``teachers`` maps question texts to a
    teacher's reasoning (the paper's published JSON). ``target``: ``text`` (the teacher's sentences that help
    BM25 most, in their order, at most ``max_words`` words) or ``terms`` (the question's key terms, at most
    ``question_terms``, then the teacher's words that BM25 matches in the positives and the question lacks, at
    most ``teacher_terms``, rarest first). ``filter: gain`` keeps a teacher's target only where it does not lower
    the positive's rank among the question's source pool (``none``: keep all). Questions without a teacher text
    train on their key terms alone with ``target: terms`` (when ``question_terms`` > 0) and are skipped with
    ``text``. ``sft`` is passed to TRL's ``SFTConfig``."""

    teachers: list[str] = field(default_factory=list)
    target: str = "terms"
    question_terms: int = 10
    teacher_terms: int = 10
    max_words: int = 64
    filter: str = "gain"
    mode: str | None = None  # the mode the filter scores in (default: the config's mode)
    max_new_tokens: int = 64
    sft: dict[str, Any] = field(default_factory=dict)


@dataclass
class SampledRoundsConfig:
    """Rounds of sampling and scoring (expert iteration): per round, ``samples`` completions for each of
    ``questions`` training questions (``questions_from``: ``hard``, those the question alone does not already
    answer best, or ``all``), scored by the rewards."""

    rounds: int = 2
    samples: int = 8
    questions: int = 300
    max_new_tokens: int = 48
    margin: float = 0.0
    batch_size: int = 64
    questions_from: str = "hard"


@dataclass
class RFTConfig(SampledRoundsConfig):
    """Rejection-sampling fine-tuning: each question's best completion that beats the question by more than
    ``margin`` becomes a target for TRL's ``SFTTrainer`` (``sft`` passed to ``SFTConfig``)."""

    sft: dict[str, Any] = field(default_factory=dict)


@dataclass
class DPORoundsConfig(SampledRoundsConfig):
    """Iterative DPO: best (chosen) and worst (rejected) completion of a question form a pair when their rewards
    differ by more than ``margin``, for TRL's ``DPOTrainer`` (``dpo`` passed to ``DPOConfig``); each round's
    reference is the policy as that round starts."""

    questions_from: str = "all"
    dpo: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``training/configs/*.yaml``."""

    model: str = "default"
    output_dir: str = "runs/grpo"
    think: bool = False
    weights_dtype: str = "float32"  # the trained weights; bf16/fp16 compute comes from autocast (bf16: true)
    generation_dtype: str = "auto"  # validation and rft/dpo sampling: auto = what inference picks on this device
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "bm25_rank"}])
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    grpo: dict[str, Any] = field(default_factory=dict)
    #: the GRPO stage's questions: ``all``, or ``hard`` (those whose question alone does not already rank a positive
    #: first: the others give every completion the same gain reward, a group with no advantage to learn from)
    grpo_questions: str = "all"
    stages: list[str] = field(default_factory=lambda: ["grpo"])  # run in order
    keyterms: KeyTermsConfig = field(default_factory=KeyTermsConfig)
    distil: DistilConfig = field(default_factory=DistilConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    dpo: DPORoundsConfig = field(default_factory=DPORoundsConfig)
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

    def model_spec(self) -> str:
        """``model:`` as the core resolves it: the embedded names and hub ids as written, a local folder as an
        absolute path read from ``base_dir`` (so it resolves from anywhere, e.g. as an adapter's base)."""
        value = self.model
        if value in NAMED_MODELS:
            return value
        local = self.path(value)
        if local.exists() or not _HUB_ID.match(value):
            return str(local)
        return value

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

    def teacher_files(self) -> list[Path]:
        """The distillation stage's teacher files (each must exist)."""
        files = [self.path(p) for p in self.distil.teachers]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputFormatError(f"distil.teachers: no such file: {', '.join(missing)}")
        return files

    def grpo_config(self, **overrides: Any) -> Any:
        """TRL ``GRPOConfig`` from ``grpo:`` (output_dir from the config unless given there)."""
        from trl import GRPOConfig

        options = {"output_dir": str(self.path(self.output_dir)), **self.grpo, **overrides}
        from .tuning import checkpointing_option, machine_precision

        if not {"gradient_checkpointing", "activation_checkpointing"} & set(options):
            options[checkpointing_option()] = True  # TRL's default, under the name this transformers reads
        try:
            return GRPOConfig(**machine_precision(options))
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"grpo: settings rejected by TRL's GRPOConfig: {exc}") from exc

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """What a stage's result depends on besides earlier stages (its fingerprint in a run folder): the model,
        prompt, data and LoRA settings, the stage's own section and, for the stages that score samples, the
        rewards. Validation and logging settings are left out, and so is ``grpo.max_steps`` (a GRPO run may be
        continued to more steps)."""
        section: Any = {"keyterms": self.keyterms, "distil": self.distil, "rft": self.rft, "dpo": self.dpo,
                        "grpo": {k: v for k, v in self.grpo.items() if k not in _GRPO_UNFINGERPRINTED}}[stage]
        data = asdict(self.data)  # file paths as read, wherever the config file lies
        data["qa_jsonl"] = [str(self.path(p)) for p in self.data.qa_jsonl]
        data["mapping"] = str(self.path(self.data.mapping)) if self.data.mapping else None
        if self.data.bright is not None:
            data["bright"] = {**self.data.bright, "source": str(self.bright_source() or "hub")}
        section = asdict(section) if not isinstance(section, dict) else section
        if stage == "distil":
            section["teachers"] = [str(self.path(p)) for p in self.distil.teachers]
        prompt = self.prompt
        if prompt is not None and stage in ("keyterms", "distil"):  # how completions are read: not what SFT trains
            prompt = {k: v for k, v in prompt.items() if k != "keywords"}
        settings = {"model": self.model_spec(), "think": self.think, "weights_dtype": self.weights_dtype,
                    "data": data, "lora": self.lora, "prompt": prompt, "stage": stage, "section": section}
        if stage in ("rft", "dpo", "grpo"):
            settings["rewards"] = self.rewards
        if stage == "grpo" and self.grpo_questions != "all":
            settings["grpo_questions"] = self.grpo_questions
        if stage in ("rft", "dpo"):
            settings["generation_dtype"] = self.generation_dtype
        return settings


_GRPO_UNFINGERPRINTED = {"max_steps", "logging_steps", "save_steps", "save_total_limit", "report_to", "output_dir",
                         "logging_dir", "run_name"}


def fingerprint(settings: Any) -> str:
    """A short stable digest of JSON-able settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _section(cls: type, raw: dict[str, Any], key: str, file: Path) -> Any:
    value = raw.pop(key, None) or {}
    if not isinstance(value, dict):
        raise InputFormatError(f"{file}: {key} must be a mapping (got {value!r})")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if key == "rft" and "objective" in unknown:
        raise InputFormatError(f"{file}: rft.objective is gone: rejection sampling is stage rft (SFT on the best "
                               "samples), preference optimisation is stage dpo with its own dpo: section")
    if unknown:
        raise InputFormatError(f"{file}: unknown {key} settings {unknown}; known: {sorted(known)}")
    return cls(**value)


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
    sections = {key: _section(cls, raw, key, file) for key, cls in
                (("data", DataConfig), ("validation", ValidationConfig), ("keyterms", KeyTermsConfig),
                 ("distil", DistilConfig), ("rft", RFTConfig), ("dpo", DPORoundsConfig))}
    folder = file.resolve().parent
    try:
        config = TrainConfig(**raw, **sections, base_dir=Path.cwd() if folder == BUNDLED_DIR else folder)
    except TypeError as exc:
        raise InputFormatError(f"{file}: {exc}") from exc
    check(config, file)
    return config


def check(config: TrainConfig, file: Path) -> None:
    """Every setting's type and range, with errors that name the file and the setting."""
    data = config.data
    if not (data.qa_jsonl or data.mapping or data.preferences):
        raise InputFormatError(f"{file}: data needs qa_jsonl, mapping or preferences")
    bright = data.bright
    if bright is not None and (not isinstance(bright, dict) or set(bright) - {"tasks", "source", "validation_size"}
                               or not isinstance(bright.get("tasks"), list) or not bright["tasks"]
                               or not all(isinstance(t, str) for t in bright["tasks"])
                               or not isinstance(bright.get("source", "hub"), str)
                               or not _whole(bright.get("validation_size", 0))):
        raise InputFormatError(f"{file}: data.bright takes tasks (a list of BRIGHT StackExchange tasks), source "
                               f"(a folder or 'hub') and validation_size (a whole number); got {bright!r}")
    if bright is not None:
        from tongsearch_qr.data.bright import EVALUATION_ONLY_TASKS

        held = sorted(set(bright["tasks"]) & set(EVALUATION_ONLY_TASKS))
        if held:
            raise InputFormatError(f"{file}: data.bright: {held} are evaluation-only BRIGHT tasks: they may not "
                                   "train, validate or choose anything")
    seeds = config.validation.sampling_seeds
    if not isinstance(seeds, list) or not all(_whole(s) for s in seeds):
        raise InputFormatError(f"{file}: validation.sampling_seeds must be a list of integers (got {seeds!r})")
    if config.validation.pool not in ("question", "corpus", "source"):
        raise InputFormatError(f"{file}: validation.pool must be question, corpus or source "
                               f"(got {config.validation.pool!r})")
    for reward in config.rewards:
        if not isinstance(reward, dict) or "name" not in reward:
            raise InputFormatError(f"{file}: each reward needs a name (got {reward!r})")
    unknown = [s for s in config.stages if s not in STAGES]
    if not isinstance(config.stages, list) or not config.stages or unknown:
        raise InputFormatError(f"{file}: stages must be a list of {', '.join(STAGES)} (got {config.stages!r})")
    if len(set(config.stages)) != len(config.stages):
        raise InputFormatError(f"{file}: each stage may appear once in stages (got {config.stages!r})")
    if config.weights_dtype not in ("float32", "bfloat16", "float16"):
        raise InputFormatError(f"{file}: weights_dtype must be float32 (default; bf16: true trains in autocast), "
                               f"bfloat16 or float16 (pure low-precision weights), got {config.weights_dtype!r}")
    if config.generation_dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise InputFormatError(f"{file}: generation_dtype must be auto (what inference uses on this device), "
                               f"float32, bfloat16 or float16, got {config.generation_dtype!r}")
    if config.keyterms.terms < 1 or config.keyterms.max_new_tokens < 1:
        raise InputFormatError(f"{file}: keyterms terms and max_new_tokens must be >= 1")
    distil = config.distil
    if "distil" in config.stages:
        if not distil.teachers or not all(isinstance(t, str) for t in distil.teachers):
            raise InputFormatError(f"{file}: distil.teachers must list teacher files (question -> reasoning JSON)")
        if distil.target not in ("text", "terms") or distil.filter not in ("gain", "none"):
            raise InputFormatError(f"{file}: distil.target must be text or terms and distil.filter gain or none "
                                   f"(got {distil.target!r}, {distil.filter!r})")
        if min(distil.question_terms, distil.teacher_terms) < 0 or distil.max_words < 1 or distil.max_new_tokens < 1:
            raise InputFormatError(f"{file}: distil question_terms/teacher_terms must be >= 0, max_words and "
                                   "max_new_tokens >= 1")
    prompt = config.prompt
    if prompt is not None and (not isinstance(prompt, dict) or "{question}" not in str(prompt.get("user"))):
        raise InputFormatError(f"{file}: prompt needs a user text containing {{question}} (got {prompt!r})")
    if prompt is not None and (set(prompt) - {"user", "system", "keywords"}
                               or not isinstance(prompt.get("keywords", False), bool)):
        raise InputFormatError(f"{file}: prompt takes user, system and keywords (true/false); got {prompt!r}")
    for name in ("rft", "dpo"):
        rounds = getattr(config, name)
        if rounds.rounds < 1 or rounds.samples < 1 or rounds.questions < 1:
            raise InputFormatError(f"{file}: {name} rounds, samples and questions must be >= 1")
        if rounds.questions_from not in ("hard", "all"):
            raise InputFormatError(f"{file}: {name}.questions_from must be hard or all (got {rounds.questions_from!r})")
    if config.grpo_questions not in ("hard", "all"):
        raise InputFormatError(f"{file}: grpo_questions must be hard or all (got {config.grpo_questions!r})")
    if "dpo" in config.stages and config.dpo.samples < 2:
        raise InputFormatError(f"{file}: dpo.samples must be >= 2 (a pair needs two completions)")
    from tongsearch_qr.modes import get_mode

    for mode in [config.mode, *config.validation.modes, *([distil.mode] if distil.mode else [])]:
        try:
            get_mode(mode)
        except (ValueError, TypeError) as exc:
            raise InputFormatError(f"{file}: {exc}") from exc


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
