"""The compiled (numba) hot path of bm25-bright: Lucene's StandardTokenizer on ASCII text, each distinct
token numbered once; merging those tokens with the JVM's; counting terms per document.

On ASCII, StandardTokenizer's word rules (Unicode UAX #29) come down to: letters, digits and ``_`` join;
``:`` ``.`` ``'`` join letter to letter; ``,`` ``;`` ``.`` ``'`` join digit to digit; every other character
breaks; a run of ``_`` alone is no token. Tokens over 255 characters, which Lucene splits, are not handled here:
their pieces are flagged for the JVM. :mod:`.lucene` proves this token-identical to Lucene and routes every
other text to the JVM.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - numba comes with the pyserini extra
    raise ImportError("bm25-bright needs numba: pip install 'tongsearch-qr[pyserini]'") from exc

#: Lucene's default maximum token length; longer tokens are split by Lucene, so they go to the JVM
MAX_TOKEN_LENGTH = 255
OTHER, LETTER, DIGIT, UNDERSCORE, MID_LETTER, MID_NUM, MID_NUM_LET = range(7)


def _classes() -> np.ndarray:
    """Word-break class of every byte (UAX #29 properties of the ASCII characters)."""
    table = np.full(256, OTHER, dtype=np.uint8)
    for chars, kind in (
        (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", LETTER),
        (b"0123456789", DIGIT),
        (b"_", UNDERSCORE),
        (b":", MID_LETTER),
        (b",;", MID_NUM),
        (b".'", MID_NUM_LET),
    ):
        table[list(chars)] = kind
    return table


CLASSES = _classes()
_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)


@njit(cache=True, nogil=True)
def _lower(byte: np.uint8) -> np.uint8:
    return byte + np.uint8(32) if np.uint8(65) <= byte <= np.uint8(90) else byte


@njit(cache=True, nogil=True)
def _same_token(pool, at, buf, start, length) -> bool:
    """Whether the token at ``buf[start:]`` is, lowercased, the one at ``pool[at:]`` (pool: small, in cache)."""
    for i in range(length):
        if pool[at + i] != _lower(buf[start + i]):
            return False
    return True


@njit(cache=True, nogil=True)
def _grow(table):
    """The hash table (rows: hash, token id, pool offset, length; id -1 = empty) at twice the size."""
    bigger = np.full((2 * len(table), 4), -1, dtype=np.int64)
    mask = np.uint64(len(bigger) - 1)
    for row in range(len(table)):
        if table[row, 1] >= 0:
            slot = np.uint64(table[row, 0]) & mask
            while bigger[slot, 1] >= 0:
                slot = (slot + np.uint64(1)) & mask
            bigger[slot, :] = table[row, :]
    return bigger


@njit(cache=True, nogil=True)
def _tokenize(buf, bounds, classes):
    """Tokens of the pieces ``buf[bounds[p]:bounds[p + 1]]``, as ids of distinct lowercased tokens.

    Returns the token ids in order, the number of tokens per piece, a flag per piece with a token longer than
    :data:`MAX_TOKEN_LENGTH` (its tokens are in the output; the caller replaces them), and the distinct
    tokens: lowercased bytes one after another, and where each ends.
    """
    pieces = len(bounds) - 1
    # a token is followed by a byte that is in no token, or by the end of its piece: a piece of n bytes holds
    # at most (n + 1) // 2 tokens (pieces are joined without a separator, so the bound is per piece)
    ids = np.empty(np.sum((bounds[1:] - bounds[:-1] + 1) // 2), dtype=np.int32)
    counts = np.zeros(pieces, dtype=np.int64)
    too_long = np.zeros(pieces, dtype=np.bool_)
    pool = np.empty(1 << 16, dtype=np.uint8)
    ends = np.zeros(1 << 12, dtype=np.int64)  # distinct token k is pool[ends[k]:ends[k + 1]]
    table = np.full((1 << 13, 4), -1, dtype=np.int64)
    distinct = total = 0
    for piece in range(pieces):
        i, end = bounds[piece], bounds[piece + 1]
        while i < end:
            kind = classes[buf[i]]
            if kind != LETTER and kind != DIGIT and kind != UNDERSCORE:
                i += 1
                continue
            j, word = i, False
            while j < end:
                kind = classes[buf[j]]
                if kind == LETTER or kind == DIGIT:
                    word = True
                    j += 1
                elif kind == UNDERSCORE:
                    j += 1
                elif j + 1 < end and kind >= MID_LETTER:
                    before, after = classes[buf[j - 1]], classes[buf[j + 1]]
                    if before == LETTER and after == LETTER and kind != MID_NUM:
                        j += 2
                    elif before == DIGIT and after == DIGIT and kind != MID_LETTER:
                        j += 2
                    else:
                        break
                else:
                    break
            if not word:
                i = j
                continue
            length = j - i
            if length > MAX_TOKEN_LENGTH:
                too_long[piece] = True
            h = _FNV_OFFSET
            for k in range(i, j):
                h = (h ^ np.uint64(_lower(buf[k]))) * _FNV_PRIME
            key = np.int64(h)
            mask = np.uint64(len(table) - 1)
            slot = h & mask
            while True:
                found = table[slot, 1]
                if found < 0:
                    found = distinct
                    at = ends[distinct]
                    if distinct + 1 == len(ends):
                        ends = np.concatenate((ends, np.zeros(len(ends), dtype=np.int64)))
                    while at + length > len(pool):
                        pool = np.concatenate((pool, np.empty(len(pool), dtype=np.uint8)))
                    for k in range(length):
                        pool[at + k] = _lower(buf[i + k])
                    ends[distinct + 1] = at + length
                    table[slot, 0], table[slot, 1], table[slot, 2], table[slot, 3] = key, found, at, length
                    distinct += 1
                    if 2 * distinct > len(table):
                        table = _grow(table)
                    break
                if table[slot, 0] == key and table[slot, 3] == length and _same_token(pool, table[slot, 2], buf, i, length):
                    break
                slot = (slot + np.uint64(1)) & mask
            ids[total] = found
            total += 1
            counts[piece] += 1
            i = j
    return ids[:total], counts, too_long, pool[: ends[distinct]], ends[: distinct + 1]


@njit(cache=True, nogil=True)
def _renumber(ids, new_ids):
    for k in range(len(ids)):
        ids[k] = new_ids[ids[k]]


def tokenize(buf: np.ndarray, bounds: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Tokens of the ASCII pieces ``buf[bounds[p]:bounds[p + 1]]`` as ids of distinct lowercased tokens.

    Returns the token ids in order, the number of tokens per piece, a flag per piece with a token longer than
    :data:`MAX_TOKEN_LENGTH` (its tokens are in the output; the caller replaces them), and the distinct tokens.
    The pieces are shared among ``workers`` threads, each numbering its own tokens, then renumbered as one.
    """
    from concurrent.futures import ThreadPoolExecutor

    pieces = len(bounds) - 1
    starts = np.unique(np.searchsorted(bounds[:-1], np.linspace(0, bounds[-1], max(1, workers) + 1)[:-1]))
    cuts = [*starts.tolist(), pieces] if pieces else [0, 0]
    with ThreadPoolExecutor(len(cuts) - 1) as pool:
        parts = list(pool.map(lambda a, b: _tokenize(buf, bounds[a : b + 1], CLASSES), cuts[:-1], cuts[1:]))
    numbers: dict[str, int] = {}
    all_ids = []
    for ids, _, _, chars, ends in parts:
        text = chars.tobytes().decode("ascii")
        tokens = [text[a:b] for a, b in zip(ends[:-1].tolist(), ends[1:].tolist())]
        _renumber(ids, np.fromiter((numbers.setdefault(t, len(numbers)) for t in tokens), dtype=np.int32, count=len(tokens)))
        all_ids.append(ids)
    return (
        np.concatenate(all_ids),
        np.concatenate([part[1] for part in parts]),
        np.concatenate([part[2] for part in parts]),
        list(numbers),
    )


@njit(cache=True, nogil=True)
def _ascii_whitespace(char) -> bool:
    return char == 32 or 9 <= char <= 13


@njit(cache=True, nogil=True)
def non_ascii_words(chars, bounds, most):
    """In each text ``chars[bounds[t]:bounds[t + 1]]`` (code points), the spans of its words that hold a
    non-ASCII character, each with the ASCII whitespace before it: (text, start, end), offsets within the
    text, at most ``most`` spans in all. Texts cut at these spans' edges (before ASCII whitespace, where
    UAX #29 always breaks and no rule looks across) give the same tokens piece by piece."""
    text_of = np.empty(most, dtype=np.int64)
    starts = np.empty(most, dtype=np.int64)
    ends = np.empty(most, dtype=np.int64)
    spans = 0
    for text in range(len(bounds) - 1):
        lo, hi = bounds[text], bounds[text + 1]
        at = i = lo
        while i < hi:
            if chars[i] < 128:
                i += 1
                continue
            start, end = i, i + 1
            while start > at and not _ascii_whitespace(chars[start - 1]):
                start -= 1
            while start > at and _ascii_whitespace(chars[start - 1]):
                start -= 1
            while end < hi and not _ascii_whitespace(chars[end]):
                end += 1
            text_of[spans], starts[spans], ends[spans] = text, start - lo, end - lo
            spans += 1
            at = i = end
    return text_of[:spans], starts[:spans], ends[:spans]


@njit(cache=True)
def weigh(indptr, indices, freqs, lengths, idfs, k1, b, avgdl):
    """gensim's LuceneBM25Model weights of CSR term counts (one row per text, of ``lengths`` terms):
    the same float64 operations in the same order, then float32, so bit-for-bit gensim's."""
    weights = np.empty(len(freqs), dtype=np.float32)
    for row in range(len(lengths)):
        if indptr[row] == indptr[row + 1]:
            continue  # no terms (avgdl may then be 0: a corpus of empty texts)
        norm = k1 * (1 - b + b * lengths[row] / avgdl)
        for k in range(indptr[row], indptr[row + 1]):
            weights[k] = idfs[indices[k]] * (freqs[k] / (freqs[k] + norm))
    return weights


#: where a piece's terms come from, for :func:`merge_pieces`
FAST, JVM, REDONE = 0, 1, 2  # REDONE: an ASCII piece (in the fast input) that the JVM analysed instead


@njit(cache=True)
def merge_pieces(fast_ids, fast_counts, term_of_id, jvm_terms, jvm_counts, source):
    """Final term ids of all pieces in order, and the number of terms per piece.

    FAST pieces take their token ids from :func:`tokenize`, mapped by ``term_of_id`` (-1 drops a stopword);
    JVM and REDONE pieces take ``jvm_terms`` in turn; only FAST and REDONE pieces are in the fast input.
    """
    out = np.empty(len(fast_ids) + len(jvm_terms), dtype=np.int32)
    per_piece = np.zeros(len(source), dtype=np.int64)
    fast_at = jvm_at = fast_piece = jvm_piece = total = 0
    for piece in range(len(source)):
        start = total
        if source[piece] == FAST:
            for k in range(fast_at, fast_at + fast_counts[fast_piece]):
                term = term_of_id[fast_ids[k]]
                if term >= 0:
                    out[total] = term
                    total += 1
        else:
            n = jvm_counts[jvm_piece]
            out[total : total + n] = jvm_terms[jvm_at : jvm_at + n]
            total += n
            jvm_at += n
            jvm_piece += 1
        if source[piece] != JVM:
            fast_at += fast_counts[fast_piece]
            fast_piece += 1
        per_piece[piece] = total - start
    return out[:total], per_piece


@njit(cache=True)
def first_documents(terms, lengths, vocabulary_size):
    """The first document each term occurs in (``len(lengths)`` for a term in none)."""
    first = np.full(vocabulary_size, len(lengths), dtype=np.int64)
    at = 0
    for doc in range(len(lengths)):
        for k in range(at, at + lengths[doc]):
            if first[terms[k]] > doc:
                first[terms[k]] = doc
        at += lengths[doc]
    return first


@njit(cache=True)
def count_terms(terms, lengths, vocabulary_size):
    """Term frequencies per document as CSR arrays (indptr, term indices in order of first occurrence in the
    document, float64 counts); transposing orders them."""
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    indices = np.empty(len(terms), dtype=np.int32)
    data = np.empty(len(terms), dtype=np.float64)
    slot = np.full(vocabulary_size, -1, dtype=np.int64)  # where a term of the current document is counted
    at = nnz = 0
    for doc in range(len(lengths)):
        start = nnz
        for k in range(at, at + lengths[doc]):
            term = terms[k]
            if slot[term] < start:
                slot[term] = nnz
                indices[nnz] = term
                data[nnz] = 0.0
                nnz += 1
            data[slot[term]] += 1.0
        at += lengths[doc]
        indptr[doc + 1] = nnz
    return indptr, indices[:nnz], data[:nnz]
