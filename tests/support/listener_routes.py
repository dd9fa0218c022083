"""The routes of one plain HTTP listener as tests want to read them, whatever the layout (route_scopes.py): one
RouteConfiguration ``http.<port>``, or Scoped RDS with a RouteConfiguration per service ``http.<port>/...``."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from istiod_lite.xds import types
from istiod_lite.xds.types import ResourceSet


def _configs(resources: ResourceSet, port: int) -> list[route_pb2.RouteConfiguration]:
    routes = resources.messages(types.ROUTE)
    single = f"http.{port}"
    if single in routes:
        return [routes[single]]
    return [routes[n] for n in sorted(routes) if n.startswith(single + "/")]


def listener_route_config(resources: ResourceSet, port: int) -> route_pb2.RouteConfiguration:
    """Every virtual host served on listener `port` (each once, by name order) in one RouteConfiguration."""
    seen: dict[str, object] = {}
    for cfg in _configs(resources, port):
        for vh in cfg.virtual_hosts:
            seen.setdefault(vh.name, vh)
    out = route_pb2.RouteConfiguration(name=f"http.{port}")
    out.virtual_hosts.extend(seen[n] for n in sorted(seen))
    return out


def listener_route_sources(resources: ResourceSet, port: int) -> set[str]:
    routes = resources.messages(types.ROUTE)
    return {s for cfg in _configs(resources, port) for s in resources.sources.get((types.ROUTE, cfg.name), ())
            if cfg.name in routes}
