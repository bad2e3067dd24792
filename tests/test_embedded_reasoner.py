"""The trained reasoner shipped in the package (tongsearch_qr/embedded/): pinned, applied, reproducible."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tongsearch_qr import models
from tongsearch_qr.errors import ModelNotAvailableError
from tongsearch_qr.models import EMBEDDED_ADAPTER, EMBEDDED_ADAPTER_SHA256, hash_file_sha256


def test_the_shipped_adapter_matches_its_pinned_digests_and_is_small():
    assert models.embedded_adapter() == EMBEDDED_ADAPTER
    assert set(EMBEDDED_ADAPTER_SHA256) == {"adapter_config.json", "adapter_model.safetensors", "tongsearch_qr.json"}
    assert all(hash_file_sha256(EMBEDDED_ADAPTER / name) == digest for name, digest in EMBEDDED_ADAPTER_SHA256.items())
    assert (EMBEDDED_ADAPTER / "adapter_model.safetensors").stat().st_size < 25 << 20
    assert json.loads((EMBEDDED_ADAPTER / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    for beside in ("README.md", "log.csv"):  # the model card and the training log ship with the weights
        assert (EMBEDDED_ADAPTER / beside).is_file()


@pytest.mark.parametrize("damage", ["flip a byte", "remove"])
def test_a_damaged_adapter_is_refused_before_anything_loads(tmp_path, monkeypatch, damage):
    from tongsearch_qr import QRReasoner

    copy = tmp_path / "embedded"
    shutil.copytree(EMBEDDED_ADAPTER, copy)
    weights = copy / "adapter_model.safetensors"
    if damage == "remove":
        weights.unlink()
    else:
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    monkeypatch.setattr(models, "EMBEDDED_ADAPTER", copy)
    merged = []
    monkeypatch.setattr(models, "merged_adapter_dir", lambda adapter, **_: merged.append(adapter))
    with pytest.raises(ModelNotAvailableError) as info:
        QRReasoner()
    message = str(info.value)
    assert "adapter_model.safetensors" in message and "pinned sha256" in message and "QRReasoner('base')" in message
    assert not merged  # refused before merging or loading


def test_the_default_reasoner_is_the_trained_adapter_with_its_mode_and_the_base_stays_reachable(smol_backend):
    from tongsearch_qr import GenerationParams, QRReasoner
    from tongsearch_qr.backends import make_backend

    settings = json.loads((EMBEDDED_ADAPTER / "tongsearch_qr.json").read_text())
    trained = QRReasoner(backend=smol_backend)
    default = QRReasoner()
    assert default.mode.name == settings["mode"] and default.generation.max_new_tokens == settings["max_new_tokens"]
    assert default.template.key() == settings["template"]
    assert QRReasoner("base").mode.name == "replace"  # the untrained model keeps the paper's defaults
    base = make_backend("transformers", "base", batch_size=8)
    assert base.cache_id != smol_backend.cache_id
    questions = ["How do I teach fractions to ten-year-olds?", "Why does espresso taste sour?", "What is a qubit?"]
    greedy = GenerationParams.greedy(24)
    assert trained.backend.generate(questions, trained.template, greedy) != base.generate(questions, trained.template, greedy)


def test_the_shipping_config_reproduces_the_adapter_settings_and_passes_a_dry_run(tmp_path, shared_data):
    from tongsearch_qr.training import config_path, dry_run, load_config
    from tongsearch_qr.training.trainer import save_reasoner_settings

    card = (EMBEDDED_ADAPTER / "README.md").read_text()
    config = load_config(config_path(re.search(r"tongsearch-qr train --config ([\w.-]+)", card).group(1)))
    assert config.model == "base" and config.lora and config.data.qa_jsonl
    assert not any("matheducators" in path for path in config.data.qa_jsonl)  # the held-out site stays out
    save_reasoner_settings(tmp_path, config)  # what training writes beside the adapter
    assert json.loads((tmp_path / "tongsearch_qr.json").read_text()) == json.loads(
        (EMBEDDED_ADAPTER / "tongsearch_qr.json").read_text()
    )
    report = dry_run(config)
    assert report["stages"] == config.stages and report["lora"] and report["tokenizer_checked"]
