"""Validate many translated ResourceSets with ONE `envoy --mode validate` run: the waypoint's HTTP listeners
(routes inlined) and the clusters those routes use are renamed per example (`e<i>-...`), given distinct
ports, and merged into one static bootstrap. On failure, each example is validated alone to name the
culprit."""

from __future__ import annotations

import json
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from istiod_lite.xds import types
from istiod_lite.xds.types import ResourceSet

from .envoy import validate_bootstrap
from .envoy_validate import _inline_routes, _static_cluster


def _used_clusters(route: route_pb2.RouteConfiguration) -> set[str]:
    out = set()
    for vh in route.virtual_hosts:
        for r in vh.routes:
            if r.HasField("route"):
                if r.route.cluster:
                    out.add(r.route.cluster)
                out.update(w.name for w in r.route.weighted_clusters.clusters)
                out.update(m.cluster for m in r.route.request_mirror_policies if m.cluster)
    return out


def _rename(route: route_pb2.RouteConfiguration, prefix: str) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration()
    out.CopyFrom(route)
    for vh in out.virtual_hosts:
        for r in vh.routes:
            if r.HasField("route"):
                if r.route.cluster:
                    r.route.cluster = prefix + r.route.cluster
                for w in r.route.weighted_clusters.clusters:
                    w.name = prefix + w.name
                for m in r.route.request_mirror_policies:
                    if m.cluster:
                        m.cluster = prefix + m.cluster
    return out


def add_example(b: bootstrap_pb2.Bootstrap, index: int, rs: ResourceSet, next_port: list[int]) -> None:
    prefix = f"e{index}-"
    routes = {name: _rename(r, prefix) for name, r in rs.messages(types.ROUTE).items()}
    used: set[str] = set()
    for r in rs.messages(types.ROUTE).values():
        used |= _used_clusters(r)
    for name in rs.names(types.LISTENER):
        if not name.startswith("http-"):
            continue  # HBONE / internal listeners do not depend on VirtualService, DestinationRule or authz shapes
        lst = _inline_routes(rs.messages(types.LISTENER)[name], routes)
        lst.name = prefix + lst.name
        lst.address.socket_address.port_value = next_port[0]
        next_port[0] += 1
        b.static_resources.listeners.append(lst)
    assignments = dict(rs.messages(types.ENDPOINT))
    for name in sorted(used):
        cluster = rs.messages(types.CLUSTER).get(name)
        if cluster is None:
            continue  # a route to a missing cluster is legal Envoy config (503 at run time)
        c = _static_cluster(cluster, assignments)
        c.name = prefix + c.name
        if c.HasField("load_assignment"):
            c.load_assignment.cluster_name = c.name
        b.static_resources.clusters.append(c)


def bootstrap_for(examples: list[ResourceSet]) -> bootstrap_pb2.Bootstrap:
    b = bootstrap_pb2.Bootstrap()
    b.node.id = b.node.cluster = "batch-validate"
    port = [20000]
    for i, rs in enumerate(examples):
        add_example(b, i, rs, port)
    return b


def validate_many(examples: list[ResourceSet], workdir: Path, labels: list[str] | None = None) -> tuple[bool, str]:
    """(ok, report). One Envoy run for all; on failure, one per example to name the failing ones."""
    def run(items: list[ResourceSet], name: str) -> tuple[int, str]:
        path = workdir / f"{name}.json"
        path.write_text(json_format.MessageToJson(bootstrap_for(items), preserving_proto_field_name=True))
        return validate_bootstrap(path)

    code, out = run(examples, "batch")
    if code == 0:
        return True, ""
    failing = []
    for i, rs in enumerate(examples):
        c, o = run([rs], f"example-{i}")
        if c != 0:
            failing.append(f"--- example {i}: {labels[i] if labels else ''}\n{o[-1500:]}")
    return False, "\n".join(failing) or f"batch failed but no single example did:\n{out[-2000:]}"


def dump_docs(docs: list[dict]) -> str:
    return json.dumps(docs, indent=1, sort_keys=True)
