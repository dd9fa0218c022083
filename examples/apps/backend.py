#!/usr/bin/env python3
"""A tiny HTTP/1.1 echo backend for the demo and the end-to-end tests (standard library only, asyncio).

    python examples/apps/backend.py --name reviews-v1 --port 19081 [--host 127.0.0.1]

Every response is JSON {"service", "path", "method", "headers", "query"} with the header
`x-served-by: <name>`. Keep-alive is supported (HTTP/1.1 default). Behaviours driven by request headers,
so tests can use them through Envoy:

- `x-fail-first: K` with `x-fail-key: ID`: the first K requests carrying that key get 503, later ones 200;
- `x-delay-ms: D`: sleep D milliseconds before answering;
- `x-status: S`: answer with status S.

`GET /_stats` returns {"service", "total", "paths": {path: count}} (requests to /_stats are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

MAX_HEADER_BYTES = 64 * 1024


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.paths: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # x-fail-key -> failures already served

    def stats(self) -> dict:
        return {"service": self.name, "total": sum(self.paths.values()), "paths": dict(self.paths)}

    async def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict]:
        url = urlsplit(target)
        if url.path == "/_stats":
            return 200, self.stats()
        self.paths[url.path] += 1
        delay_ms = _int(headers.get("x-delay-ms"), 0)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        status = _int(headers.get("x-status"), 200)
        fail_first = _int(headers.get("x-fail-first"), 0)
        if fail_first > 0:
            key = headers.get("x-fail-key", "")
            if self.failures[key] < fail_first:
                self.failures[key] += 1
                status = 503
        body = {
            "service": self.name,
            "path": url.path,
            "method": method,
            "headers": headers,
            "query": dict(parse_qsl(url.query, keep_blank_values=True)),
        }
        return status, body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    break
                method, target, version, headers = head
                await _read_body(reader, headers)
                status, body = await self.answer(method, target, headers)
                keep_alive = _keep_alive(version, headers)
                payload = json.dumps(body, sort_keys=True).encode()
                reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
                lines = [
                    f"HTTP/1.1 {status} {reason}",
                    "content-type: application/json",
                    f"content-length: {len(payload) if method != 'HEAD' else 0}",
                    f"x-served-by: {self.name}",
                    "connection: keep-alive" if keep_alive else "connection: close",
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD":
                    writer.write(payload)
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, str, dict[str, str]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise ValueError("request head too large") from exc
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return method, target, version, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # trailers are not supported: expect the final CRLF
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = _int(headers.get("content-length"), 0)
    return await reader.readexactly(length) if length > 0 else b""


async def serve(name: str, host: str, port: int) -> None:
    backend = Backend(name)
    server = await asyncio.start_server(backend.handle, host, port, limit=MAX_HEADER_BYTES)
    bound = server.sockets[0].getsockname()
    print(f"{name} listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.name, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
