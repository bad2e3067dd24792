"""Whole-file sha256 digests of model files, each file read once.

A digest is remembered with what identifies the file's content on disk: its resolved path, device, inode, size and
modification and change times (the change time moves on every write, even one that restores the modification
time). A stamp younger than :data:`RACY_SECONDS` is neither trusted nor remembered, as git treats a "racily clean"
file: on a file system whose timestamps tick coarsely, a rewrite of the same size within the tick keeps every field
of the stamp. The memo is a small SQLite table in the user cache (:func:`~tongsearch_qr.paths.cache_root`), so a 7B
model's weights are hashed once across processes, and again only when a file changes. A memo that cannot be read
or written costs a warning and a re-hash, never a wrong digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from .errors import ModelNotAvailableError
from .paths import cache_root

log = logging.getLogger(__name__)

MEMO_FILE = "file-hashes.sqlite"
_CHUNK = 8 << 20
_ATTEMPTS = 3
#: a file changed (modification or change time) less than this many seconds ago is hashed without the memo
RACY_SECONDS = 2.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    stamp TEXT NOT NULL,
    sha256 TEXT NOT NULL
)
"""
_known: dict[tuple[str, str], str] = {}  # (path, stamp) -> digest, for this process
_memo_failures: set[str] = set()  # memo files already warned about


def hash_file_sha256(file: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of ``file``'s whole content, read only if the memo has none for the file as it is now.
    A file that changes while it is read is read again (an error after three tries)."""
    path = Path(file).resolve()
    for _ in range(_ATTEMPTS):
        info = path.stat()
        stamp = _stamp(info)
        racy = time.time() - max(info.st_mtime_ns, info.st_ctime_ns) / 1e9 < RACY_SECONDS
        digest = None if racy else _known.get((str(path), stamp)) or _remembered(path, stamp)
        if digest is None:
            digest = _read_digest(path)
            if _stamp(path.stat()) != stamp:
                continue
            if not racy:
                _remember(path, stamp, digest)
        if not racy:
            _known[(str(path), stamp)] = digest
        return digest
    raise ModelNotAvailableError(
        f"{path} kept changing while it was being hashed: wait until whatever writes it is done, then load it again"
    )


def _stamp(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def _read_digest(path: Path) -> str:
    digest, buffer = hashlib.sha256(), bytearray(_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def _memo_path() -> Path:
    return cache_root() / MEMO_FILE


def _connect() -> sqlite3.Connection:
    memo = _memo_path()
    memo.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(memo, timeout=30)
    conn.execute(_SCHEMA)
    return conn


def _remembered(path: Path, stamp: str) -> str | None:
    try:
        with closing(_connect()) as conn:
            row = conn.execute("SELECT sha256 FROM file_hashes WHERE path = ? AND stamp = ?", (str(path), stamp)).fetchone()
    except (sqlite3.Error, OSError) as exc:
        _warn(exc)
        return None
    return row[0] if row else None


def _remember(path: Path, stamp: str, digest: str) -> None:
    try:
        with closing(_connect()) as conn, conn:
            conn.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?)", (str(path), stamp, digest))
    except (sqlite3.Error, OSError) as exc:
        _warn(exc)


def _warn(exc: Exception) -> None:
    memo = str(_memo_path())
    if memo not in _memo_failures:
        _memo_failures.add(memo)
        log.warning(
            "the file-hash memo %s is not usable (%s): model files are hashed again in each process until it is moved away",
            memo,
            exc,
        )
