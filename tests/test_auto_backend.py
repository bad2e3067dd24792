"""backend="auto", the default: the engine and llama.cpp weight type follow what the machine reports (flags
monkeypatched to stand for other CPUs, an ISA limit set in the environment), the choice is logged once, kept on the
backend, written by eval, and keys the reasoning cache by engine and weight type. Expectations come from
/proc/cpuinfo, llama.cpp's own system info and the environment, not from the code under test."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import pytest
from test_data import make_bright_fixture

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends import auto, make_backend
from tongsearch_qr.backends.auto import EngineChoice, MachineReport, choose_engine

ZEN3 = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "REPACK"})
ZEN4 = ZEN3 | {"AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"}
ARM = frozenset({"NEON", "ARM_FMA", "FP16_VA", "DOTPROD", "LLAMAFILE", "OPENMP", "REPACK"})
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cpuinfo_has_bf16() -> bool:
    """Whether the kernel lists bfloat16 instructions among this CPU's flags (AVX512_BF16, or AMX's)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("needs /proc/cpuinfo")
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def llamacpp_uses_bf16() -> bool:
    """Whether the installed llama.cpp says its kernels were built with AVX512_BF16."""
    import llama_cpp

    return "AVX512_BF16 = 1" in llama_cpp.llama_print_system_info().decode()


@pytest.fixture
def no_isa_limit(monkeypatch):
    for name in ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "report, options, expected",
    [
        (MachineReport("cpu", ZEN4, True), {}, ("llamacpp", "BF16", "CPU with native bf16")),
        (MachineReport("cpu", ZEN4, False), {}, ("llamacpp", "F16", "CPU with no native bf16")),  # an ISA limit set
        (MachineReport("cpu", ZEN3, True), {}, ("llamacpp", "F16", "CPU with no native bf16")),  # llama.cpp for AVX2
        (MachineReport("cpu", ZEN3, False), {}, ("llamacpp", "F16", "CPU with no native bf16")),
        (MachineReport("cpu", ARM, True), {}, ("llamacpp", "F16", "CPU with no native bf16")),
        (MachineReport("cpu", ZEN3, False), {"dtype": "float32"}, ("llamacpp", "F32", "CPU, dtype float32 pinned")),
        (MachineReport("cpu", ZEN4, True), {"dtype": "q4_0"}, ("llamacpp", "Q4_0", "CPU, dtype q4_0 pinned")),
        (MachineReport("cuda", ZEN4, True), {}, ("transformers", None, "device cuda")),
        (MachineReport("cuda:1", ZEN3, False), {"dtype": "float16"}, ("transformers", None, "device cuda:1")),
        (MachineReport("cpu", None, True), {}, ("transformers", None, "llama-cpp-python is not installed")),
        (
            MachineReport("cpu", ZEN4, True),
            {"model_problem": "not the embedded architecture"},
            ("transformers", None, "not the embedded architecture"),
        ),
        (MachineReport("cuda", None, False), {"gguf_file": True}, ("llamacpp", None, "a GGUF file runs on llama.cpp")),
    ],
)
def test_the_choice_is_a_function_of_what_the_machine_reports(report, options, expected):
    choice = choose_engine(report, **options)
    assert (choice.engine, choice.weights_type) == expected[:2] and choice.reason.startswith(expected[2])


def test_an_unknown_pinned_weight_type_is_refused():
    with pytest.raises(ValueError, match="unknown GGUF weights type 'int3'"):
        choose_engine(MachineReport("cpu", ZEN4, True), dtype="int3")


def test_this_machines_report_follows_its_cpu_flags_and_llamacpps_build(no_isa_limit):
    reported = auto.machine_report("cpu")
    assert reported.llamacpp_features is not None and "AVX2" in reported.llamacpp_features
    assert reported.cpu_bf16 is cpuinfo_has_bf16()
    assert reported.native_bf16 is (cpuinfo_has_bf16() and llamacpp_uses_bf16())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 ISA limits")
def test_under_an_avx512_core_limit_dtype_auto_is_float32_and_auto_picks_llamacpp_f16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE: oneDNN's own bf16 check still says yes (it emulates bf16 there), but the
    CPU is held below bfloat16 instructions, as a Cascade Lake is."""
    import torch

    from tongsearch_qr.backends.transformers_backend import pick_dtype

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert pick_dtype("auto", "cpu") == torch.float32
    choice = choose_engine(auto.machine_report("cpu"))
    assert (choice.engine, choice.weights_type) == ("llamacpp", "F16") and choice.reason == "CPU with no native bf16"
    backend = QRReasoner(generation=GenerationParams.greedy(8)).backend
    assert backend.choice == choice and backend.weights_type == "F16" and backend.cache_id.endswith(":f16")


def test_the_default_backend_on_this_cpu_is_llamacpp_in_the_weight_type_of_its_cpu(monkeypatch, caplog, no_isa_limit):
    native = cpuinfo_has_bf16() and llamacpp_uses_bf16()
    monkeypatch.setattr(auto, "_logged", set())
    with caplog.at_level(logging.INFO, logger="tongsearch_qr.backends.auto"):
        default = QRReasoner(generation=GenerationParams.greedy(8))
        QRReasoner(generation=GenerationParams.greedy(8))
    expected = "BF16" if native else "F16"
    assert default.backend.choice == EngineChoice("llamacpp", expected, f"CPU with {'native' if native else 'no native'} bf16")
    assert default.backend.cache_id.startswith("llamacpp:") and default.backend.cache_id.endswith(f":{expected.lower()}")
    assert default.backend.device == "cpu"
    assert sum("backend auto: llamacpp" in r.getMessage() for r in caplog.records) == 1  # logged once per model
    assert f"for the default model on cpu (CPU with {'native' if native else 'no native'} bf16)" in caplog.text

    if native:  # the same CPU held to AVX2
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    else:  # a Zen 4 stands in
        from tongsearch_qr.backends import cpu

        monkeypatch.setattr(auto, "_llamacpp_features", lambda: ZEN4)
        monkeypatch.setattr(cpu, "cpu_has_bf16_instructions", lambda: True)
    flipped = QRReasoner(generation=GenerationParams.greedy(8)).backend
    assert flipped.weights_type == ("F16" if native else "BF16")
    assert flipped.cache_id != default.backend.cache_id  # another weight type: another cache key
    assert flipped.gguf_path != default.backend.gguf_path
    assert flipped.generate(["Why is the sea salty?"], default.template, GenerationParams.greedy(8))[0].strip()


def test_without_llamacpp_or_on_cuda_or_for_models_it_cannot_run_auto_is_transformers(monkeypatch, tiny_model_dir, caplog):
    monkeypatch.setattr(auto, "_llamacpp_features", lambda: None)
    plain = make_backend("auto", "base", batch_size=4, parallel=8)  # the other engine's options are left out
    assert type(plain).__name__ == "TransformersBackend" and plain.batch_size == 4
    assert plain.choice.reason.startswith("llama-cpp-python is not installed")

    monkeypatch.setattr(auto, "_llamacpp_features", lambda: ZEN4)
    with caplog.at_level(logging.INFO, logger="tongsearch_qr.backends.auto"):
        tiny = make_backend("auto", tiny_model_dir, dtype="float32")
    assert type(tiny).__name__ == "TransformersBackend" and "not a fine-tune of the embedded model" in tiny.choice.reason
    assert "backend auto: transformers" in caplog.text
    assert "runs local models only" in auto.llamacpp_problem("TongSearch/TongSearch-QR-7B")

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto.machine_report().device == "cuda"
    assert choose_engine(auto.machine_report()).engine == "transformers"


def test_a_gguf_file_runs_on_llamacpp_with_its_own_weights():
    from tongsearch_qr.models import embedded_gguf_path

    shipped = make_backend("auto", embedded_gguf_path(), parallel=2)
    assert shipped.choice.engine == "llamacpp" and shipped.weights_type is None
    assert shipped.cache_id.startswith(f"llamacpp:{embedded_gguf_path().name}@")
    with pytest.raises(ValueError, match="runs with the weights it holds"):
        make_backend("auto", embedded_gguf_path(), dtype="float16")


def test_bad_options_are_refused_before_anything_loads(monkeypatch):
    monkeypatch.setattr(auto, "machine_report", lambda *a: pytest.fail("the machine was asked"))
    with pytest.raises(ValueError, match="unknown option.*batchsize.*for backend auto"):
        make_backend("auto", None, batchsize=8)
    with pytest.raises(ValueError, match="give dtype or weights_type, not both"):
        make_backend("auto", None, dtype="float32", weights_type="Q8_0")


def test_auto_and_transformers_never_share_cached_reasoning(smol_backend, tmp_path):
    cache = tmp_path / "cache.sqlite"
    greedy = GenerationParams.greedy(8)
    default = QRReasoner(backend="auto", generation=greedy, cache=cache, parallel=2)
    forced = QRReasoner(backend=smol_backend, generation=greedy, cache=cache, template=default.template)
    assert default.config_hash != forced.config_hash
    question = ["Why do cats purr?"]
    default.reason(question)
    forced.reason(question)
    assert default.stats["generated"] == 1 and forced.stats["generated"] == 1 and forced.stats["cached"] == 0


def test_eval_writes_which_engine_reasoned(tmp_path):
    from tongsearch_qr.cli import main

    make_bright_fixture(tmp_path / "b")
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "bright:biology",
                "--bright-dir",
                str(tmp_path / "b"),
                "--output",
                str(out),
                "--retriever",
                "bm25",
                "--greedy",
                "--max-new-tokens",
                "4",
                "--no-cache",
                "--parallel",
                "2",
            ]
        )
        == 0
    )
    backend = json.loads((out / "reasoning.json").read_text())["backend"]
    assert backend["auto"]["engine"] == "llamacpp" and backend["cache_id"].startswith("llamacpp:")
    assert backend["cache_id"].endswith(":" + backend["auto"]["weights_type"].lower())
