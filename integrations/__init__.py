"""Adapters of the core reasoner for retrieval stacks, imported as ``tongsearch_qr.integrations.<stack>``.

Each adapter imports its stack only when its own module is imported, so ``import tongsearch_qr``
never pulls in PyTerrier, LlamaIndex or Haystack.
"""

from __future__ import annotations

from typing import Any

from tongsearch_qr import QRReasoner


def core_reasoner(reasoner: QRReasoner | None, model: str | None, options: dict[str, Any]) -> QRReasoner:
    """The ready ``reasoner`` an adapter was given, or a :class:`tongsearch_qr.QRReasoner` built from
    ``model`` and ``options``; giving both is an error."""
    if reasoner is not None and (model is not None or options):
        raise ValueError("pass either a ready reasoner or model/options to build one, not both")
    return reasoner if reasoner is not None else QRReasoner(model, **options)
