"""Griffe extension (mkdocs.yml, mkdocstrings' ``extensions``): the code's docstrings are written with reST roles
(``:class:`QRReasoner```, ``:func:`~tongsearch_qr.fusion.fused_search```) and literal blocks (``text::``), which
Markdown shows as they are. Each role becomes a code span of its target (``~`` keeps the last name, as Sphinx does),
and a paragraph's closing ``::`` a single colon."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"(\S)::$", re.MULTILINE)


def markdown_of(text: str) -> str:
    text = ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)
    return LITERAL_BLOCK.sub(r"\1:", text)


class ReSTRoles(griffe.Extension):
    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
