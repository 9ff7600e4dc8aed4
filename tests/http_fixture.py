"""A tiny HTTP file server on 127.0.0.1 for download tests, with scripted misbehaviour.

Each Route serves bytes and honours `Range: bytes=N-` (206 + Content-Range, 416 past the end).
Per request it can: cut the connection after some bytes (`cut_after`), stall before the body
(`stall_s`), ignore Range (`ignore_range`), or serve other bytes (`bodies`).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    data: bytes
    cut_after: list[int | None] = field(default_factory=list)  # per request; None = no cut
    bodies: list[bytes | None] = field(default_factory=list)  # per request; None = `data`
    stall_s: float = 0.0
    ignore_range: bool = False
    status: int = 200


@dataclass
class Hit:
    path: str
    method: str
    range: str | None
    status: int = 0


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                server._serve(self, body=False)

            def do_GET(self) -> None:
                server._serve(self, body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def gets(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path and h.method == "GET"]

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        hit = Hit(h.path, h.command, h.headers.get("Range"))
        self.hits.append(hit)
        route = self.routes.get(h.path)
        if route is None or route.status != 200:
            hit.status = 404 if route is None else route.status
            h.send_response(hit.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        n = len(self.gets(h.path)) - 1 if body else -1
        data = route.data
        if 0 <= n < len(route.bodies) and route.bodies[n] is not None:
            data = route.bodies[n]
        start = 0
        m = re.match(r"bytes=(\d+)-$", hit.range or "")
        if m and not route.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                hit.status = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            hit.status = 206
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            hit.status = 200
            h.send_response(200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if not body:
            return
        if route.stall_s:
            time.sleep(route.stall_s)
        payload = data[start:]
        cut = route.cut_after[n] if 0 <= n < len(route.cut_after) else None
        if cut is not None:
            h.wfile.write(payload[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # a cut cable: the client sees the stream end early
            return
        try:
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
