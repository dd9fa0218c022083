"""The timed client of bench/hbone.py: sequential HTTP/1.1 GETs on raw sockets (TCP_NODELAY, one prebuilt
request, Content-Length framing: almost no Python between the send and the last byte), and the interleaved
schedule that runs them.

Interleaving: ``rounds`` rounds; in each, one batch of ``batch`` sequential requests per (path, connection
mode), the order shuffled every round (seeded), so machine noise (other processes on the shared cores) hits
every row alike. A kept-alive batch opens its connection with one untimed request first; a new-connection
batch opens, requests and closes a connection per request (the close is outside the timing, as with
http.client). Returned samples are seconds per request, per (path, mode), plus each round's median per
(path, mode) for paired per-round differences.
"""

from __future__ import annotations

import random
import socket
import statistics
import time
from typing import Sequence

KEPT, NEW, PAUSED = "kept-alive", "new connection", "new connection, paused"
MODES = (KEPT, NEW)
PAUSE = 0.002  # PAUSED: idle time after each close (outside the timing) so the teardown is not in the next request


def _request(host: str, path: str = "/bench") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hbone-bench\r\n\r\n".encode()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _exchange(s: socket.socket, request: bytes) -> int:
    """Send `request`, read one response (Content-Length framed); returns the status code."""
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed after {len(data)} bytes")
        data += chunk
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            continue
        length = None
        for line in data[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length is None:
            raise RuntimeError("response without content-length")
        if len(data) - head_end - 4 >= length:
            return int(data.split(b" ", 2)[1])


def batch(port: int, n: int, mode: str, host: str = "reviews") -> list[float]:
    request = _request(host)
    out = []
    if mode == KEPT:
        with _connect(port) as s:
            _check(_exchange(s, request))  # untimed: the connection (and any upstream one) is up
            for _ in range(n):
                t = time.perf_counter()
                status = _exchange(s, request)
                out.append(time.perf_counter() - t)
                _check(status)
        return out
    for _ in range(n):
        t = time.perf_counter()
        s = _connect(port)
        status = _exchange(s, request)
        out.append(time.perf_counter() - t)
        s.close()
        _check(status)
        if mode == PAUSED:
            time.sleep(PAUSE)
    return out


def _check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"status {status}")


def interleaved(paths: dict[str, int], rounds: int, n: int, seed: int = 8,
                modes: Sequence[str] = MODES) -> tuple[dict, dict]:
    """-> (samples[(label, mode)] = all seconds, per_round[(label, mode)] = each round's median)."""
    rng = random.Random(seed)
    keys = [(label, mode) for label in paths for mode in modes]
    samples: dict = {k: [] for k in keys}
    per_round: dict = {k: [] for k in keys}
    for _ in range(rounds):
        rng.shuffle(keys)
        for label, mode in keys:
            got = batch(paths[label], n, mode)
            samples[(label, mode)] += got
            per_round[(label, mode)].append(statistics.median(got))
    return samples, per_round


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def paired(per_round: dict, a: tuple, b: tuple) -> tuple[float, float, float]:
    """Median and quartiles over rounds of (round median of a - round median of b)."""
    return quartiles([x - y for x, y in zip(per_round[a], per_round[b])])
