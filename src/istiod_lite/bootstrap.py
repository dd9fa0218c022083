"""Envoy bootstrap for a waypoint proxy: node identity, the ADS connection to istiod-lite, the admin port.

`render_bootstrap` returns a plain dict (yaml.safe_dump / json.dumps turn it into a file Envoy accepts).
Everything else (listeners, routes, clusters, endpoints) arrives over ADS.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

XDS_CLUSTER = "xds-grpc"
UPSTREAM_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
INTERNAL_LISTENER = "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"


def split_waypoint(waypoint: str) -> tuple[str, str]:
    """`"ns/name"` -> `("ns", "name")`; raises ValueError on anything else (a CLI argument mistake)."""
    namespace, sep, name = waypoint.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"waypoint must be NAMESPACE/NAME, got {waypoint!r}")
    return namespace, name


def split_address(address: str) -> tuple[str, int]:
    """`"host:port"` (or `"[v6]:port"`) -> `(host, port)`; raises ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    host = host.strip("[]")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, number


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def xds_transport_socket(xds_ca: str, client_cert: str | None = None, client_key: str | None = None,
                         sni: str | None = None) -> dict[str, Any]:
    """TLS to the xDS server: verify its certificate against `xds_ca`; present `client_cert`/`client_key`
    (mTLS) when given; ALPN h2 (gRPC)."""
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": {"filename": xds_ca}},
    }
    if client_cert and client_key:
        common["tls_certificates"] = [{"certificate_chain": {"filename": client_cert},
                                       "private_key": {"filename": client_key}}]
    context: dict[str, Any] = {"@type": UPSTREAM_TLS_CONTEXT, "common_tls_context": common}
    if sni:
        context["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def render_bootstrap(waypoint: str, xds_host: str, xds_port: int, admin_address: str = "127.0.0.1:15000",
                     delta: bool = True, node_id: str | None = None, *, xds_ca: str | None = None,
                     client_cert: str | None = None, client_key: str | None = None,
                     sni: str | None = None) -> dict[str, Any]:
    """The Envoy bootstrap for the waypoint `ns/name`, talking ADS (Delta by default, SotW if `delta`
    is False) to istiod-lite at `xds_host:xds_port`. `node_id` is the suffix after `~` (random if None).
    With `xds_ca` the xDS connection uses TLS (and mTLS with `client_cert`/`client_key`); `sni` defaults
    to `xds_host` when it is a DNS name."""
    namespace, name = split_waypoint(waypoint)
    admin_host, admin_port = split_address(admin_address)
    suffix = node_id if node_id else secrets.token_hex(4)
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(xds_host, xds_port)}}]}],
        },
        # Mandatory: without HTTP/2 no gRPC stream ever reaches the server (XDS-FACTS item 1).
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "upstream_connection_options": {
            "tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5},
        },
    }
    if xds_ca:
        server_name = sni or (None if _is_ip(xds_host) else xds_host)
        xds_cluster["transport_socket"] = xds_transport_socket(xds_ca, client_cert, client_key, server_name)
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {
            "id": f"{namespace}/{name}~{suffix}",
            "cluster": f"{name}.{namespace}",
            "metadata": {"WAYPOINT": f"{namespace}/{name}"},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": dict(ads_source),
            "lds_config": dict(ads_source),
        },
        "static_resources": {"clusters": [xds_cluster]},
        # Internal listeners (the HBONE layout's main_internal / connect_originate) need this extension.
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": INTERNAL_LISTENER},
        }],
        "admin": {"address": _socket_address(admin_host, admin_port)},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"overload.global_downstream_max_connections": 100000}},
                {"name": "admin", "admin_layer": {}},
            ],
        },
    }
