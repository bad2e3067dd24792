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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tongsearch_qr.data.bright import EVALUATION_ONLY_TASKS
from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.modes import get_mode, mode_names

#: the bundled configs (``tongsearch-qr train --config cpu-tiny``)
BUNDLED_DIR = Path(__file__).resolve().parent / "configs"

#: every stage, in the order a config may name them
STAGES = ("keyterms", "distil", "rft", "dpo", "grpo")
#: the pools a question may rank in (validation, rewards)
POOLS = ("question", "corpus", "source")
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
    answer best by the ``bm25_rank`` reward's metric in its pool, or ``all``), scored by the rewards."""

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
    #: the GRPO stage's questions: ``all``, or ``hard`` (those whose question alone does not already score the best
    #: the ``bm25_rank`` reward's metric gives in its pool: the others give every completion the same gain reward, a
    #: group with no advantage to learn from)
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
        return PromptTemplate(
            user=self.prompt["user"],
            system=self.prompt.get("system"),
            think=self.think,
            keywords=self.prompt.get("keywords", False),
        )

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

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """What a stage's result depends on besides earlier stages (its fingerprint in a run folder): the model (its
        content: :meth:`~tongsearch_qr.models.ModelSource.identity`), the prompt, the data (the content of its Q/A
        and mapping files), the LoRA settings, the stage's own section (its teacher files by content, the mode
        its filter scores in) and, for the stages that score samples, the rewards and, where it generates them,
        ``generation_dtype``. Left out: validation, the trainer options in :data:`RUN_OPTIONS` (how a run logs and
        checkpoints), and ``grpo.max_steps`` (a GRPO run may be continued to more steps)."""
        from tongsearch_qr.models import resolve_model

        if stage == "grpo":
            section = {k: v for k, v in self.grpo.items() if k not in RUN_OPTIONS | {"max_steps"}}
        else:
            sections = {"keyterms": self.keyterms, "distil": self.distil, "rft": self.rft, "dpo": self.dpo}
            section = asdict(sections[stage])
            trainer = "dpo" if stage == "dpo" else "sft"  # the section's TRL options
            section[trainer] = {k: v for k, v in section[trainer].items() if k not in RUN_OPTIONS}
        if stage == "distil":
            section["teachers"] = [file_digest(f) for f in self.teacher_files()]
            section["mode"] = self.distil.mode or self.mode
        data = asdict(self.data)
        data["qa_jsonl"] = [[f.parent.name, file_digest(f)] for f in self.qa_files()]  # (site: the questions' source)
        data["mapping"] = file_digest(self.path(self.data.mapping), "data.mapping") if self.data.mapping else None
        if self.data.bright is not None:
            data["bright"] = {**self.data.bright, "source": str(self.bright_source() or "hub")}
        prompt = self.prompt
        if prompt is not None and stage in ("keyterms", "distil"):  # how completions are read: not what SFT trains
            prompt = {k: v for k, v in prompt.items() if k != "keywords"}
        settings = {
            "model": resolve_model(self.model_spec()).identity(),
            "think": self.think,
            "weights_dtype": self.weights_dtype,
            "data": data,
            "lora": self.lora,
            "prompt": prompt,
            "stage": stage,
            "section": section,
        }
        if stage in ("rft", "dpo", "grpo"):
            settings["rewards"] = self.rewards
        if stage == "grpo" and self.grpo_questions != "all":
            settings["grpo_questions"] = self.grpo_questions
        if stage in ("rft", "dpo") or (stage == "grpo" and not self.grpo.get("use_vllm")):
            settings["generation_dtype"] = self.generation_dtype  # sampling, and GRPO's rollouts by transformers
        return settings


#: trainer options that change how a run logs and checkpoints, not what it trains: no stage's fingerprint holds them
RUN_OPTIONS = frozenset(
    {
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_dir",
        "log_level",
        "log_completions",
        "num_completions_to_print",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "report_to",
        "run_name",
        "output_dir",
        "disable_tqdm",
    }
)


def file_digest(path: Path, setting: str = "data") -> str:
    """The sha256 of a data file's content (:func:`~tongsearch_qr.file_hashes.hash_file_sha256`: read once while
    it stays the same), or an error naming ``setting`` when there is no such file."""
    from tongsearch_qr.file_hashes import hash_file_sha256

    if not path.is_file():
        raise InputFormatError(f"{setting}: no such file: {path}")
    return hash_file_sha256(path)


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
        raise InputFormatError(
            f"{file}: rft.objective is gone: rejection sampling is stage rft (SFT on the best "
            "samples), preference optimisation is stage dpo with its own dpo: section"
        )
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
    sections = {
        key: _section(cls, raw, key, file)
        for key, cls in (
            ("data", DataConfig),
            ("validation", ValidationConfig),
            ("keyterms", KeyTermsConfig),
            ("distil", DistilConfig),
            ("rft", RFTConfig),
            ("dpo", DPORoundsConfig),
        )
    }
    folder = file.resolve().parent
    try:
        config = TrainConfig(**raw, **sections, base_dir=Path.cwd() if folder == BUNDLED_DIR else folder)
    except TypeError as exc:
        raise InputFormatError(f"{file}: {exc}") from exc
    check(config, file)
    return config


def check(config: TrainConfig, file: Path) -> None:
    """Every setting's type and range (:data:`RULES`, in order), with errors that name the file and the setting."""
    for holds, message in RULES:
        if not holds(config):
            raise InputFormatError(f"{file}: " + message.format(c=config))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bright(bright: Any) -> bool:
    return (
        isinstance(bright, dict)
        and not set(bright) - {"tasks", "source", "validation_size"}
        and isinstance(bright.get("tasks"), list)
        and bool(bright["tasks"])
        and all(isinstance(t, str) for t in bright["tasks"])
        and isinstance(bright.get("source", "hub"), str)
        and _whole(bright.get("validation_size", 0))
    )


def _is_mode(name: Any) -> bool:
    try:
        get_mode(name)
    except (ValueError, TypeError):
        return False
    return True


def _judges_hardness(config: TrainConfig) -> bool:
    return ("grpo" in config.stages and config.grpo_questions == "hard") or any(
        name in config.stages and getattr(config, name).questions_from == "hard" for name in ("rft", "dpo")
    )


def _rounds_rules(name: str) -> tuple[Rule, ...]:
    return (
        (
            lambda c: min(getattr(c, name).rounds, getattr(c, name).samples, getattr(c, name).questions) >= 1,
            f"{name} rounds, samples and questions must be >= 1",
        ),
        (
            lambda c: getattr(c, name).questions_from in ("hard", "all"),
            f"{name}.questions_from must be hard or all (got {{c.{name}.questions_from!r}})",
        ),
    )


DTYPES = ("float32", "bfloat16", "float16")
Rule = tuple[Callable[[TrainConfig], bool], str]
#: every setting's rule: what must hold, and the error otherwise (formatted with the config as ``c``); checked in
#: order, so a rule may rely on those before it
RULES: tuple[Rule, ...] = (
    (lambda c: bool(c.data.qa_jsonl or c.data.mapping or c.data.preferences), "data needs qa_jsonl, mapping or preferences"),
    (
        lambda c: c.data.bright is None or _bright(c.data.bright),
        "data.bright takes tasks (a list of BRIGHT StackExchange tasks), source (a folder or 'hub') and validation_size "
        "(a whole number); got {c.data.bright!r}",
    ),
    (
        lambda c: c.data.bright is None or not set(c.data.bright["tasks"]) & set(EVALUATION_ONLY_TASKS),
        f"data.bright: {', '.join(EVALUATION_ONLY_TASKS)} are evaluation-only BRIGHT tasks: they may not train, "
        "validate or choose anything (got tasks {c.data.bright[tasks]!r})",
    ),
    (
        lambda c: isinstance(c.validation.sampling_seeds, list) and all(map(_whole, c.validation.sampling_seeds)),
        "validation.sampling_seeds must be a list of integers (got {c.validation.sampling_seeds!r})",
    ),
    (lambda c: c.validation.pool in POOLS, "validation.pool must be question, corpus or source (got {c.validation.pool!r})"),
    (lambda c: all(isinstance(r, dict) and "name" in r for r in c.rewards), "each reward needs a name (got {c.rewards!r})"),
    (
        lambda c: isinstance(c.stages, list) and bool(c.stages) and all(s in STAGES for s in c.stages),
        f"stages must be a list of {', '.join(STAGES)} (got {{c.stages!r}})",
    ),
    (lambda c: len(set(c.stages)) == len(c.stages), "each stage may appear once in stages (got {c.stages!r})"),
    (
        lambda c: c.weights_dtype in DTYPES,
        "weights_dtype must be float32 (default; bf16: true trains in autocast), bfloat16 or float16 (pure "
        "low-precision weights), got {c.weights_dtype!r}",
    ),
    (
        lambda c: c.generation_dtype in ("auto", *DTYPES),
        "generation_dtype must be auto (what inference uses on this device), float32, bfloat16 or float16, got "
        "{c.generation_dtype!r}",
    ),
    (lambda c: min(c.keyterms.terms, c.keyterms.max_new_tokens) >= 1, "keyterms terms and max_new_tokens must be >= 1"),
    (
        lambda c: "distil" not in c.stages or (bool(c.distil.teachers) and all(isinstance(t, str) for t in c.distil.teachers)),
        "distil.teachers must list teacher files (question -> reasoning JSON)",
    ),
    (
        lambda c: "distil" not in c.stages or (c.distil.target in ("text", "terms") and c.distil.filter in ("gain", "none")),
        "distil.target must be text or terms and distil.filter gain or none (got {c.distil.target!r}, {c.distil.filter!r})",
    ),
    (
        lambda c: (
            "distil" not in c.stages
            or (
                min(c.distil.question_terms, c.distil.teacher_terms) >= 0
                and min(c.distil.max_words, c.distil.max_new_tokens) >= 1
            )
        ),
        "distil question_terms/teacher_terms must be >= 0, max_words and max_new_tokens >= 1",
    ),
    (
        lambda c: c.prompt is None or (isinstance(c.prompt, dict) and "{question}" in str(c.prompt.get("user"))),
        "prompt needs a user text containing {{question}} (got {c.prompt!r})",
    ),
    (
        lambda c: (
            c.prompt is None
            or (not set(c.prompt) - {"user", "system", "keywords"} and isinstance(c.prompt.get("keywords", False), bool))
        ),
        "prompt takes user, system and keywords (true/false); got {c.prompt!r}",
    ),
    *_rounds_rules("rft"),
    *_rounds_rules("dpo"),
    (lambda c: c.grpo_questions in ("hard", "all"), "grpo_questions must be hard or all (got {c.grpo_questions!r})"),
    (lambda c: "dpo" not in c.stages or c.dpo.samples >= 2, "dpo.samples must be >= 2 (a pair needs two completions)"),
    (
        lambda c: not _judges_hardness(c) or any(r["name"] == "bm25_rank" for r in c.rewards),
        "hard questions (grpo_questions or rft/dpo questions_from: hard) are judged by the bm25_rank reward's pool and "
        "metric: add one to rewards, or take all questions",
    ),
    (
        lambda c: all(map(_is_mode, [c.mode, *c.validation.modes, *([c.distil.mode] if c.distil.mode else [])])),
        f"mode, validation.modes and distil.mode must be rewrite modes ({', '.join(mode_names())}); got "
        "{c.mode!r}, {c.validation.modes!r}, {c.distil.mode!r}",
    ),
)
