"""HTTP helpers for talking to a waypoint's listener on loopback (http.client, stdlib only)."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    sockname: tuple[str, int] | None = None  # local address of the client socket used
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def served_by(self) -> str | None:
        return self.headers.get("x-served-by")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _lower_headers(resp: http.client.HTTPResponse) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.getheaders()}


def request(port: int, path: str = "/", host: str = "reviews", headers: dict[str, str] | None = None,
            method: str = "GET", body: bytes | None = None, timeout: float = 10.0,
            address: str = "127.0.0.1") -> Response:
    """One request on a fresh connection (closed afterwards)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        all_headers = {"Host": host, **(headers or {})}
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, _lower_headers(resp), data)
    finally:
        conn.close()


class KeepAliveClient:
    """Requests over one persistent HTTP/1.1 connection. `request` refuses to silently reconnect:
    if the server closed the connection it raises, so tests can prove a connection survived."""

    def __init__(self, port: int, host: str = "reviews", timeout: float = 10.0, address: str = "127.0.0.1") -> None:
        self.host = host
        self.conn = http.client.HTTPConnection(address, port, timeout=timeout)
        self.conn.connect()
        self.sockname = self.conn.sock.getsockname()

    def request(self, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET",
                body: bytes | None = None) -> Response:
        if self.conn.sock is None or self.conn.sock.getsockname() != self.sockname:
            raise ConnectionError("the keep-alive connection was closed by the server")
        self.conn.request(method, path, body=body, headers={"Host": self.host, **(headers or {})})
        resp = self.conn.getresponse()
        data = resp.read()
        headers_out = _lower_headers(resp)
        if self.conn.sock is None:
            raise ConnectionError(f"server closed the keep-alive connection (status {resp.status})")
        return Response(resp.status, headers_out, data, self.sockname)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "KeepAliveClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def served_by_counts(port: int, n: int, host: str = "reviews", path: str = "/",
                     headers: dict[str, str] | None = None) -> Counter[str]:
    """Send `n` requests on fresh connections; count `x-served-by` (status codes other than 200 count
    as `"<status>"`)."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        resp = request(port, path, host=host, headers=headers)
        counts[resp.served_by if resp.status == 200 and resp.served_by else str(resp.status)] += 1
    return counts
