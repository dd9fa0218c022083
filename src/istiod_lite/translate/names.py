"""Every Envoy resource name and Istio naming rule the translator uses, in one place.

Naming rules (stable, so xDS diffs stay small):
- Listener for a waypoint Gateway listener of protocol HTTP on port P: ``http-P`` (one Envoy listener per port).
- Its routes (route_scopes.py): Scoped RDS, ``scoped_routes.name`` ``http.P``; a ScopedRouteConfiguration
  ``http.P|KEY`` per scope key (a host form without port) naming the RouteConfiguration ``http.P/HOST`` of the
  one service owning the key, or ``http.P/key/KEY`` shared by the services whose forms share a key (IPv6 VIPs).
  Listeners serving a wildcard host keep one RouteConfiguration ``http.P`` (RDS).
  The HCM sets request header ``x-istiod-lite-listener-port: P`` (scope key fragment 1); the routes remove it.
- Listener for a waypoint Gateway listener of protocol TCP on port P: ``tcp-P`` (tcp_proxy, no RDS).
- One VirtualHost per bound service: ``<service hostname>:<served service port>``.
- Clusters (Istio's ``model.BuildSubsetKey`` = ``dir|port|subset|host``):
  ``inbound-vip|PORT|http|HOST`` and ``inbound-vip|PORT|http/SUBSET|HOST`` for services bound to the waypoint,
  ``inbound-vip|PORT|tcp[/SUBSET]|HOST`` for their TCP-listener destinations,
  ``outbound|PORT|SUBSET|HOST`` (``outbound|PORT||HOST`` without subset) for other VirtualService destinations.
- Route names: Istio's ``<http.name>.<match.name>`` (either part may be absent); the no-VirtualService route is
  ``default``.
"""

from __future__ import annotations

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
RBAC_FILTER = "envoy.filters.http.rbac"
PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_ROUTE = "default"
EARLY_HEADER_MUTATION = "envoy.http.early_header_mutation.header_mutation"
LISTENER_PORT_HEADER = "x-istiod-lite-listener-port"


def listener_name(port: int) -> str:
    return f"http-{port}"


def route_config_name(port: int) -> str:
    return f"http.{port}"


def service_route_config_name(port: int, hostname: str) -> str:
    return f"http.{port}/{hostname}"


def shared_route_config_name(port: int, key: str) -> str:
    return f"http.{port}/key/{key}"


def route_scope_name(port: int, key: str) -> str:
    return f"http.{port}|{key}"


def virtual_host_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"


def inbound_vip_cluster(port: int, hostname: str, subset: str = "", protocol: str = "http") -> str:
    """`protocol`: ``http`` for HTTP routes, ``tcp`` for tcp_proxy destinations (Istio's two variants)."""
    kind = f"{protocol}/{subset}" if subset else protocol
    return f"inbound-vip|{port}|{kind}|{hostname}"


def tcp_listener_name(port: int) -> str:
    return f"tcp-{port}"


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
