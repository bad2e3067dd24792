"""Where tongsearch-qr keeps converted models and reasoning caches."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TONGSEARCH_QR_CACHE"


def cache_root() -> Path:
    """``$TONGSEARCH_QR_CACHE`` if set, else the platform's user cache directory for tongsearch-qr."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("tongsearch-qr")


def default_reasoning_cache() -> Path:
    """The SQLite reasoning cache the CLI uses unless told otherwise."""
    return cache_root() / "reasoning.sqlite"
