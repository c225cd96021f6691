"""A tiny threaded loopback HTTP server that dispatches to ``handle(method, path, query, headers, body)``."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, dict[str, str], bytes]


class LoopbackServer:
    """Base class: subclasses implement :meth:`handle`; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []  # every request: method, path, headers, body
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k: v for k, v in self.headers.items()}
                with outer.lock:
                    outer.log.append(
                        {"method": method, "path": parts.path, "headers": headers, "body": body, "t": time.monotonic()}
                    )
                try:
                    status, out_headers, payload = outer.handle(
                        method, parts.path, parse_qs(parts.query), headers, body)
                except Exception as err:  # a bug in the fake: answer 500 with the reason
                    status, out_headers, payload = 500, {"Content-Type": "text/plain"}, repr(err).encode()
                self.send_response(status)
                out_headers = {"Content-Length": str(len(payload)), **out_headers}
                for k, v in out_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_HEAD(self) -> None:
                self._serve("HEAD")

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        raise NotImplementedError

    def requests_to(self, path_part: str) -> list[dict[str, Any]]:
        """Logged requests whose path contains ``path_part``."""
        with self.lock:
            return [r for r in self.log if path_part in r["path"]]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
