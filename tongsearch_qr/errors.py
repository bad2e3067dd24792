"""Exceptions raised by tongsearch-qr."""

from __future__ import annotations


class TongSearchError(Exception):
    """Base class of the package's errors. ``cli`` words the same message for the command line (its flags
    instead of Python arguments); :meth:`cli_message` returns it, or the message itself."""

    def __init__(self, *args: object, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli

    def cli_message(self) -> str:
        return self.cli or str(self)


class InvalidQueryError(TongSearchError, ValueError):
    """One or more queries are empty, missing or not text. ``positions`` lists their indices."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.positions = [i for i, _ in problems]
        shown = "; ".join(f"#{i}: {why}" for i, why in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{len(problems)} invalid quer{'y' if len(problems) == 1 else 'ies'}: {shown}{more}")


class MissingReasoningError(TongSearchError, KeyError):
    """A precomputed reasoning file has no entry for a query."""

    def __init__(self, queries: list[str], source: str):
        self.queries = queries
        shown = "; ".join(repr(q[:100]) for q in queries[:3])
        more = f" (and {len(queries) - 3} more)" if len(queries) > 3 else ""
        missing = f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} not in {source}: {shown}{more}. "
        super().__init__(
            missing + "Pass fallback=<model> to QRReasoner.from_file to generate missing ones.",
            cli=missing + "Pass --fallback MODEL (e.g. --fallback default) to generate missing ones.",
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ModelNotAvailableError(TongSearchError, OSError):
    """Model weights could not be found locally nor downloaded."""


class CacheError(TongSearchError, OSError):
    """The reasoning cache file cannot be used."""


class InputFormatError(TongSearchError, ValueError):
    """A query file is missing, empty or malformed."""


class DataNotAvailableError(TongSearchError, OSError):
    """A data set (or one of its splits) is neither available locally nor reachable on the hub."""


class BackendUnavailableError(TongSearchError, ConnectionError):
    """A generation server could not be reached, kept failing, or refused a request."""


class RequestRejectedError(BackendUnavailableError):
    """A server refused some requests for what they hold (HTTP 400, 413 or 422) while it answered the others, which
    finished. ``rejected`` maps each refused question to the server's answer; ``total``: the questions asked."""

    def __init__(self, rejected: dict[str, str], total: int):
        self.rejected = dict(rejected)
        shown = "; ".join(f"{q[:100]!r}: {why}" for q, why in list(self.rejected.items())[:5])
        more = f" (and {len(self.rejected) - 5} more)" if len(self.rejected) > 5 else ""
        super().__init__(
            f"the server rejected the requests of {len(self.rejected)} of {total} questions, so these have "
            f"no reasoning: {shown}{more}. The other questions finished (and are in the reasoning cache, "
            "if one is used); fix or leave out these and rerun"
        )


class ReasoningTimeoutError(TongSearchError, TimeoutError):
    """Reasoning did not finish within its time budget (``timeout=``). The late completions are still generated and
    cached as they finish, so a later call finds them."""

    def __init__(self, late: int, total: int, timeout: float):
        self.late, self.total, self.timeout = late, total, timeout
        super().__init__(
            f"the reasoning of {late} of {total} queries did not finish within {timeout:g} s; it goes on "
            "and is cached as it finishes (on_error='question' sends the question instead)"
        )
