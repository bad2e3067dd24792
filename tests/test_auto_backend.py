"""backend="auto", the default: the engine and llama.cpp weight type follow what the machine reports (flags
monkeypatched to stand for other CPUs), the choice is logged once, kept on the backend, written by eval, and keys
the reasoning cache by engine and weight type."""

from __future__ import annotations

import json
import logging

import pytest
from test_data import make_bright_fixture

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.backends import auto, make_backend
from tongsearch_qr.backends.auto import EngineChoice, MachineReport, choose_engine

ZEN3 = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "REPACK"})
ZEN4 = ZEN3 | {"AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"}
ARM = frozenset({"NEON", "ARM_FMA", "FP16_VA", "DOTPROD", "LLAMAFILE", "OPENMP", "REPACK"})


@pytest.mark.parametrize("report, options, expected", [
    (MachineReport("cpu", ZEN4), {}, ("llamacpp", "BF16")),
    (MachineReport("cpu", ZEN3), {}, ("llamacpp", "F16")),
    (MachineReport("cpu", ARM), {}, ("llamacpp", "F16")),
    (MachineReport("cpu", ZEN3), {"dtype": "float32"}, ("llamacpp", "F32")),
    (MachineReport("cpu", ZEN4), {"dtype": "q4_0"}, ("llamacpp", "Q4_0")),
    (MachineReport("cuda", ZEN4), {}, ("transformers", None)),
    (MachineReport("cuda:1", ZEN3), {"dtype": "float16"}, ("transformers", None)),
    (MachineReport("cpu", None), {}, ("transformers", None)),
    (MachineReport("cpu", ZEN4), {"model_problem": "not the embedded architecture"}, ("transformers", None)),
    (MachineReport("cuda", None), {"gguf_file": True}, ("llamacpp", None)),
])
def test_the_choice_is_a_function_of_what_the_machine_reports(report, options, expected):
    choice = choose_engine(report, **options)
    assert (choice.engine, choice.weights_type) == expected and choice.reason
    assert choose_engine(report, **options) == choice  # the same on every call


def test_an_unknown_pinned_weight_type_is_refused():
    with pytest.raises(ValueError, match="unknown GGUF weights type 'int3'"):
        choose_engine(MachineReport("cpu", ZEN4), dtype="int3")


def test_the_default_backend_on_this_cpu_is_llamacpp_in_the_weight_type_llamacpp_reports_for_it(monkeypatch, caplog):
    reported = auto.machine_report("cpu")
    assert reported.llamacpp_features is not None and "AVX2" in reported.llamacpp_features
    with caplog.at_level(logging.INFO, logger="tongsearch_qr.backends.auto"):
        default = QRReasoner(generation=GenerationParams.greedy(8))
        QRReasoner(generation=GenerationParams.greedy(8))
    native = reported.native_bf16
    expected = "BF16" if native else "F16"
    assert default.backend.choice == EngineChoice("llamacpp", expected, f"CPU with {'native' if native else 'no native'} bf16")
    assert default.backend.cache_id.startswith("llamacpp:") and default.backend.cache_id.endswith(f":{expected.lower()}")
    assert sum("backend auto: llamacpp" in r.getMessage() for r in caplog.records) <= 1  # logged once per model

    other_kind = ZEN3 if native else ZEN4
    monkeypatch.setattr(auto, "_llamacpp_features", lambda: other_kind)
    flipped = QRReasoner(generation=GenerationParams.greedy(8)).backend
    assert flipped.weights_type == ("F16" if native else "BF16")
    assert flipped.cache_id != default.backend.cache_id  # another weight type: another cache key
    assert flipped.gguf_path != default.backend.gguf_path
    assert flipped.generate(["Why is the sea salty?"], default.template, GenerationParams.greedy(8))[0].strip()


def test_without_llamacpp_or_on_cuda_or_for_models_it_cannot_run_auto_is_transformers(monkeypatch, tiny_model_dir,
                                                                                        caplog):
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
    assert main(["eval", "--dataset", "bright:biology", "--bright-dir", str(tmp_path / "b"), "--output", str(out),
                 "--retriever", "bm25", "--greedy", "--max-new-tokens", "4", "--no-cache", "--parallel", "2"]) == 0
    backend = json.loads((out / "reasoning.json").read_text())["backend"]
    assert backend["auto"]["engine"] == "llamacpp" and backend["cache_id"].startswith("llamacpp:")
    assert backend["cache_id"].endswith(":" + backend["auto"]["weights_type"].lower())
