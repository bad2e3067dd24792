"""`tongsearch-qr serve`: the id a server advertises names the model and a digest of its weights, so retraining
into the same folder gives another id (and the openai backend, which keys its cache by it, other keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tongsearch_qr.models import directory_fingerprint
from tongsearch_qr.serving import LocalServer, server_command


def fake_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"weights of the first training run")
    return folder


def test_the_served_id_is_the_directory_and_a_digest_that_changes_with_the_weights(tmp_path):
    model = fake_model(tmp_path / "run")
    cmd, served = server_command("vllm", model, port=8123, python="/venv/bin/python")
    assert served == f"{model.resolve()}@{directory_fingerprint(model.resolve())}"
    assert cmd[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(model.resolve())]
    assert cmd[cmd.index("--served-model-name") + 1] == served and "--revision" not in cmd
    transformers_cmd, same = server_command("transformers", model)
    assert same == served and transformers_cmd[1:3] == ["serve", served]  # transformers serve answers for that name
    (model / "model.safetensors").write_bytes(b"weights of the second training run")  # retrained into the same folder
    _, retrained = server_command("vllm", model)
    assert retrained != served and retrained.startswith(f"{model.resolve()}@")
    assert LocalServer("vllm", model, python="/venv/bin/python").model_name == retrained


def test_a_hub_model_is_served_at_its_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--owner--reasoner"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    cmd, served = server_command("vllm", "owner/reasoner")
    assert served == f"owner/reasoner@{commit}"
    assert cmd[cmd.index("--revision") + 1] == commit and cmd[cmd.index("--served-model-name") + 1] == served
    assert server_command("transformers", "owner/reasoner")[0][1:3] == ["serve", served]  # pins the commit


def test_a_path_with_an_at_sign_is_refused_for_transformers_serve(tmp_path):
    model = fake_model(tmp_path / "run@2")
    with pytest.raises(ValueError, match="reads the '@'"):
        server_command("transformers", model)
    assert server_command("vllm", model)[1].startswith(f"{model.resolve()}@")
