"""Adapters of the core reasoner for retrieval stacks, imported as ``tongsearch_qr.integrations.<stack>``.

Each adapter imports its stack only when its own module is imported, so ``import tongsearch_qr``
never pulls in PyTerrier, LlamaIndex or Haystack.

An adapter sits on a search request's path, so a reasoner it builds sends the question alone when reasoning fails
or is late (``on_error="question"``, see :class:`tongsearch_qr.QRReasoner`) unless told otherwise; ``timeout``
bounds each call (default: none).
"""

from __future__ import annotations

from typing import Any

from tongsearch_qr import QRReasoner

#: what a reasoner an adapter builds does when reasoning fails or is late: search goes on with the question
ADAPTER_ON_ERROR = "question"
#: reasoner options that may also change a ready reasoner (for this adapter only)
SERVING_OPTIONS = ("on_error", "timeout")


def core_reasoner(reasoner: QRReasoner | None, model: str | None, options: dict[str, Any]) -> QRReasoner:
    """The ready ``reasoner`` an adapter was given (a copy with ``on_error``/``timeout`` changed where the options
    give them), or a :class:`tongsearch_qr.QRReasoner` built from ``model`` and ``options``, with
    ``on_error="question"`` unless they say otherwise; giving both is an error."""
    serving = {key: options[key] for key in SERVING_OPTIONS if key in options}
    others = {key: value for key, value in options.items() if key not in SERVING_OPTIONS}
    if reasoner is not None and (model is not None or others):
        raise ValueError("pass either a ready reasoner or model/options to build one, not both")
    if reasoner is None:
        return QRReasoner(model, **{"on_error": ADAPTER_ON_ERROR, **serving}, **others)
    return reasoner.with_(**serving) if serving else reasoner
