"""A small real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for the openai backend's tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: a script entry: close the connection without a reply
DROP = object()
Reply = tuple[int, dict[str, str], str]


class Sleep:
    """A script entry: wait ``seconds``, then answer normally (a busy server)."""

    def __init__(self, seconds: float):
        self.seconds = seconds


def echo_completion(body: dict) -> Reply:
    """A chat completion echoing the end of the question; like vLLM, choice j of a seeded request is drawn with
    seed + j (so the text names that seed)."""
    question = body["messages"][-1]["content"]
    texts = [f"re: {question[-20:]}" + (f" #{body['seed'] + j}" if "seed" in body else "") for j in range(body.get("n", 1))]
    reply = {
        "choices": [{"index": j, "message": {"role": "assistant", "content": t}} for j, t in reversed(list(enumerate(texts)))]
    }
    return 200, {}, json.dumps(reply)


class ScriptedServer:
    """Answers each POST with the next scripted entry ((status, headers, body), ``DROP`` or ``Sleep``), else with
    ``rule(body)`` when it returns a reply, else with :func:`echo_completion`. ``GET /v1/models`` lists ``models``
    (entries such as ``{"id": "m", "max_model_len": 512}``). ``port``: where to listen (default: a free one; give a
    closed server's port to bring it back at the same URL)."""

    def __init__(
        self,
        script: list | None = None,
        *,
        models: list[dict] | None = None,
        rule: Callable[[dict], Reply | None] | None = None,
        port: int = 0,
    ):
        self.script = list(script or [])
        self.models = list(models or [])
        self.rule = rule
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._send(200, {}, json.dumps({"object": "list", "data": outer.models}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                entry = outer.script.pop(0) if outer.script else None
                if entry is DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(entry, Sleep):
                    time.sleep(entry.seconds)
                    entry = None
                reply = entry or (outer.rule(body) if outer.rule else None) or echo_completion(body)
                try:
                    self._send(*reply)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    pass

            def _send(self, status, headers, text):
                data = text.encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Servers:
    """Starts scripted servers and closes them all at the end (``scripted`` fixtures)."""

    def __init__(self):
        self.started: list[ScriptedServer] = []

    def __call__(self, script: list | None = None, **options) -> ScriptedServer:
        self.started.append(ScriptedServer(script, **options))
        return self.started[-1]

    def close(self):
        for server in self.started:
            server.close()
