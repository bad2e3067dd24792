"""Everything the stages share, prepared once per run (and by ``dry_run``): the examples, split and with mined
negatives; the pools questions rank in; the prompt; the reward callables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.prompts import PromptTemplate

from . import data as data_mod
from .config import TrainConfig
from .rewards import BM25Rank, make_reward


@dataclass
class Prepared:
    """Train and validation examples (with negatives); ``corpus``: every positive; ``validation_corpus``: the
    positives validation ranks among with ``pool: corpus``; ``pools``: every positive per source (``pool:
    source``); the prompt, and the weighted reward callables."""

    config: TrainConfig
    template: PromptTemplate
    train: list[data_mod.TrainingExample]
    validation: list[data_mod.TrainingExample]
    corpus: list[str]
    validation_corpus: list[str]
    pools: dict[str, list[str]]
    rewards: list[Any] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    _short: dict[str, str] = field(default_factory=dict)

    def short(self, question: str, tokenizer: Any) -> str:
        """``question`` as the model sees it: cut to ``data.max_question_tokens`` tokens."""
        if question not in self._short:
            self._short[question] = data_mod.truncate_question(question, tokenizer, self.config.data.max_question_tokens)
        return self._short[question]

    def prompt_dataset(self, examples: list[data_mod.TrainingExample], tokenizer: Any) -> Any:
        """``examples`` as TRL's conversational dataset (prompt + the columns the rewards read)."""
        return data_mod.prompt_dataset(examples, self.template, tokenizer, self.config.data.max_question_tokens)

    def ranker(self, mode: str, metric: str = "ndcg", pool: str | None = None) -> BM25Rank:
        """A BM25 scorer (no gain) in ``mode`` over ``pool`` (default ``validation.pool``)."""
        return BM25Rank(
            mode=mode,
            metric=metric,
            gain=False,
            think=self.config.think,
            corpus=self.pool_corpus(pool or self.config.validation.pool, validation=True),
        )

    def pool_corpus(self, pool: str, *, validation: bool = False) -> Any:
        """What :class:`BM25Rank` ranks in for ``pool``: ``None`` (each question's own pool), one corpus, or
        one per source."""
        if pool == "question":
            return None
        if pool == "corpus":
            return self.validation_corpus if validation else self.corpus
        if pool == "source":
            return self.pools
        raise InputFormatError(f"pool must be question, corpus or source, got {pool!r}")


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


def build_bright(config: TrainConfig) -> list[data_mod.TrainingExample]:
    """The BRIGHT examples of ``data.bright`` (training, and ``validation_size`` of them validation)."""
    if config.data.bright is None:
        return []
    return data_mod.from_bright(config.data.bright["tasks"], config.bright_source())


def prepare(config: TrainConfig, tokenizer: Any | None = None) -> Prepared:
    """Build, split (deterministically, by a hash of each question), mine negatives for and score-ready the
    config's data. BRIGHT examples train, except ``data.bright.validation_size`` of them (by the same hash);
    their negatives come from every positive, while the split data's come from its own positives, so that
    validation on the split data is the same with or without BRIGHT."""
    examples = build_examples(config)
    data_mod.mine_negatives(examples, config.data.negatives)
    train, validation = data_mod.split(examples, validation_size=config.data.validation_size)
    validation_corpus = list(dict.fromkeys(p for ex in [*train, *validation] for p in ex.positives))
    bright = build_bright(config)
    corpus = list(dict.fromkeys([*validation_corpus, *(p for ex in bright for p in ex.positives)]))
    if bright:
        data_mod.mine_negatives(bright, config.data.negatives, corpus=corpus)
        held = int((config.data.bright or {}).get("validation_size", 0))
        bright_train, bright_validation = data_mod.split(bright, validation_size=held)
        train = data_mod.split(train + bright_train, validation_size=0)[0]
        if bright_validation:
            validation = validation + bright_validation
            validation_corpus = corpus
    if config.data.limit:
        train = train[: config.data.limit]
    prepared = Prepared(
        config, config.template(), train, validation, corpus, validation_corpus, data_mod.source_pools([*examples, *bright])
    )
    prepared.rewards, prepared.weights = build_rewards(config, prepared)
    if tokenizer is not None:
        for ex in [*train, *validation]:
            prepared.short(ex.question, tokenizer)
    return prepared


def build_rewards(config: TrainConfig, prepared: Prepared | None = None) -> tuple[list[Any], list[float]]:
    """The reward callables and their weights (``rewards: [{name, weight, options}]``); a ``bm25_rank`` with
    ``pool: corpus`` ranks over every positive of the data, with ``pool: source`` over the positives of the
    question's own source, instead of each question's pool."""
    funcs, weights = [], []
    for spec in config.rewards:
        options = dict(spec.get("options") or {})
        if spec["name"] in ("embedding_advantage", "bm25_rank"):
            options.setdefault("think", config.think)
            options.setdefault("keywords", config.template().keywords)
        if spec["name"] == "bm25_rank":
            pool = options.pop("pool", "question")
            if pool not in ("question", "corpus", "source"):
                raise InputFormatError(f"bm25_rank: pool must be 'question', 'corpus' or 'source', got {pool!r}")
            if pool != "question":
                if prepared is None:
                    raise InputFormatError(f"bm25_rank with pool {pool!r} needs the prepared data")
                options["corpus"] = prepared.pool_corpus(pool)
        funcs.append(make_reward(spec["name"], **options))
        weights.append(float(spec.get("weight", 1.0)))
    return funcs, weights
