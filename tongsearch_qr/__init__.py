"""tongsearch-qr: reinforced query reasoning for the retrieval stacks people already use.

A small LLM writes out the reasoning an expert would do for a hard question; that text goes to BM25
or a dense retriever instead of (or with) the question. Importing this package loads no ML or
retrieval framework; backends import their libraries when first used.
"""

from .cache import ReasoningCache
from .errors import (
    BackendUnavailableError,
    DataNotAvailableError,
    InputFormatError,
    InvalidQueryError,
    MissingReasoningError,
    ModelNotAvailableError,
    ReasoningTimeoutError,
    RequestRejectedError,
    TongSearchError,
)
from .generation import GenerationParams
from .modes import RewriteMode, get_mode
from .prompts import PAPER_USER_TEMPLATE, THINK_SYSTEM_PROMPT, PromptTemplate
from .reasoner import QRReasoner

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "DataNotAvailableError",
    "PAPER_USER_TEMPLATE",
    "THINK_SYSTEM_PROMPT",
    "GenerationParams",
    "InputFormatError",
    "InvalidQueryError",
    "MissingReasoningError",
    "ModelNotAvailableError",
    "PromptTemplate",
    "QRReasoner",
    "ReasoningCache",
    "ReasoningTimeoutError",
    "RequestRejectedError",
    "RewriteMode",
    "TongSearchError",
    "get_mode",
]
