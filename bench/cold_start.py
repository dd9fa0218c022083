"""Benchmark `cold_start`: N services (ServiceEntry + VirtualService + DestinationRule with two subsets each)
bound to one waypoint; time from Envoy start to its listener active and a request answered (200 from the
backend through the waypoint's HTTP listener).

Baseline (same run, same N): the same Envoy config loaded by Envoy from files, no control plane: istiod-lite's
own translation (read from /debug/config_dump) rewritten as a CDS file and an LDS file (`path_config_source`),
with endpoints inline in the clusters (STATIC instead of EDS) and routes inline in the listener.
Target (issue 6): ratio istiod-lite / files <= 1.2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_pb2  # noqa: E402
from envoy.config.route.v3 import scoped_route_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402

import istiod_lite.translate  # noqa: E402,F401 - registers every extension proto the translation uses (Any)

NS, WP = "bench", "waypoint"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def static_config(dump: dict) -> tuple[list, list]:
    """config_dump JSON of one waypoint -> (STATIC clusters with inline endpoints, listeners with inline routes)."""
    clas = {c["cluster_name"]: json_format.ParseDict(c, endpoint_pb2.ClusterLoadAssignment())
            for c in dump.get("EDS", [])}
    routes = {r["name"]: json_format.ParseDict(r, route_pb2.RouteConfiguration()) for r in dump.get("RDS", [])}
    scopes = [json_format.ParseDict(r, scoped_route_pb2.ScopedRouteConfiguration()) for r in dump.get("SRDS", [])]
    clusters = []
    for c in dump.get("CDS", []):
        cluster = json_format.ParseDict(c, cluster_pb2.Cluster())
        if cluster.type == cluster_pb2.Cluster.EDS:
            name = cluster.eds_cluster_config.service_name or cluster.name
            cluster.ClearField("eds_cluster_config")
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.load_assignment.CopyFrom(clas[name])
            cluster.load_assignment.cluster_name = cluster.name
        clusters.append(cluster)
    listeners = []
    for lst in dump.get("LDS", []):
        listener = json_format.ParseDict(lst, listener_pb2.Listener())
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url == HCM:
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        name = hcm.rds.route_config_name
                        hcm.ClearField("rds")
                        hcm.route_config.CopyFrom(routes[name])
                        f.typed_config.Pack(hcm)
                    elif hcm.HasField("scoped_routes"):
                        # the same scopes, listed inline with their RouteConfigurations inline
                        sr = hcm.scoped_routes
                        sr.ClearField("scoped_rds")
                        sr.rds_config_source.Clear()
                        sr.rds_config_source.path_config_source.path = "/dev/null"
                        for scope in scopes:
                            inline = sr.scoped_route_configurations_list.scoped_route_configurations.add()
                            inline.CopyFrom(scope)
                            inline.route_configuration.CopyFrom(routes[scope.route_configuration_name])
                            inline.ClearField("route_configuration_name")
                        f.typed_config.Pack(hcm)
        listeners.append(listener)
    return clusters, listeners


def write_file_config(work: Path, dump: dict, xds_port: int) -> dict:
    clusters, listeners = static_config(dump)
    paths = {}
    for kind, items in (("cds", clusters), ("lds", listeners)):
        resp = discovery_pb2.DiscoveryResponse(version_info="1")
        for item in items:
            resp.resources.add().Pack(item)
        paths[kind] = work / f"{kind}.json"
        paths[kind].write_text(json_format.MessageToJson(resp))
    boot = common.bootstrap_for(f"{NS}/{WP}", xds_port)
    boot["dynamic_resources"] = {
        kind + "_config": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}
        for kind, path in paths.items()}
    return boot


def one_run(procs: common.Procs, boot: dict, listen_port: int, name: str) -> float:
    t0 = time.monotonic()
    envoy = procs.envoy(boot, name)
    try:
        common.wait_answered(envoy, listen_port, common.host(0, NS))
        return time.monotonic() - t0
    finally:
        procs.stop(envoy.proc)


def measure(n: int, runs: int, work: Path) -> tuple[list[float], list[float]]:
    with common.Procs(work) as procs:
        ports = procs.backends()
        listen = common.free_port()
        config = work / f"mesh-{n}"
        common.write_mesh(config, [(NS, WP, listen)], n, ports)
        istiod = procs.istiod(config, timeout=3600)
        dump = json.loads(istiod.get(f"/debug/config_dump?waypoint={NS}/{WP}"))
        files_boot = write_file_config(work, dump, istiod.xds_port)
        ads_boot = common.bootstrap_for(f"{NS}/{WP}", istiod.xds_port)
        ads, files = [], []
        for _ in range(runs):  # alternate, so machine noise hits both alike
            ads.append(one_run(procs, ads_boot, listen, "envoy-ads"))
            files.append(one_run(procs, files_boot, listen, "envoy-files"))
        return ads, files


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], sizes=(100, 1000, 5000)).parse_args()
    sizes, runs = (args.sizes, args.runs) if not args.smoke else ([3], 1)
    rows = []
    with common.workdir(args.keep) as work:
        for n in sizes:
            ads, files = measure(n, runs, work)
            rows.append([n, 3 * n, common.fmt_ms(ads), common.fmt_ms(files), common.ratio(ads, files)])
            print(f"cold_start N={n}: istiod-lite {common.fmt_ms(ads)} ms, files {common.fmt_ms(files)} ms",
                  file=sys.stderr)
    common.print_table(
        f"cold_start ({runs} runs; ms median (min-max); Envoy start -> listener active and 200 answered)",
        ["N services", "clusters", "istiod-lite (Delta ADS)", "baseline: Envoy from files", "ratio (target <= 1.2)"],
        rows, ["Baseline: the same translation as CDS/LDS files (path_config_source), endpoints and routes inline."])


if __name__ == "__main__":
    main()
