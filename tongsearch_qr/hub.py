"""Reachability of the Hugging Face hub, so offline use fails in seconds with a clear message."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_offline() -> bool:
    """Whether the user switched the hub off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in {"1", "true", "yes"}


def hub_unreachable(endpoint: str | None = None, timeout: float = 5.0) -> OSError | None:
    """Why the hub cannot be reached, or ``None``: a quick TCP probe (skipped behind a proxy)."""
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
    except OSError as exc:
        return OSError(f"cannot connect to {url.hostname}: {exc}")
    return None
