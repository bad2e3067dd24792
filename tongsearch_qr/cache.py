"""A persistent reasoning cache in SQLite, safe to share between threads and processes.

Each completion is stored under a key that hashes the model identity, the prompt template, the
generation parameters and the query, and is committed as soon as it is produced: a run killed at
any point keeps everything it finished, and a restart recomputes none of it. The first completion
written under a key stays: a second process that sampled the same query gets the stored one back, so
results already reported never change. Each process (and thread) opens its own connection; none
crosses ``fork()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import CacheError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reasoning (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    query TEXT NOT NULL,
    completion TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def config_key(config: Mapping[str, object]) -> str:
    """A stable hash of a JSON-serialisable configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def item_key(config_hash: str, query: str) -> str:
    """The cache key of one query under one configuration."""
    return hashlib.sha256(f"{config_hash}\x00{query}".encode()).hexdigest()


class ReasoningCache:
    """Completions by (configuration, query), in one SQLite file (WAL mode, one connection per thread)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise IsADirectoryError(f"reasoning cache path {self.path} is a directory; give a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []  # a parent's connections, kept open but never used
        with self._connection() as conn:
            conn.execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: the parent's connections must not be used (nor closed) here
            inherited = getattr(self._local, "conn", None)
            if inherited is not None:
                self._inherited.append(inherited)
            self._local, self._pid = threading.local(), os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise CacheError(
                    f"{self.path} is not a usable reasoning cache ({exc}): move it away, or use another cache file (cache=PATH)",
                    cli=f"{self.path} is not a usable reasoning cache ({exc}): move it away, or pass --cache PATH or --no-cache",
                ) from exc
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, config_hash: str, queries: Iterable[str]) -> dict[str, str]:
        """Cached completions of ``queries`` under ``config_hash``, by query (missing ones left out)."""
        by_key = {item_key(config_hash, q): q for q in queries}
        found: dict[str, str] = {}
        keys = list(by_key)
        conn = self._connection()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = conn.execute(f"SELECT key, completion FROM reasoning WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update({by_key[key]: completion for key, completion in rows})
        return found

    def put_many(self, config_hash: str, items: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Store ``(query, completion)`` pairs and commit at once; a key already stored keeps its first
        completion. Returns the stored completion of each query (its own, or the earlier one)."""
        now = time.time()
        rows = [(item_key(config_hash, q), config_hash, q, c, now) for q, c in items]
        if not rows:
            return {}
        conn = self._connection()
        with conn:
            conn.executemany("INSERT OR IGNORE INTO reasoning VALUES (?, ?, ?, ?, ?)", rows)
        return self.get_many(config_hash, [row[2] for row in rows])

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM reasoning").fetchone()[0]

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
