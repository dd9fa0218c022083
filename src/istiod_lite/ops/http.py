"""A minimal asyncio HTTP/1.1 server for the operations endpoints (/healthz/ready, /debug/*, /metrics).

Stdlib only: GET requests, one response per connection (Connection: close). Handlers are plain
callables `(query: dict[str, str]) -> Response`, registered by path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @staticmethod
    def json(data: Any, status: int = 200) -> "Response":
        return Response(status, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", "application/json")

    @staticmethod
    def text(text: str, status: int = 200) -> "Response":
        return Response(status, text.encode())


Handler = Callable[[dict[str, str]], Response]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


class HttpServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # skip headers
                h = await asyncio.wait_for(reader.readline(), 10)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            if len(parts) < 2:
                resp = Response.text("bad request\n", 400)
            elif parts[0] not in ("GET", "HEAD"):
                resp = Response.text("only GET\n", 405)
            else:
                url = urlsplit(parts[1])
                handler = self.routes.get(url.path)
                if handler is None:
                    resp = Response.text("not found; try " + ", ".join(sorted(self.routes)) + "\n", 404)
                else:
                    try:
                        resp = handler(dict(parse_qsl(url.query)))
                    except Exception:  # a bug in a debug handler must not take the server down
                        log.exception("handler for %s failed", url.path)
                        resp = Response.text("internal error\n", 500)
            head = (f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}\r\n"
                    f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + (resp.body if parts and parts[0] != "HEAD" else b""))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
