"""The demo topology as one running stack for operations and fault tests: sample backends, `istiod-lite
serve` on a manifest directory (extra flags allowed), and an Envoy bootstrapped as `default/waypoint`;
plus `Traffic`, a background loop of requests that records every failure, and small readers for
/metrics and /debug endpoints."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import manifests
from .apps import Backend, BackendFactory, Istiod, IstiodFactory
from .envoy import Envoy, EnvoyFactory
from .http import request
from .procs import free_port, wait_until

WAYPOINT = "default/waypoint"


class Factories:
    def __init__(self, workdir: Path) -> None:
        self.backends = BackendFactory(workdir)
        self.istiod = IstiodFactory(workdir)
        self.envoy = EnvoyFactory(workdir)

    def stop_all(self) -> None:
        errors = []
        for factory in (self.envoy, self.istiod, self.backends):
            try:
                factory.stop_all()
            except Exception as exc:  # noqa: BLE001 - stop the others too
                errors.append(exc)
        if errors:
            raise errors[0]


@dataclass
class Stack:
    config_dir: Path
    listener_port: int
    backends: dict[str, Backend]
    istiod: Istiod
    envoy: Envoy | None = None

    def write(self, name: str, docs: list[dict]) -> None:
        manifests.write_docs(self.config_dir / name, docs)

    def diagnostics(self) -> str:
        out = f"--- istiod log ---\n{self.istiod.proc.log_tail(60)}\n"
        if self.envoy is not None:
            out += f"--- envoy log ---\n{self.envoy.proc.log_tail(30)}"
        return out


def start_stack(f: Factories, workdir: Path, delta: bool = True, istiod_args: tuple[str, ...] = (),
                envoy: bool = True) -> Stack:
    backends = f.backends.many("reviews-v1", "reviews-v2", "ratings")
    listener_port = free_port()
    config_dir = workdir / "config"
    manifests.write_files(config_dir, manifests.demo_files(listener_port, {n: b.port for n, b in backends.items()}))
    istiod = f.istiod(config_dir, extra_args=istiod_args)
    stack = Stack(config_dir, listener_port, backends, istiod)
    if envoy:
        stack.envoy = f.envoy.for_waypoint(WAYPOINT, istiod.xds_port, delta=delta)
        wait_routed(stack)
    return stack


def wait_routed(stack: Stack, host: str = "reviews", timeout: float = 30.0) -> None:
    wait_until(lambda: request(stack.listener_port, host=host, timeout=2).status == 200, timeout,
               message=lambda: f"a routed request for {host}\n{stack.diagnostics()}")


@dataclass
class Traffic:
    """Requests in a loop on fresh connections from a thread; every non-200 (or error) is recorded."""

    port: int
    host: str = "reviews"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.host}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = request(self.port, host=self.host, timeout=5)
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{time.time():.3f} status {resp.status}: {resp.text[:100]}")
            except OSError as exc:
                self.failures.append(f"{time.time():.3f} {exc!r}")
            time.sleep(0.005)

    def wait_more(self, n: int = 20, timeout: float = 20.0) -> None:
        """Until `n` more successful requests were made (proves traffic kept flowing)."""
        target = self.ok + n
        wait_until(lambda: self.ok >= target or self.failures, timeout, message=f"{n} more requests")


def get_json(istiod: Istiod, path: str) -> Any:
    status, body = istiod.get(path)
    if status != 200:
        raise RuntimeError(f"{path} -> {status}: {body[:300]}")
    return json.loads(body)


def metric(istiod: Istiod, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    status, body = istiod.get("/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics -> {status}")
    total = 0.0
    for line in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def proxies(istiod: Istiod) -> list[dict]:
    return get_json(istiod, "/debug/syncz")["proxies"]


def all_in_sync(istiod: Istiod, count: int = 1) -> bool:
    ps = proxies(istiod)
    return len(ps) == count and all(p["in_sync"] for p in ps)
