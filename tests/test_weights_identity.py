"""What the reasoning, merge and GGUF caches are keyed by: a whole-content hash of every weight file, read once per
file across processes, and a hub model's commit, the same before and after it is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tongsearch_qr import ModelNotAvailableError, models

MIB = 1 << 20


@pytest.fixture
def user_cache(monkeypatch, tmp_path):
    """A fresh user cache (file-hash memo included) and an empty in-process memo."""
    from tongsearch_qr import file_hashes

    monkeypatch.setenv("TONGSEARCH_QR_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setattr(file_hashes, "_known", {})
    return tmp_path / "user-cache"


def _model_dir(path, weights: bytes):
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_any_change_to_a_large_weight_file_changes_the_identity(tmp_path, user_cache):
    """256 KiB rewritten between the blocks a sampling hash would read (40 MiB file) must give a new identity."""
    folder = _model_dir(tmp_path / "model", os.urandom(40 * MIB))
    before = models.resolve_model(folder).identity()
    with (folder / "model.safetensors").open("r+b") as handle:
        handle.seek(10 * (40 * MIB) // 63 + 200 * 1024)  # after the 11th of 64 evenly spaced 64 KiB blocks
        handle.write(os.urandom(256 * 1024))
    assert (folder / "model.safetensors").stat().st_size == 40 * MIB
    assert models.resolve_model(folder).identity() != before
    assert models.file_fingerprint(folder / "model.safetensors") != before.rpartition("@")[2]


def test_a_rewrite_that_keeps_size_and_modification_time_is_seen(tmp_path, user_cache):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 4096)
    stat = file.stat()
    first = models.file_fingerprint(file)
    file.write_bytes(b"b" * 4096)  # within the clock tick, often: the stamp is then as it was, but too young to trust
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert models.file_fingerprint(file) != first


def test_a_same_size_rewrite_within_one_timestamp_tick_is_read_again(tmp_path, user_cache, monkeypatch):
    """On a file system whose timestamps tick by the second (ext3, HFS+, many network mounts), a rewrite of the same
    size within that second leaves every field of the stamp as it was: a stamp younger than 2 s is not trusted
    (git's racily-clean rule), and one old enough is remembered."""
    import hashlib
    from pathlib import Path
    from types import SimpleNamespace

    from tongsearch_qr import file_hashes

    real_stat = Path.stat

    def coarse_stat(path, *args, **kwargs):  # both times in whole seconds, as such a file system keeps them
        info = real_stat(path, *args, **kwargs)
        tick = info.st_mtime_ns // 10**9 * 10**9
        return SimpleNamespace(
            st_mode=info.st_mode,
            st_dev=info.st_dev,
            st_ino=info.st_ino,
            st_size=info.st_size,
            st_mtime_ns=tick,
            st_ctime_ns=tick,
            st_mtime=tick / 1e9,
            st_ctime=tick / 1e9,
        )

    second = 1_700_000_000
    file = tmp_path / "weights.bin"

    def write(content: bytes) -> None:
        file.write_bytes(content)
        os.utime(file, ns=(second * 10**9 + 300_000_000,) * 2)

    monkeypatch.setattr(Path, "stat", coarse_stat)
    monkeypatch.setattr(time, "time", lambda: second + 0.6)  # just after both writes
    write(b"a" * 64)
    assert file_hashes.hash_file_sha256(file) == hashlib.sha256(b"a" * 64).hexdigest()
    write(b"b" * 64)
    assert file_hashes.hash_file_sha256(file) == hashlib.sha256(b"b" * 64).hexdigest()

    monkeypatch.setattr(time, "time", lambda: second + 60)  # a minute on: the stamp is old enough to remember
    reads = []
    real = file_hashes._read_digest
    monkeypatch.setattr(file_hashes, "_read_digest", lambda path: (reads.append(path.name), real(path))[1])
    assert {file_hashes.hash_file_sha256(file) for _ in range(2)} == {hashlib.sha256(b"b" * 64).hexdigest()}
    assert reads == ["weights.bin"]


def test_weights_are_read_once_across_processes_until_they_change(tmp_path, user_cache, monkeypatch):
    """One process hashes the weights; another gets the digest from the memo in the user cache without reading.
    Both run a minute after the weights were written (their clocks moved on), so the stamps are old enough to trust."""
    from tongsearch_qr import file_hashes

    folder = _model_dir(tmp_path / "model", os.urandom(3 * MIB))
    later = time.time() + 60
    monkeypatch.setattr(time, "time", lambda: later)
    code = (
        "import sys, time; time.time = lambda: float(sys.argv[2]); from tongsearch_qr.models import resolve_model; "
        "print(resolve_model(sys.argv[1]).identity())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(later)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TONGSEARCH_QR_CACHE": str(user_cache)},
    )
    assert other.returncode == 0, other.stderr
    assert (user_cache / file_hashes.MEMO_FILE).is_file()
    reads = []
    real = file_hashes._read_digest
    monkeypatch.setattr(file_hashes, "_read_digest", lambda path: (reads.append(path.name), real(path))[1])
    assert models.resolve_model(folder).identity() == other.stdout.strip()
    assert reads == []
    (folder / "model.safetensors").write_bytes(os.urandom(3 * MIB))
    assert models.resolve_model(folder).identity() != other.stdout.strip()
    assert reads == ["model.safetensors"]


def test_an_unusable_memo_costs_a_warning_not_a_wrong_digest(tmp_path, user_cache, caplog, monkeypatch):
    import hashlib

    user_cache.mkdir()
    (user_cache / "file-hashes.sqlite").write_bytes(b"not a database" * 100)
    file = tmp_path / "weights.bin"
    file.write_bytes(b"weights")
    later = time.time() + 60
    monkeypatch.setattr(time, "time", lambda: later)  # a stamp old enough to look up in the memo
    assert models.file_fingerprint(file) == hashlib.sha256(b"weights").hexdigest()[:16]
    assert "file-hash memo" in caplog.text and "not usable" in caplog.text


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A Hugging Face cache in ``tmp_path`` and a hub that "downloads" into it: returns the list of downloads."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "hub_unreachable", lambda: None)
    downloads = []

    def download(repo_id, filename, **kwargs):
        downloads.append((repo_id, filename))
        repo = tmp_path / "hf-cache" / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(COMMIT)
        (repo / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / COMMIT / filename).write_text("{}")
        return str(repo / "snapshots" / COMMIT / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return downloads


def test_a_hub_model_is_keyed_by_its_commit_before_and_after_download(fake_hub):
    source = models.resolve_model("owner/base-model")
    before = source.identity()
    assert before == f"owner/base-model@{COMMIT}" and fake_hub == [("owner/base-model", "config.json")]
    assert source.identity() == before and len(fake_hub) == 1  # now found in the local cache


def test_an_adapter_of_a_hub_base_is_merged_once(fake_hub, tmp_path, user_cache, monkeypatch):
    """The first merge downloads the base; the next load must find that merge, not merge again."""
    import huggingface_hub

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "owner/base-model"}))
    merges = []

    def merge(adapter_dir, base, out_dir):  # what loading the base does: download it into the HF cache
        merges.append(base.model_id)
        for name in ("config.json", "model.safetensors"):
            huggingface_hub.hf_hub_download(base.path, name)
            (out_dir / name).write_text("{}")

    monkeypatch.setattr(models, "_merge_adapter", merge)
    first = models.merged_adapter_dir(adapter)
    assert models.merged_adapter_dir(adapter) == first and merges == ["owner/base-model"]


def test_an_uncached_hub_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError, match="not in the local Hugging Face cache"):
        models.resolve_model("owner/missing-model").identity()
