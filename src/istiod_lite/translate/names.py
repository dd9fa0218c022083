"""Every Envoy resource name and Istio naming rule the translator uses, in one place.

Naming rules (stable, so xDS diffs stay small):
- Listener for a waypoint Gateway listener of protocol HTTP on port P: ``http-P`` (one Envoy listener per port).
- Its RouteConfiguration (RDS): ``http.P``.
- One VirtualHost per bound service: ``<service hostname>:<served service port>``.
- Clusters (Istio's ``model.BuildSubsetKey`` = ``dir|port|subset|host``):
  ``inbound-vip|PORT|http|HOST`` and ``inbound-vip|PORT|http/SUBSET|HOST`` for services bound to the waypoint,
  ``outbound|PORT|SUBSET|HOST`` (``outbound|PORT||HOST`` without subset) for other VirtualService destinations.
- Route names: Istio's ``<http.name>.<match.name>`` (either part may be absent); the no-VirtualService route is
  ``default``.
"""

from __future__ import annotations

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
RBAC_FILTER = "envoy.filters.http.rbac"
PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_ROUTE = "default"


def listener_name(port: int) -> str:
    return f"http-{port}"


def route_config_name(port: int) -> str:
    return f"http.{port}"


def virtual_host_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"


def inbound_vip_cluster(port: int, hostname: str, subset: str = "") -> str:
    kind = f"http/{subset}" if subset else "http"
    return f"inbound-vip|{port}|{kind}|{hostname}"


def outbound_cluster(port: int, hostname: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{hostname}"


def route_name(rule_name: str, match_name: str) -> str:
    if rule_name and match_name:
        return f"{rule_name}.{match_name}"
    return rule_name or match_name


def host_with_port(host: str, port: int) -> str:
    """``host:port``; IPv6 literals are bracketed (``[::1]:80``)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
