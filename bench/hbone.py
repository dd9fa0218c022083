"""Benchmark the HBONE waypoint hop: median latency of sequential requests through source "ztunnel" Envoy ->
waypoint Envoy (configured by istiod-lite, HBONE listener) -> destination "ztunnel" Envoy -> backend, minus a
direct request to the backend; on a kept-alive connection and with a new connection (a new CONNECT) per request.

Floor measured in ../shared/HBONE-FACTS.md with hand-written configs: +0.50 ms kept-alive, +0.70 ms new
connection (target: within 0.1 ms of it). The topology is the one of tests/test_hbone_e2e.py (127.0.0.3 =
waypoint pod, 127.0.0.4 = destination pod; certificates from istiod-lite's CA).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WAYPOINT_IP, POD_IP, VIP = "127.0.0.3", "127.0.0.4", "10.96.0.10"


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
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _timed(port: int, n: int, keep_alive: bool) -> list[float]:
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t = time.perf_counter()
        conn.request("GET", "/bench", headers={"Host": "reviews"})
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        if not keep_alive:
            conn.close()
    conn.close()
    return out


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], runs=3).parse_args()
    hbone = _support()
    from istiod_lite.identity import CertificateAuthority

    with common.workdir(args.keep) as work, common.Procs(work) as procs:
        ca = CertificateAuthority.load_or_create("cluster.local", work / "ca")
        cert = hbone.write_cert(ca, work / "certs", "default", "client")
        dest_cert = hbone.write_cert(ca, work / "certs", "default", "dest")
        backend, _ = procs.backends()
        hbone_port, dest_port = _free(WAYPOINT_IP), _free(POD_IP)
        config = work / "config"
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
        config.mkdir()
        common.write_docs(config / "mesh.yaml", [ns, gw, se])
        ready = work / "ready-hbone.json"
        proc = procs.start("istiod", [common.PY, "-m", "istiod_lite", "serve", "--config-dir", config,
                                      "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
                                      "--ready-file", ready, "--ca-dir", work / "ca", "--log-level", "warning",
                                      "--hbone-upstream-port", dest_port])
        ports = common.wait_until(lambda: proc.check() or (json.loads(ready.read_text()) if ready.exists() else None),
                                  60, 0.02, "istiod-lite ready file")
        procs.envoy(hbone.destination_bootstrap(dest_cert, (POD_IP, dest_port), {f"{POD_IP}:{backend}": backend}),
                    "dest")
        chain_port, direct_tunnel_port = common.free_port(), common.free_port()
        procs.envoy(hbone.source_bootstrap(cert, (WAYPOINT_IP, hbone_port), {chain_port: f"{VIP}:9080"}), "src")
        procs.envoy(hbone.source_bootstrap(cert, (POD_IP, dest_port), {direct_tunnel_port: f"{POD_IP}:{backend}"}),
                    "src-direct")
        waypoint = procs.envoy(common.bootstrap_for("default/waypoint", ports["xds_port"]), "waypoint")
        common.wait_until(lambda: _try(chain_port), 60, 0.01, "a request through the waypoint")
        # Same-run baseline: a hand-written minimal waypoint (the HBONE-FACTS layout, below it even: router only,
        # no RBAC/fault/CORS, no retry policy) made from our own config as static resources, same certificates.
        wp_cert = hbone.write_cert(ca, work / "certs", "default", "waypoint")
        with urllib.request.urlopen(f"http://{waypoint.admin()}/config_dump?include_eds", timeout=10) as r:
            minimal = _minimal_static(json.loads(r.read()), wp_cert)
        minimal_port = _free(WAYPOINT_IP)
        _listener(minimal, "connect_terminate")["address"]["socket_address"]["port_value"] = minimal_port
        procs.envoy(minimal, "waypoint-minimal")
        minimal_chain = common.free_port()
        procs.envoy(hbone.source_bootstrap(cert, (WAYPOINT_IP, minimal_port), {minimal_chain: f"{VIP}:9080"}),
                    "src-minimal")
        common.wait_until(lambda: _try(minimal_chain), 60, 0.01, "a request through the minimal waypoint")
        rows = []
        n = 200
        for label, port in (("direct to the backend", backend), ("source -> destination (no waypoint)",
                                                                 direct_tunnel_port),
                            ("source -> minimal static waypoint -> destination (baseline)", minimal_chain),
                            ("source -> waypoint -> destination", chain_port)):
            for keep in (True, False):
                meds = [statistics.median(_timed(port, n, keep)) for _ in range(args.runs)]
                rows.append((label, "kept-alive" if keep else "new connection", meds))
        base = {k: statistics.median(m) for lbl, k, m in rows if lbl.startswith("direct")}
        table = [(lbl, k, f"{statistics.median(m) * 1000:.3f}", f"+{(statistics.median(m) - base[k]) * 1000:.3f}")
                 for lbl, k, m in rows]
        med = {(lbl, k): statistics.median(m) for lbl, k, m in rows}
        ours = {k: med[("source -> waypoint -> destination", k)] for k in base}
        floor = {k: med[("source -> minimal static waypoint -> destination (baseline)", k)] for k in base}
        common.print_table(f"HBONE waypoint hop, median of {args.runs} runs x {n} sequential requests",
                           ["path", "connection", "median ms", "added vs direct (ms)"], table,
                           ["Floor (HBONE-FACTS.md, hand-written configs): +0.50 ms kept-alive, +0.70 ms new "
                            "connection through the three Envoys; target within 0.1 ms of it.",
                            "Same-run floor: istiod-lite's waypoint minus the minimal static waypoint: "
                            + ", ".join(f"{k} {(ours[k] - floor[k]) * 1000:+.3f} ms" for k in ("kept-alive",
                                                                                                "new connection"))])


def _listener(boot: dict, name: str) -> dict:
    return next(x for x in boot["static_resources"]["listeners"] if x["name"] == name)


def _file_tls(obj, cert) -> None:
    """SDS references -> certificate files (the static copy has no control plane)."""
    if isinstance(obj, dict):
        ctc = obj.get("common_tls_context")
        if ctc and "tls_certificate_sds_secret_configs" in ctc:
            ctc.pop("tls_certificate_sds_secret_configs")
            ctc["tls_certificates"] = [{"certificate_chain": {"filename": str(cert.chain)},
                                        "private_key": {"filename": str(cert.key)}}]
            validation = ctc.pop("combined_validation_context")["default_validation_context"]
            validation["trusted_ca"] = {"filename": str(cert.root)}
            ctc["validation_context"] = validation
        for v in obj.values():
            _file_tls(v, cert)
    elif isinstance(obj, list):
        for v in obj:
            _file_tls(v, cert)


def _minimal_static(dump: dict, cert) -> dict:
    """The waypoint's live config (Envoy /config_dump) as static resources, stripped to the minimal layout."""
    listeners, clusters, routes, assignments = [], [], {}, {}
    for c in dump["configs"]:
        t = c["@type"]
        if t.endswith("ListenersConfigDump"):
            listeners = [x["active_state"]["listener"] for x in c.get("dynamic_listeners", [])]
        elif t.endswith("ClustersConfigDump"):
            clusters = [x["cluster"] for x in c.get("dynamic_active_clusters", [])]
        elif t.endswith("RoutesConfigDump"):
            routes = {x["route_config"]["name"]: x["route_config"] for x in c.get("dynamic_route_configs", [])}
        elif t.endswith("EndpointsConfigDump"):
            assignments = {x["endpoint_config"]["cluster_name"]: x["endpoint_config"]
                           for x in c.get("dynamic_endpoint_configs", [])}
    for lst in listeners:
        for chain in lst.get("filter_chains", []):
            for f in chain["filters"]:
                hcm = f["typed_config"]
                if "rds" in hcm:
                    hcm["route_config"] = routes[hcm.pop("rds")["route_config_name"]]
                    hcm["http_filters"] = hcm["http_filters"][-1:]  # router only
                    for vh in hcm["route_config"].get("virtual_hosts", []):
                        for route in vh.get("routes", []):
                            route.get("route", {}).pop("retry_policy", None)
    for c in clusters:
        if c.get("type") == "EDS":
            c["type"] = "STATIC"
            c.pop("eds_cluster_config")
            c["load_assignment"] = assignments[c["name"]]
            for group in c["load_assignment"].get("endpoints", []):
                if not group.get("load_balancing_weight"):
                    group.pop("load_balancing_weight", None)  # the dump shows 0, which static config rejects
    for x in listeners + clusters + list(routes.values()) + list(assignments.values()):
        x.pop("@type", None)
    _file_tls(listeners, cert)
    _file_tls(clusters, cert)
    return {"node": {"id": "minimal-waypoint", "cluster": "minimal-waypoint"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": listeners, "clusters": clusters},
            "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}]}


def _try(port: int) -> bool:
    try:
        return common.http_get(port, "/", "reviews", timeout=2)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
