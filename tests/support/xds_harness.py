"""Helpers for xds protocol tests: real resources, a group_for_node from node metadata, a server fixture."""

from __future__ import annotations

import contextlib

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.server import AdsServer
from istiod_lite.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

GROUP = "default/waypoint"


def group_for_node(node) -> str | None:
    value = node.metadata.fields.get("WAYPOINT")
    return value.string_value if value is not None and value.string_value else None


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=timeout_s),
                               type=cluster_pb2.Cluster.EDS)


def cla(name: str, port: int = 8080) -> endpoint_pb2.ClusterLoadAssignment:
    cla_ = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    ep = cla_.endpoints.add().lb_endpoints.add().endpoint
    ep.address.socket_address.address = "127.0.0.1"
    ep.address.socket_address.port_value = port
    return cla_


def listener(name: str, route: str = "r") -> listener_pb2.Listener:
    lis = listener_pb2.Listener(name=name)
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = 15000 + len(route)
    return lis


def route(name: str, cluster_name: str = "c1") -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="vh", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster_name
    return rc


def resources(clusters=(), endpoints=(), listeners=(), routes=(), **versions) -> dict:
    """type URL -> name -> message; `versions` tweaks content: {name: timeout seconds} for clusters."""
    return {
        CLUSTER: {c: cluster(c, versions.get(c, 1)) for c in clusters},
        ENDPOINT: {e: cla(e, versions.get(e, 8080)) for e in endpoints},
        LISTENER: {lname: listener(lname) for lname in listeners},
        ROUTE: {r: route(r) for r in routes},
    }


@contextlib.asynccontextmanager
async def ads_server(cache: SnapshotCache | None = None, **kwargs):
    cache = cache or SnapshotCache()
    events: list[tuple[str, dict]] = []
    nacks: list = []
    kwargs.setdefault("ack_timeout", 30.0)
    server = AdsServer(cache, group_for_node=group_for_node, on_nack=nacks.append,
                       on_event=lambda name, data: events.append((name, data)), **kwargs)
    port = await server.start("127.0.0.1:0")
    server.test_port = port  # type: ignore[attr-defined]
    server.test_events = events  # type: ignore[attr-defined]
    server.test_nacks = nacks  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop(grace=0.1)
