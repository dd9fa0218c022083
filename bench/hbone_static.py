"""Static Envoy configs for bench/hbone.py, made from the live waypoint's /config_dump:

- `static_copy(dump, cert, minimal=False)`: the waypoint's dynamic listeners/clusters/routes/endpoints as static
  resources with certificate files instead of SDS (same certificates), so a copy can run beside the live one;
  ``minimal=True`` strips it to the HBONE-FACTS layout (and below: router only, no RBAC/fault/CORS, no retry
  policy): the same-run floor.
- `VARIANTS`: named edits of a full static copy, for A/B rows (``--variants``) that look for a cheaper waypoint
  config keeping every feature.
- `plain_hop(port, backend)`: one plain Envoy L7 hop (HTTP listener -> backend), the calibration row
  HBONE-FACTS.md quotes (+0.27 ms).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def listener(boot: dict, name: str) -> dict:
    return next(x for x in boot["static_resources"]["listeners"] if x["name"] == name)


def cluster(boot: dict, name: str) -> dict:
    return next(x for x in boot["static_resources"]["clusters"] if x["name"] == name)


def hcms(boot: dict, listener_name: str | None = None) -> list[dict]:
    out = []
    for lst in boot["static_resources"]["listeners"]:
        if listener_name and lst["name"] != listener_name:
            continue
        for chain in lst.get("filter_chains", []):
            out += [f["typed_config"] for f in chain["filters"] if f["typed_config"].get("@type") == HCM]
    return out


def _file_tls(obj: Any, cert: Any) -> None:
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


def static_copy(dump: dict, cert: Any, minimal: bool = False, node: str = "static-waypoint") -> dict:
    """The waypoint's live config (Envoy /config_dump?include_eds) as static resources."""
    dump = copy.deepcopy(dump)
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
                    if minimal:
                        hcm["http_filters"] = hcm["http_filters"][-1:]  # router only
                        for vh in hcm["route_config"].get("virtual_hosts", []):
                            vh.pop("typed_per_filter_config", None)
                            for route in vh.get("routes", []):
                                route.get("route", {}).pop("retry_policy", None)
                                route.pop("typed_per_filter_config", None)
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
    return {"node": {"id": node, "cluster": node},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": listeners, "clusters": clusters},
            "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}]}


def retarget(boot: dict, old: str, new: str) -> None:
    """Move the tunnelled endpoint ``old`` (pod ip:port) of every inbound-vip cluster to ``new``."""
    for c in boot["static_resources"]["clusters"]:
        for group in c.get("load_assignment", {}).get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                internal = lb["endpoint"]["address"].get("envoy_internal_address", {})
                if internal.get("endpoint_id") == old:
                    internal["endpoint_id"] = new
                    lb["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"]["local"] = new


def envoy_backend(port: int) -> dict:
    """A backend that is an Envoy answering every request itself (direct_response, a ~400-byte body like
    examples/apps/backend.py's): a new connection costs it what it costs Envoy, not a Python accept."""
    hcm = {"@type": HCM, "stat_prefix": "backend", "codec_type": "AUTO",
           "route_config": {"name": "backend", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "x" * 400}}}]}]},
           "http_filters": [ROUTER]}
    return {"node": {"id": "envoy-backend", "cluster": "envoy-backend"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [{
                "name": "backend", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}]}}


def plain_hop(port: int, backend: int) -> dict:
    hcm = {"@type": HCM, "stat_prefix": "plain", "codec_type": "AUTO",
           "route_config": {"name": "plain", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
           "http_filters": [ROUTER]}
    return {"node": {"id": "plain-hop", "cluster": "plain-hop"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{"name": "plain", "address": {"socket_address": {"address": "127.0.0.1",
                                                                               "port_value": port}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [{"name": "backend", "type": "STATIC", "connect_timeout": "2s",
                              "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                                  {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                               "port_value": backend}}}}]}]}}]}}


# ---- A/B variants of the full static copy (each keeps every feature of the waypoint) --------------------------
def _no_request_id(boot: dict) -> None:
    for h in hcms(boot):
        h["generate_request_id"] = False


def _http1_codec(boot: dict) -> None:
    for h in hcms(boot, "main_internal"):
        h["codec_type"] = "HTTP1"


def _small_internal_buffer(boot: dict) -> None:
    """Bootstrap, not translate/: the internal listener's per-connection buffer 1 MiB (default) -> 64 KiB."""
    boot["bootstrap_extensions"][0]["typed_config"]["buffer_size_kb"] = 64


def _no_retry_policy(boot: dict) -> None:
    for h in hcms(boot, "main_internal"):
        for vh in h["route_config"].get("virtual_hosts", []):
            for route in vh.get("routes", []):
                route.get("route", {}).pop("retry_policy", None)


VARIANTS: dict[str, Callable[[dict], None]] = {
    "no-request-id": _no_request_id,
    "http1-codec": _http1_codec,
    "internal-buffer-64k": _small_internal_buffer,
    "no-retry-policy": _no_retry_policy,
}


def early_data_source(boot: dict) -> None:
    """Stand-in variant: the source's tcp_proxy reads the client's bytes while its CONNECT is in flight."""
    for lst in boot["static_resources"]["listeners"]:
        for chain in lst["filter_chains"]:
            for f in chain["filters"]:
                f["typed_config"]["max_early_data_bytes"] = 65536
