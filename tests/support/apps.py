"""istiod-lite (`python -m istiod_lite serve`) and the sample backend (examples/apps/backend.py) as test
processes, each with a factory that stops everything it started."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .http import request
from .procs import ManagedProcess, ProcessGroup, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[2]
BACKEND_SCRIPT = REPO / "examples" / "apps" / "backend.py"


class Istiod:
    """A running `istiod-lite serve`; ports are read from its --ready-file."""

    def __init__(self, name: str, config_dir: Path, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.config_dir = Path(config_dir)
        self.ready_file = workdir / f"{name}.ready.json"
        self.ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "istiod_lite", "serve", "--config-dir", str(config_dir),
                "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
                "--ready-file", str(self.ready_file), "--listen-address", "127.0.0.1", *extra_args]
        self.proc = ManagedProcess(name, argv, workdir / f"{name}.log", cwd=REPO)
        self.xds_port = 0
        self.http_port = 0

    def wait_ready(self, timeout: float = 30.0) -> "Istiod":
        def ready() -> dict | None:
            self.proc.check_alive()
            if not self.ready_file.exists():
                return None
            return json.loads(self.ready_file.read_text())  # partial write -> ValueError -> retry

        ports = wait_until(ready, timeout, message=lambda: f"{self.name} ready file\n{self.proc.log_tail()}")
        self.xds_port = int(ports["xds_port"])
        self.http_port = int(ports["http_port"])
        return self

    def stop(self) -> None:
        self.proc.stop()

    def log_text(self) -> str:
        return self.proc.log_text()

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def config_dump(self, waypoint: str) -> Any:
        status, body = self.get(f"/debug/config_dump?waypoint={waypoint}")
        if status != 200:
            raise RuntimeError(f"config_dump -> {status}: {body[:500]}")
        return json.loads(body)


class IstiodFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.group = ProcessGroup()
        self.count = 0

    def __call__(self, config_dir: Path | str, extra_args: tuple[str, ...] = (), wait: bool = True) -> Istiod:
        self.count += 1
        istiod = Istiod(f"istiod{self.count}", Path(config_dir), self.workdir, extra_args)
        self.group.add(istiod.proc)
        return istiod.wait_ready() if wait else istiod

    def stop_all(self) -> None:
        self.group.stop_all()


class Backend:
    """A running examples/apps/backend.py."""

    def __init__(self, name: str, port: int, workdir: Path) -> None:
        self.name = name
        self.port = port
        argv = [sys.executable, str(BACKEND_SCRIPT), "--name", name, "--port", str(port), "--host", "127.0.0.1"]
        self.proc = ManagedProcess(f"backend-{name}", argv, workdir / f"backend-{name}.log")

    def wait_ready(self, timeout: float = 15.0) -> "Backend":
        wait_until(lambda: self.proc.check_alive() or port_open(self.port), timeout,
                   message=lambda: f"backend {self.name} on {self.port}\n{self.proc.log_tail()}")
        return self

    def stats(self) -> dict[str, Any]:
        return request(self.port, "/_stats", host="backend").json()

    def hits(self, path: str | None = None) -> int:
        stats = self.stats()
        return stats["total"] if path is None else stats["paths"].get(path, 0)


class BackendFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.group = ProcessGroup()

    def __call__(self, name: str, port: int | None = None) -> Backend:
        backend = Backend(name, port or free_port(), self.workdir)
        self.group.add(backend.proc)
        return backend.wait_ready()

    def many(self, *names: str) -> dict[str, Backend]:
        """Start several backends at once (faster than one after the other)."""
        started = {}
        for name in names:
            backend = Backend(name, free_port(), self.workdir)
            self.group.add(backend.proc)
            started[name] = backend
        for backend in started.values():
            backend.wait_ready()
        return started

    def stop_all(self) -> None:
        self.group.stop_all()
