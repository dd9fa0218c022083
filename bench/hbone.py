"""Benchmark the HBONE waypoint hop: median latency of sequential requests through source "ztunnel" Envoy ->
waypoint Envoy (configured by istiod-lite, HBONE listener) -> destination "ztunnel" Envoy -> backend, minus a
direct request to the backend; on a kept-alive connection and with a new connection (a new CONNECT) per request.

Rows are measured INTERLEAVED (bench/hbone_client.py: rounds of one batch per path and mode, order shuffled each
round), so noise from other processes on the shared cores hits every row alike. Rows:

- direct to the backend (the baseline of "added"), one plain Envoy L7 hop (calibration: HBONE-FACTS.md quotes
  +0.27 ms for it), source -> destination without a waypoint;
- the same-run floor: our live waypoint config as static resources stripped to the HBONE-FACTS layout (router
  only; bench/hbone_static.py), with the same stand-ins, certificates and backend;
- ours: the live waypoint (istiod-lite over ADS).

Experiment flags add rows (A/B against a full static copy of our waypoint, or other stand-ins): ``--variants``,
``--early-data``, ``--concurrency2``, ``--threaded-backend``, ``--envoy-backend``, ``--paused``. ``--runs`` is
accepted (make bench passes it) and ignored: ``--rounds`` x ``--batch`` set the samples.

Floor measured in ../shared/HBONE-FACTS.md with hand-written configs and another harness: +0.50 ms kept-alive,
+0.70 ms new connection (target: within 0.1 ms of it). Topology as tests/test_hbone_e2e.py (127.0.0.3 = waypoint
pod, 127.0.0.4 = destination pod; certificates from istiod-lite's CA). Every process started is stopped.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import hbone_client as hc  # noqa: E402
import hbone_static as hs  # noqa: E402

WAYPOINT_IP, POD_IP, VIP = "127.0.0.3", "127.0.0.4", "10.96.0.10"
DIRECT = "direct to the backend"
PLAIN = "one plain Envoy L7 hop (calibration)"
NO_WAYPOINT = "source -> destination (no waypoint)"
FLOOR = "source -> minimal static waypoint -> destination (same-run floor)"
OURS = "source -> waypoint -> destination"
EARLY = "source with early data -> waypoint -> destination"
COPY = "source -> static copy of our waypoint -> destination"
CONC2 = f"{COPY}, all three Envoys --concurrency 2"
T_DIRECT = "direct to a thread-per-connection backend"
T_COPY = f"{COPY} -> thread-per-connection backend"
ORDER = [DIRECT, PLAIN, NO_WAYPOINT, FLOOR, OURS, EARLY, COPY, CONC2, T_DIRECT, T_COPY]
BASELINE = {T_COPY: T_DIRECT}  # "added" against another direct row than DIRECT
REFERENCE = {FLOOR: OURS, COPY: OURS, EARLY: OURS, CONC2: COPY}  # notes: (row - reference), paired per round


def _support():
    folder = common.REPO / "tests" / "support"
    spec = importlib.util.spec_from_file_location("testsupport", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["testsupport"] = module
    spec.loader.exec_module(module)
    from testsupport import hbone
    return hbone


def _free(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _args():
    p = common.parser(__doc__.splitlines()[0], runs=1)
    p.add_argument("--rounds", type=int, default=100, help="interleaved rounds (one batch per path and mode each)")
    p.add_argument("--batch", type=int, default=20, help="sequential requests per batch")
    p.add_argument("--variants", default="", help="comma-separated hbone_static.VARIANTS (edits of a full static "
                   f"copy of our waypoint, each an A/B row against that copy), or 'all': {', '.join(hs.VARIANTS)}")
    p.add_argument("--early-data", action="store_true", help="also ours through a source stand-in whose tcp_proxy "
                   "has max_early_data_bytes (reads the request while its CONNECT is in flight)")
    p.add_argument("--concurrency2", action="store_true", help="also the static copy with source, waypoint and "
                   "destination Envoys all on --concurrency 2 (all others: 1)")
    p.add_argument("--threaded-backend", action="store_true", help="also direct and static-copy rows to a "
                   "thread-per-connection backend (bench/hbone_backend.py), 'added' against its own direct row")
    p.add_argument("--envoy-backend", action="store_true", help="the backend is an Envoy answering with "
                   "direct_response instead of examples/apps/backend.py (Python asyncio)")
    p.add_argument("--paused", action="store_true", help="also a 'new connection, paused' mode (2 ms idle after "
                   "each close, outside the timing)")
    args = p.parse_args()
    if args.smoke:
        args.rounds, args.batch = 2, 5
    args.variants = list(hs.VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    return args


class Bench:
    """Starts the stack (backend, istiod-lite, stand-ins, waypoints) and collects the paths to time."""

    def __init__(self, procs: common.Procs, work: Path, args) -> None:
        from istiod_lite.identity import CertificateAuthority

        self.procs, self.work, self.args, self.hbone = procs, work, args, _support()
        self.ca = CertificateAuthority.load_or_create("cluster.local", work / "ca")
        self.cert = self.hbone.write_cert(self.ca, work / "certs", "default", "client")
        self.dest_cert = self.hbone.write_cert(self.ca, work / "certs", "default", "dest")
        self.wp_cert = self.hbone.write_cert(self.ca, work / "certs", "default", "waypoint")
        self.paths: dict[str, int] = {}
        self.envoys: dict[str, common.Envoy] = {}

    def envoy(self, label: str, boot: dict, concurrency: int = 1) -> common.Envoy:
        """common.Procs.envoy with a chosen --concurrency (Procs.envoy always uses 1)."""
        if concurrency == 1:
            self.envoys[label] = self.procs.envoy(boot, "envoy")
            return self.envoys[label]
        stem = self.work / f"envoy-c{concurrency}-{self.procs.count + 1}"
        stem.with_suffix(".json").write_text(json.dumps(boot))
        argv = [common.envoy_path(), "-c", stem.with_suffix(".json"), "--concurrency", concurrency,
                "--disable-hot-restart", "--log-level", "warn", "--admin-address-path", stem.with_suffix(".admin"),
                "--drain-time-s", "1", "--parent-shutdown-time-s", "2"]
        self.envoys[label] = common.Envoy(self.procs.start("envoy", argv), stem.with_suffix(".admin"))
        return self.envoys[label]

    def start(self) -> None:
        args, hbone = self.args, self.hbone
        if args.envoy_backend:
            self.backend = common.free_port()
            self.envoy("envoy backend", hs.envoy_backend(self.backend))
            common.wait_until(lambda: common.port_open(self.backend), 30, 0.01, "envoy backend")
        else:
            self.backend, _ = self.procs.backends()
        self.paths[DIRECT] = self.backend
        upstreams = {f"{POD_IP}:{self.backend}": self.backend}
        if args.threaded_backend:
            self.threaded = common.free_port()
            proc = self.procs.start("threaded", [common.PY, common.BENCH / "hbone_backend.py", "--port", self.threaded])
            common.wait_until(lambda: proc.check() or common.port_open(self.threaded), 20, 0.02, "threaded backend")
            upstreams[f"{POD_IP}:{self.threaded}"] = self.threaded
            self.paths[T_DIRECT] = self.threaded
        hbone_port, self.dest_port = _free(WAYPOINT_IP), _free(POD_IP)
        xds_port = self._istiod(hbone_port)
        self.envoy("dest", hbone.destination_bootstrap(self.dest_cert, (POD_IP, self.dest_port), upstreams))
        self.paths[PLAIN] = common.free_port()
        self.envoy("plain hop", hs.plain_hop(self.paths[PLAIN], self.backend))
        self.paths[NO_WAYPOINT] = common.free_port()
        self.envoy("src no waypoint", hbone.source_bootstrap(self.cert, (POD_IP, self.dest_port), {
            self.paths[NO_WAYPOINT]: f"{POD_IP}:{self.backend}"}))
        waypoint = self.envoy("waypoint", common.bootstrap_for("default/waypoint", xds_port))
        self.through(OURS, hbone_port)
        if args.early_data:
            self.through(EARLY, hbone_port, early=True)
        common.wait_until(lambda: _try(self.paths[OURS]), 60, 0.01, "a request through the waypoint")
        with urllib.request.urlopen(f"http://{waypoint.admin()}/config_dump?include_eds", timeout=10) as r:
            self.dump = json.loads(r.read())
        self.static(FLOOR, hs.static_copy(self.dump, self.wp_cert, minimal=True))
        if args.variants or args.concurrency2 or args.threaded_backend:
            self.static(COPY, hs.static_copy(self.dump, self.wp_cert))
        for name in args.variants:
            boot = hs.static_copy(self.dump, self.wp_cert)
            hs.VARIANTS[name](boot)
            self.static(f"{COPY}, {name}", boot)
            REFERENCE[f"{COPY}, {name}"] = COPY
        if args.threaded_backend:  # the static copy with its endpoint moved to the threaded backend
            boot = hs.static_copy(self.dump, self.wp_cert)
            hs.retarget(boot, f"{POD_IP}:{self.backend}", f"{POD_IP}:{self.threaded}")
            self.static(T_COPY, boot)
        if args.concurrency2:  # a second destination, the static copy and a source, all on 2 worker threads
            dest2 = _free(POD_IP)
            self.envoy("dest2", hbone.destination_bootstrap(self.dest_cert, (POD_IP, dest2),
                                                            {f"{POD_IP}:{self.backend}": self.backend}), 2)
            boot = hs.static_copy(self.dump, self.wp_cert)
            hs.cluster(boot, "connect_originate")["original_dst_lb_config"]["upstream_port_override"] = dest2
            self.static(CONC2, boot, 2)
        for label, port in self.paths.items():
            common.wait_until(lambda: _try(port), 60, 0.01, f"a request through {label}")

    def _istiod(self, hbone_port: int) -> int:
        config = self.work / "config"
        config.mkdir()
        common.write_docs(config / "mesh.yaml", _mesh(hbone_port, self.backend))
        ready = self.work / "ready-hbone.json"
        proc = self.procs.start("istiod", [
            common.PY, "-m", "istiod_lite", "serve", "--config-dir", config, "--xds-address", "127.0.0.1:0",
            "--http-address", "127.0.0.1:0", "--ready-file", ready, "--ca-dir", self.work / "ca",
            "--log-level", "warning", "--hbone-upstream-port", self.dest_port])
        ports = common.wait_until(lambda: proc.check() or (json.loads(ready.read_text()) if ready.exists() else None),
                                  60, 0.02, "istiod-lite ready file")
        return ports["xds_port"]

    def through(self, label: str, wp_port: int, early: bool = False, concurrency: int = 1) -> None:
        """A source stand-in tunnelling to the waypoint at `wp_port`; its listener is the path `label`."""
        self.paths[label] = common.free_port()
        boot = self.hbone.source_bootstrap(self.cert, (WAYPOINT_IP, wp_port), {self.paths[label]: f"{VIP}:9080"})
        if early:
            hs.early_data_source(boot)
        self.envoy(f"src {label}", boot, concurrency)

    def static(self, label: str, boot: dict, concurrency: int = 1) -> None:
        port = _free(WAYPOINT_IP)
        hs.listener(boot, "connect_terminate")["address"]["socket_address"]["port_value"] = port
        self.envoy(label, boot, concurrency)
        self.through(label, port, concurrency=concurrency)

    def counters(self) -> dict[tuple[str, str], int]:
        """Upstream connections (and TLS connections into connect_terminate) opened, per Envoy: the pooling check
        (source -> waypoint, connect_originate -> destination, destination -> backend must be reused)."""
        out = {}
        for label, envoy in self.envoys.items():
            with urllib.request.urlopen(f"http://{envoy.admin()}/stats?usedonly", timeout=10) as r:
                for line in r.read().decode().splitlines():
                    key, _, value = line.partition(": ")
                    if key.endswith(".upstream_cx_total") or key == "http.connect_terminate.downstream_cx_total":
                        out[(label, key)] = int(value)
        return out


def main() -> None:
    args = _args()
    with common.workdir(args.keep) as work, common.Procs(work) as procs:
        bench = Bench(procs, work, args)
        bench.start()
        modes = hc.MODES + ((hc.PAUSED,) if args.paused else ())
        before = bench.counters()
        t0 = time.monotonic()
        samples, per_round = hc.interleaved(bench.paths, args.rounds, args.batch, modes=modes)
        elapsed = time.monotonic() - t0
        after = bench.counters()
        _print(samples, per_round, args, elapsed, {k: v - before.get(k, 0) for k, v in after.items()})


def _mesh(hbone_port: int, backend: int) -> list[dict]:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {
        "istio.io/use-waypoint": "waypoint", "istio.io/dataplane-mode": "ambient"}}}
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "waypoint", "namespace": "default"},
          "spec": {"gatewayClassName": "istio-waypoint", "addresses": [{"type": "IPAddress", "value": WAYPOINT_IP}],
                   "listeners": [{"name": "mesh", "port": hbone_port, "protocol": "HBONE"}]}}
    se = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
          "metadata": {"name": "reviews", "namespace": "default"},
          "spec": {"hosts": ["reviews.default.svc.cluster.local"], "addresses": [VIP], "location": "MESH_INTERNAL",
                   "resolution": "STATIC", "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                   "endpoints": [{"address": POD_IP, "ports": {"http": backend}}]}}
    return [ns, gw, se]


def _ms(x: float) -> str:
    return f"{x * 1000:.3f}"


def _print(samples: dict, per_round: dict, args, elapsed: float, opened: dict) -> None:
    n = args.rounds * args.batch
    med = {k: statistics.median(v) for k, v in samples.items()}
    modes = list(dict.fromkeys(mode for _, mode in samples))
    labels = sorted(dict.fromkeys(label for label, _ in samples),
                    key=lambda x: (ORDER.index(x) if x in ORDER else len(ORDER), x))
    table = []
    for label in labels:
        for mode in modes:
            q1, q2, q3 = hc.quartiles(samples[(label, mode)])
            base = BASELINE.get(label, DIRECT)
            added = "-" if label in (DIRECT, T_DIRECT) else f"{(q2 - med[(base, mode)]) * 1000:+.3f}"
            table.append((label, mode, _ms(q2), f"{_ms(q1)}-{_ms(q3)}", added))
    notes = ["Floor (HBONE-FACTS.md, hand-written configs, another harness): +0.50 ms kept-alive, +0.70 ms new "
             "connection through the three Envoys (one plain Envoy L7 hop: +0.27 ms); target within 0.1 ms of it."]
    for label in labels:
        ref = REFERENCE.get(label)
        if ref is None or ref not in labels:
            continue
        a, b = (OURS, label) if ref == OURS else (label, ref)  # ours minus floor/copy; a variant minus its copy
        parts = []
        for mode in modes:
            lo, mid, hi = hc.paired(per_round, (a, mode), (b, mode))
            parts.append(f"{mode} {(med[(a, mode)] - med[(b, mode)]) * 1000:+.3f} ms (per-round paired: median "
                         f"{mid * 1000:+.3f}, IQR {lo * 1000:+.3f}..{hi * 1000:+.3f})")
        notes.append(f"[{a}] minus [{b}]: " + "; ".join(parts))
    opened_text = ", ".join(f"{lbl}: {key}={v}" for (lbl, key), v in sorted(opened.items()) if v)
    notes.append(f"Connections opened during the timed part ({n} requests per row, plus one untimed request per "
                 f"kept-alive batch): {opened_text or 'none'}")
    common.print_table(f"HBONE waypoint hop, interleaved: {args.rounds} rounds x {args.batch} sequential requests "
                       f"per path and mode, order shuffled per round ({n} samples per row, {elapsed:.0f} s)",
                       ["path", "connection", "median ms", "IQR ms", "added vs direct (ms)"], table, notes)


def _try(port: int) -> bool:
    try:
        return common.http_get(port, "/", "reviews", timeout=2)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
