"""Generating backends behind one protocol, created by name.

``auto`` (the default: the fastest installed local engine for this machine and model, see :mod:`.auto`),
``transformers``, ``llamacpp`` (llama.cpp on a GGUF), ``vllm`` (vLLM's offline engine), ``openai`` (any
OpenAI-compatible server) and ``precomputed`` (a JSON file of reasoning) are built in; each
entry of :data:`BACKENDS` imports its module only when used, so optional dependencies stay optional.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, ResultCallback

#: backend name -> "module:factory" (relative to this package); the factory takes (model, **options).
BACKENDS: dict[str, str] = {
    "auto": "auto:make_auto_backend",
    "transformers": "transformers_backend:TransformersBackend",
    "precomputed": "precomputed:PrecomputedBackend.from_file",
    "vllm": "vllm_backend:VLLMBackend",
    "openai": "openai_backend:OpenAIBackend",
    "llamacpp": "llamacpp_backend:LlamaCppBackend",
}


def make_backend(name: str, model: Any = None, **options: Any) -> Backend:
    """Create the backend registered as ``name`` for ``model`` (a model spec, or a file for ``precomputed``)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    module_name, _, attr = target.partition(":")
    factory: Any = importlib.import_module(f"{__name__}.{module_name}")
    for part in attr.split("."):
        factory = getattr(factory, part)
    if name == "precomputed" and model is None:
        raise ValueError("the precomputed backend needs the path of a reasoning JSON file")
    return factory(model, **options)


__all__ = ["BACKENDS", "Backend", "ResultCallback", "make_backend"]
