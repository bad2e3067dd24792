"""Choices that depend on the machine, checked on a CPU: the weight type per device (GPUs of each generation, CPUs
with and without native bfloat16, ISA limits set in the environment), batch sizes from free GPU memory, and BM25
that never initialises an accelerator through JAX."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

X86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU features")


def test_dtype_is_bf16_only_where_the_requested_gpu_computes_it_natively(monkeypatch):
    import torch

    from tongsearch_qr.backends.transformers_backend import pick_dtype

    majors = {0: 9, 1: 7}  # an H100 as cuda:0, a V100 as cuda:1 (bf16 there is emulated)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: SimpleNamespace(major=majors[getattr(device, "index", None) or 0]),
    )
    monkeypatch.setattr(torch.version, "hip", None)
    assert pick_dtype("auto", "cuda:0") == torch.bfloat16 and pick_dtype("auto", "cuda") == torch.bfloat16
    assert pick_dtype("auto", "cuda:1") == torch.float16
    assert pick_dtype("float32", "cuda:1") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("int4", "cpu")


def cpuinfo_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("needs /proc/cpuinfo")
    return {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split()}


@pytest.fixture
def no_isa_limit(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)


@X86
def test_native_bf16_is_what_the_cpus_flags_say(no_isa_limit):
    import torch

    from tongsearch_qr.backends.cpu import native_bf16
    from tongsearch_qr.backends.transformers_backend import pick_dtype

    expected = bool(cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})
    assert native_bf16() is expected
    assert pick_dtype("auto", "cpu") == (torch.bfloat16 if expected else torch.float32)


@X86
def test_an_avx512_cpu_without_bf16_instructions_computes_in_float32(monkeypatch, no_isa_limit):
    """A Cascade Lake (AVX512_CORE, no AVX512_BF16 nor AMX): oneDNN's check says bf16 is supported there (it
    emulates it), but dtype auto must be float32."""
    import torch

    from tongsearch_qr.backends.cpu import native_bf16
    from tongsearch_qr.backends.transformers_backend import pick_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert native_bf16() is False and pick_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # a Sapphire Rapids
    assert native_bf16() is True and pick_dtype("auto", "cpu") == torch.bfloat16


@X86
@pytest.mark.parametrize(
    "name, value, native",
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", False),
        ("ONEDNN_MAX_CPU_ISA", "avx2", False),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI", False),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
        ("ONEDNN_MAX_CPU_ISA", "ALL", True),
        ("DNNL_MAX_CPU_ISA", "AVX512_CORE", False),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX2", False),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX512", False),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX512_E3", True),
        ("ATEN_CPU_CAPABILITY", "avx2", False),
        ("ATEN_CPU_CAPABILITY", "default", False),
        ("ATEN_CPU_CAPABILITY", "avx512", True),
    ],
)
def test_an_isa_limit_in_the_environment_is_honoured(monkeypatch, no_isa_limit, name, value, native):
    """On a CPU with bf16 instructions (probes monkeypatched: a Sapphire Rapids), a limit below them means none."""
    import torch

    from tongsearch_qr.backends.cpu import bf16_isa_limit, native_bf16
    from tongsearch_qr.backends.transformers_backend import pick_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv(name, value)
    assert native_bf16() is native and (bf16_isa_limit() is None) is native
    assert pick_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)


@X86
def test_an_isa_limit_set_before_the_process_starts_gives_float32(no_isa_limit):
    """As a user would set it: in the environment of a new process, where oneDNN itself reads it."""
    code = (
        "import torch; from tongsearch_qr.backends.transformers_backend import pick_dtype; "
        "print(torch.ops.mkldnn._is_mkldnn_bf16_supported(), pick_dtype('auto', 'cpu'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    onednn_says, dtype = done.stdout.split()
    assert dtype == "torch.float32"
    if cpuinfo_flags() & {"avx512f"}:
        assert onednn_says == "True"  # what the old check took as native bf16


def test_cuda_batches_are_sized_from_free_memory():
    from tongsearch_qr.backends.transformers_backend import CUDA_MAX_BATCH_SIZE, cuda_batching, kv_bytes_per_token

    smollm = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, hidden_size=576, num_hidden_layers=30)
    qwen = SimpleNamespace(num_attention_heads=12, num_key_value_heads=2, hidden_size=1536, num_hidden_layers=28, head_dim=128)
    assert kv_bytes_per_token(smollm, 2) == 2 * 30 * 3 * 64 * 2 == 23040
    assert kv_bytes_per_token(qwen, 2) == 2 * 28 * 2 * 128 * 2
    gib = 2**30
    size, tokens = cuda_batching(130 * gib, smollm, 2)  # an idle H200
    assert size == CUDA_MAX_BATCH_SIZE and tokens == int(130 * gib * 0.5) // 23040 and tokens > 512 * 1000
    assert cuda_batching(8 * gib, qwen, 2)[1] == int(8 * gib * 0.5) // (2 * 28 * 2 * 128 * 2)
    with pytest.raises(MemoryError, match="GiB free on the GPU"):
        cuda_batching(2**20, qwen, 2)


def test_a_backend_given_no_batch_size_sizes_its_batches_for_its_device(smol_backend, monkeypatch):
    """On a CPU: 64 sequences and 65,536 tokens; on CUDA, what the free memory holds (here 8 GiB free, a Qwen2.5-1.5B
    in bfloat16: 28 layers x 2 KV heads x 128 dims x keys and values x 2 bytes per token), unless given."""
    import torch

    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    on_cpu = TransformersBackend.from_loaded(smol_backend.model, smol_backend.tokenizer, "smol")
    assert (on_cpu.batch_size, on_cpu.max_batch_tokens) == (64, 65536)
    qwen = SimpleNamespace(
        num_attention_heads=12,
        num_key_value_heads=2,
        hidden_size=1536,
        num_hidden_layers=28,
        head_dim=128,
        max_position_embeddings=32768,
    )
    on_gpu = SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.bfloat16, config=qwen, eval=lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    sized = TransformersBackend.from_loaded(on_gpu, smol_backend.tokenizer, "qwen")
    assert (sized.batch_size, sized.max_batch_tokens) == (512, 4 * 2**30 // (28 * 2 * 128 * 2 * 2))
    given = TransformersBackend.from_loaded(on_gpu, smol_backend.tokenizer, "qwen", batch_size=16)
    assert (given.batch_size, given.max_batch_tokens) == (16, sized.max_batch_tokens)


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
        print("bm25s" in sys.modules, os.path.exists({str(tmp_path / "imported")!r}))
        import jax  # the program's own import still works afterwards
        print(os.path.exists({str(tmp_path / "imported")!r}))
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
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--cpu",
            "--tiny",
            "--queries",
            "4",
            "--new-tokens",
            "4",
            "--grpo-steps",
            "1",
            "--tokenizer",
            str(tiny_model_dir),
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
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
