"""GGUF files for llama.cpp: a user's ``.gguf``, or the embedded model or a fine-tune of it (a local model directory
or LoRA adapter) written once per weight type as GGUF and cached.

A fine-tune keeps the embedded model's architecture and tokenizer, so its GGUF takes every metadata field of the
shipped file (hyper-parameters, vocabulary, merges, chat template) and only new tensors, named by the ``gguf``
library's tensor map. Other model directories need llama.cpp's own converter (``convert_hf_to_gguf.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelNotAvailableError
from .models import (
    build_once,
    embedded_gguf_path,
    file_fingerprint,
    is_embedded,
    resolve_model,
)
from .paths import cache_root

GGUF_FILE = "model.gguf"
#: the types exported weight matrices can take (llama.cpp's names), and the GGUF file type each one makes
WEIGHTS_TYPES = {"BF16": "MOSTLY_BF16", "F16": "MOSTLY_F16", "Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0", "F32": "ALL_F32"}


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF file, the Hugging Face tokenizer that renders its prompts, and what determines its weights."""

    path: Path
    tokenizer: Any
    identity: str


def is_gguf_file(spec: str | os.PathLike[str] | None) -> bool:
    """Whether a model spec is a ``.gguf`` file (run by llama.cpp as it is)."""
    if spec is None or is_embedded(spec):
        return False
    path = Path(os.fspath(spec)).expanduser()
    return path.suffix == ".gguf" and path.is_file()


#: torch's names of the float types, as ``dtype`` gives them, and the weight type of the same precision
DTYPE_WEIGHTS_TYPES = {"float32": "F32", "fp32": "F32", "bfloat16": "BF16", "float16": "F16", "fp16": "F16"}


def check_weights_type(weights_type: str) -> str:
    """``weights_type`` in llama.cpp's spelling (``bf16`` -> ``BF16``, and a torch dtype name such as ``float32``
    -> ``F32``), or a ValueError naming the types there are."""
    name = DTYPE_WEIGHTS_TYPES.get(str(weights_type).lower(), str(weights_type).upper())
    if name not in WEIGHTS_TYPES:
        raise ValueError(
            f"unknown GGUF weights type {weights_type!r}; choose one of: {', '.join(WEIGHTS_TYPES)} "
            f"(or a dtype: {', '.join(DTYPE_WEIGHTS_TYPES)})"
        )
    return name


def gguf_model(spec: str | os.PathLike[str] | None, weights_type: str = "BF16") -> GGUFModel:
    """The GGUF behind a model spec: a ``.gguf`` file as it is, or the model the transformers backend would load
    (the embedded default, or a local directory of a fine-tune of it: full weights or LoRA adapter, merged)
    written once per ``weights_type`` (:data:`WEIGHTS_TYPES`) as GGUF, so both backends run the same weights."""
    from transformers import AutoTokenizer

    weights_type = check_weights_type(weights_type)
    path = None if spec is None or is_embedded(spec) else Path(os.fspath(spec)).expanduser()
    if path is not None and path.is_file() and path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return GGUFModel(path.resolve(), tokenizer, f"{path.name}@{file_fingerprint(path)}")
    if path is not None and not path.is_dir():
        raise ModelNotAvailableError(
            f"the llamacpp backend runs local models only: {spec!r} is neither a .gguf file nor a model directory "
            "(download hub models first, then pass the directory or a GGUF file)"
        )
    source = resolve_model(spec)
    identity = source.identity()  # hashes the weights: once
    key = hashlib.sha256(f"{identity}\0{weights_type}".encode()).hexdigest()[:16]
    folder = build_once(
        cache_root() / "models" / f"gguf-{key}",
        lambda staging: export_fine_tune(Path(source.path), staging, weights_type),
        complete=lambda d: (d / GGUF_FILE).is_file(),
    )
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    return GGUFModel(folder / GGUF_FILE, tokenizer, f"{identity}:{weights_type.lower()}")


def _shipped_shape() -> dict[str, int]:
    """The embedded model's hyper-parameters under their transformers names, read from the shipped GGUF."""
    import gguf

    shipped = gguf.GGUFReader(str(embedded_gguf_path()))
    return {
        key: int(shipped.fields[f"llama.{field}"].contents())
        for key, field in [
            ("num_hidden_layers", "block_count"),
            ("hidden_size", "embedding_length"),
            ("intermediate_size", "feed_forward_length"),
            ("num_attention_heads", "attention.head_count"),
            ("num_key_value_heads", "attention.head_count_kv"),
            ("vocab_size", "vocab_size"),
        ]
    }


def export_problem(model_dir: Path) -> str | None:
    """Why ``model_dir`` cannot be written as GGUF by :func:`export_fine_tune` (``None``: it can): it must have the
    embedded model's architecture and vocabulary, and safetensors weights."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    expected = _shipped_shape()
    found = {key: config.get(key) for key in expected}
    if config.get("model_type") != "llama" or found != expected:
        return (
            f"{model_dir} is not a fine-tune of the embedded model (model_type {config.get('model_type')!r}, "
            f"{found} vs {expected}); convert it with llama.cpp's convert_hf_to_gguf.py and pass the .gguf file"
        )
    if not any(model_dir.glob("*.safetensors")):
        return f"{model_dir} holds no *.safetensors weights to export to GGUF"
    return None


def export_fine_tune(model_dir: Path, out_dir: Path, weights_type: str = "BF16") -> None:
    """Write ``model_dir`` (a transformers model with the embedded model's architecture and vocabulary) as
    ``out_dir/model.gguf``: the shipped file's metadata, the model's weights (matrices ``weights_type``, one of
    :data:`WEIGHTS_TYPES`; norms float32)."""
    import gguf
    from safetensors.torch import load_file

    weights_type = check_weights_type(weights_type)
    problem = export_problem(model_dir)
    if problem:
        raise ModelNotAvailableError(problem)
    shipped = gguf.GGUFReader(str(embedded_gguf_path()))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    expected = _shipped_shape()
    weights: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, expected["num_hidden_layers"])
    heads, kv_heads = expected["num_attention_heads"], expected["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(out_dir / GGUF_FILE), arch="llama")
    for key, field in shipped.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.quantization_version"):
            continue
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_file_type(getattr(gguf.LlamaFileType, WEIGHTS_TYPES[weights_type]))
    for name, tensor in weights.items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelNotAvailableError(f"{model_dir}: no GGUF name for tensor {name!r}")
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):  # llama.cpp's rotary layout (what its converter does)
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 2:
            kind = getattr(gguf.GGMLQuantizationType, weights_type)
            writer.add_tensor(target, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(target, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _permute(weights: Any, heads: int) -> Any:
    """Interleave each head's two rotary halves, as llama.cpp's ``convert_hf_to_gguf.py`` does for q and k."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
