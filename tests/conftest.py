"""Shared fixtures: the real shared data beside the repo and one loaded embedded model per session."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent

#: everyday questions for the backend tests (openai, vllm): distinct enough to give distinct completions
EVERYDAY_QUESTIONS = [
    "Why can't humans drink sea water?",
    "Why do onions make people cry?",
    "How do birds navigate during migration?",
    "Why does ice float on water?",
    "What makes the sky look blue?",
    "Why do cats purr?",
    "How do vaccines train the immune system?",
    "Why does bread go stale?",
    "What causes the seasons on Earth?",
    "Why do leaves change colour in autumn?",
    "How do plants drink water from the soil?",
    "Why do we get goosebumps?",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real BRIGHT, SciFact and StackExchange data (never copied into the repo)."""
    assert SHARED_DATA.is_dir(), f"tests read real data from {SHARED_DATA}; it is missing"
    return SHARED_DATA


@pytest.fixture(scope="session")
def smol_backend():
    """The embedded default model behind the transformers backend, loaded once."""
    from tongsearch_qr.backends import make_backend

    return make_backend("transformers", None, batch_size=8)


@pytest.fixture
def short_greedy():
    from tongsearch_qr import GenerationParams

    return GenerationParams.greedy(max_new_tokens=12)


class CountingBackend:
    """Wraps a real backend and records every question it is asked to generate."""

    def __init__(self, inner):
        self.inner = inner
        self.cache_id = inner.cache_id
        self.calls: list[list[str]] = []

    def generate(self, questions, template, params, on_result=None):
        self.calls.append(list(questions))
        return self.inner.generate(questions, template, params, on_result)

    @property
    def generated(self) -> list[str]:
        return [q for call in self.calls for q in call]


@pytest.fixture
def counting_wrapper() -> type[CountingBackend]:
    """The :class:`CountingBackend` class, to wrap any backend."""
    return CountingBackend


@pytest.fixture
def counting(smol_backend) -> CountingBackend:
    return CountingBackend(smol_backend)


@pytest.fixture(scope="session")
def scifact_collection(shared_data):
    """The real SciFact collection (BEIR layout, test split)."""
    from tongsearch_qr.data import load_beir

    return load_beir(shared_data / "scifact")


@pytest.fixture(scope="session")
def reasoning_cache_file(tmp_path_factory):
    """One reasoning cache for the integration tests, so each stack reuses the same reasoning."""
    return tmp_path_factory.mktemp("reasoning-cache") / "reasoning.sqlite"


@pytest.fixture(scope="session")
def greedy_reasoner(smol_backend, reasoning_cache_file):
    """The embedded model, greedy, 16 new tokens, with the shared cache."""
    from tongsearch_qr import GenerationParams, QRReasoner

    return QRReasoner(backend=smol_backend, generation=GenerationParams.greedy(16), cache=reasoning_cache_file)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised causal LM of the embedded model's architecture, a few layers of width 32, with the
    embedded model's tokenizer and chat template: training tests exercise every code path in seconds."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tongsearch_qr.models import embedded_model_dir

    source = embedded_model_dir()
    config = AutoConfig.from_pretrained(source)
    config.update(
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
        }
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-model")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.fixture
def scripted():
    """Scripted stand-ins for OpenAI-compatible servers (``fake_openai_server.Servers``), closed after the test."""
    from fake_openai_server import Servers

    servers = Servers()
    yield servers
    servers.close()


@contextlib.contextmanager
def native_fault_handlers():
    """Keep this process's native SIGSEGV and SIGBUS handlers across the block. A Ray driver replaces them and
    ``ray.shutdown()`` resets them to the default, which kills a JVM started earlier in the process (pyserini's): the
    JVM takes SIGSEGV for its safepoint polls and null checks, and then dies with the default action."""
    libc = ctypes.CDLL(None, use_errno=True)
    saved = {}
    for signum in (signal.SIGSEGV, signal.SIGBUS):
        action = ctypes.create_string_buffer(256)  # a struct sigaction, copied as it is (152 bytes on x86-64 glibc)
        libc.sigaction(signum, None, action)
        saved[signum] = action
    try:
        yield
    finally:
        for signum, action in saved.items():
            libc.sigaction(signum, action, None)
