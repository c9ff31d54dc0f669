"""The benchmark's Python origin: a threaded HTTP/1.1 server with keep-alive.

    python bench_origin.py PORT WWW [DELAY]

- ``GET /c/<name>``: the bytes of ``WWW/c/<name>`` (read once at start), ``max-age=3600``;
  ``/nostore/<name>`` the same from ``WWW/nostore`` with ``no-store``; ``/big/<name>``
  streamed from ``WWW/big/<name>`` in 1 MiB blocks, ``max-age=3600``. Used only when
  nginx is not installed (nginx serves these otherwise).
- ``GET /slow/<anything>``: 1 KiB after DELAY seconds (0.5), ``max-age=3600``; each request
  is counted per path.
- ``GET /_count?p=<path>``: how many requests ``/slow/<path>`` received.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_counts: dict[str, int] = {}
_counts_lock = threading.Lock()
_files: dict[str, tuple[bytes, str]] = {}
_big: dict[str, Path] = {}
_delay = 0.5
_started = formatdate(time.time(), usegmt=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, cache_control: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        self.send_header("Last-Modified", _started)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_count":
            path = parse_qs(parts.query).get("p", [""])[0]
            with _counts_lock:
                count = _counts.get(path, 0)
            self._send(200, str(count).encode(), "no-store")
        elif parts.path.startswith("/slow/"):
            with _counts_lock:
                _counts[parts.path] = _counts.get(parts.path, 0) + 1
            time.sleep(_delay)
            self._send(200, b"s" * 1024, "max-age=3600")
        elif parts.path in _files:
            self._send(200, *_files[parts.path])
        elif parts.path in _big:
            self._send_file(_big[parts.path])
        else:
            self._send(404, b"not found", "no-store")

    do_HEAD = do_GET

    def _send_file(self, path: Path) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Last-Modified", _started)
        self.end_headers()
        if self.command != "HEAD":
            with path.open("rb") as file:
                shutil.copyfileobj(file, self.wfile, 1 << 20)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main(argv: list[str]) -> None:
    global _delay  # noqa: PLW0603 - set once, before serving
    port, www = int(argv[1]), Path(argv[2])
    _delay = float(argv[3]) if len(argv) > 3 else 0.5
    for sub, cache_control in (("c", "max-age=3600"), ("nostore", "no-store")):
        folder = www / sub
        if folder.is_dir():
            for file in folder.iterdir():
                _files[f"/{sub}/{file.name}"] = (file.read_bytes(), cache_control)
    if (www / "big").is_dir():
        for file in (www / "big").iterdir():
            _big[f"/big/{file.name}"] = file
    _Server(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv)
