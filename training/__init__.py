"""Training query reasoners with TRL, imported as ``tongsearch_qr.training``.

Needs the ``train`` extra (``pip install tongsearch-qr[train]``); the core never imports it.

>>> from tongsearch_qr.training import load_config, train
>>> final_dir = train(load_config("training/configs/cpu-tiny.yaml"))   # then QRReasoner(final_dir)

The pipeline, one module per step: ``config`` (the YAML) -> ``prepare`` (data, pools, rewards; ``data``,
``rewards``) -> ``trainer`` (orders the stages, resumes them) -> the stages behind one interface (``stage``):
``supervised`` (``keyterms``: :mod:`.key_terms`, ``distil``: :mod:`.teachers`), ``sampled`` (``rft``, ``dpo``),
``grpo``. Serving them: ``validation`` (validator, ``log.csv`` and its plot), ``policy`` (loading and saving the
trained model), ``precision`` (weights dtype, bf16 autocast), ``generation`` (generating with the model being
trained), ``trl_configs`` (TRL's configs), ``fine_tuning`` (SFT and DPO), ``checkpoints`` (resuming and finishing)
and ``ranks`` (work split across ``accelerate launch`` processes).
"""

from __future__ import annotations

from pathlib import Path

from .config import BUNDLED_DIR as CONFIG_DIR
from .config import TrainConfig, load_config


def config_path(name_or_path: str) -> Path:
    """A bundled config by name (``cpu-dpo``, ``cpu-rft``, ``cpu-tiny``, ``qwen2.5-1.5b``, ``qwen2.5-7b``) or a
    path as given."""
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    plain_name = "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml"))
    return bundled if plain_name and bundled.is_file() else Path(name_or_path)


def train(config: TrainConfig, **options):
    """Run the config's stages (see :func:`tongsearch_qr.training.trainer.train`)."""
    from .trainer import train as run

    return run(config, **options)


def dry_run(config: TrainConfig, **options):
    """Validate a config without training (see :func:`tongsearch_qr.training.trainer.dry_run`)."""
    from .trainer import dry_run as check

    return check(config, **options)


__all__ = ["CONFIG_DIR", "TrainConfig", "config_path", "dry_run", "load_config", "train"]
