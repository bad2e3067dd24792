"""Choices that only matter on GPUs, checked on a CPU: the weight type per device, batch sizes from free GPU
memory, and BM25 that never initialises an accelerator through JAX."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest


def test_dtype_is_bf16_only_where_the_requested_gpu_computes_it_natively(monkeypatch):
    import torch

    from tongsearch_qr.backends.transformers_backend import pick_dtype

    majors = {0: 9, 1: 7}  # an H100 as cuda:0, a V100 as cuda:1 (bf16 there is emulated)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=majors[getattr(device, "index", None) or 0]))
    monkeypatch.setattr(torch.version, "hip", None)
    assert pick_dtype("auto", "cuda:0") == torch.bfloat16 and pick_dtype("auto", "cuda") == torch.bfloat16
    assert pick_dtype("auto", "cuda:1") == torch.float16
    assert pick_dtype("float32", "cuda:1") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("int4", "cpu")


def test_cuda_batches_are_sized_from_free_memory():
    from tongsearch_qr.backends.transformers_backend import CUDA_MAX_BATCH_SIZE, cuda_batching, kv_bytes_per_token

    smollm = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, hidden_size=576, num_hidden_layers=30)
    qwen = SimpleNamespace(num_attention_heads=12, num_key_value_heads=2, hidden_size=1536, num_hidden_layers=28,
                           head_dim=128)
    assert kv_bytes_per_token(smollm, 2) == 2 * 30 * 3 * 64 * 2 == 23040
    assert kv_bytes_per_token(qwen, 2) == 2 * 28 * 2 * 128 * 2
    gib = 2**30
    size, tokens = cuda_batching(130 * gib, smollm, 2)  # an idle H200
    assert size == CUDA_MAX_BATCH_SIZE and tokens == int(130 * gib * 0.5) // 23040 and tokens > 512 * 1000
    assert cuda_batching(8 * gib, qwen, 2)[1] == int(8 * gib * 0.5) // (2 * 28 * 2 * 128 * 2)
    with pytest.raises(MemoryError, match="GiB free on the GPU"):
        cuda_batching(2**20, qwen, 2)


def test_cpu_batching_is_unchanged_by_default(smol_backend):
    assert (smol_backend.batch_size, smol_backend.max_batch_tokens) == (8, 65536)  # the fixture asks batch_size=8


def test_bm25_never_imports_jax_and_so_never_initialises_an_accelerator(tmp_path):
    """bm25s imports JAX when it is installed and runs a top-k on it at import (JAX then takes 75% of a GPU).
    A stand-in ``jax`` package records any import; BM25 indexing and search must not trigger it."""
    fake = tmp_path / "jax"
    (fake / "lax").mkdir(parents=True)
    (fake / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').write('jax')\nfrom . import lax\n")
    (fake / "lax" / "__init__.py").write_text("def top_k(x, k):\n    raise RuntimeError('JAX top_k used')\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from tongsearch_qr.retrieval.bm25 import BM25Retriever
        from tongsearch_qr.training.key_terms import KeyTerms
        index = BM25Retriever().index([("a", "sea water dehydrates"), ("b", "tides follow the moon")])
        assert index.search(["why can't we drink sea water"], k=1)[0][0][0] == "a"
        KeyTerms(["sea water", "moon"])
        import os
        print("bm25s" in sys.modules, os.path.exists({str(tmp_path / 'imported')!r}))
        import jax  # the program's own import still works afterwards
        print(os.path.exists({str(tmp_path / 'imported')!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "True"]  # bm25s ran without JAX; the program's import works


@pytest.mark.slow
def test_the_gpu_check_runs_its_cpu_path_at_toy_sizes(tiny_model_dir, tmp_path):
    """``benchmarks/gpu_check.py`` (run on a bare CUDA machine) exercised on the CPU with toy models."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--cpu", "--tiny", "--queries", "4", "--new-tokens", "4",
                           "--grpo-steps", "1", "--tokenizer", str(tiny_model_dir), "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["choices"]["jax_imported_by_bm25"] is False
    assert {row["batching"] for row in report["throughput"]["qwen2.5-1.5b"]} == {"default batching", "batches of 64"}
    assert report["seeded_batching"]["repeats"] is True
    assert [row["run"] for row in report["grpo"]] == ["LoRA r=16", "full fine-tuning"]
    for row in report["grpo"]:
        assert "error" not in row, row
        assert len(row["seconds_per_step"]) == 1 and row["trained_weights_dtype"] == ["float32"]
    assert "GRPO (qwen2.5-1.5b recipe" in (tmp_path / "gpu_check.md").read_text()
