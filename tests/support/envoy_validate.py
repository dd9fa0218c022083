"""Turn a translated ResourceSet into a static Envoy bootstrap that `envoy --mode validate` can check:
listeners get the RouteConfiguration named by their RDS inline, EDS clusters become STATIC with their
ClusterLoadAssignment as load_assignment."""

from __future__ import annotations

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from istiod_lite.xds import types
from istiod_lite.xds.types import ResourceSet

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _inline_routes(listener: listener_pb2.Listener, routes: dict[str, route_pb2.RouteConfiguration]
                   ) -> listener_pb2.Listener:
    out = listener_pb2.Listener()
    out.CopyFrom(listener)
    for chain in out.filter_chains:
        for f in chain.filters:
            if f.typed_config.type_url != HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                name = hcm.rds.route_config_name
                if name not in routes:
                    raise AssertionError(f"listener {listener.name} refers to missing RouteConfiguration {name}")
                hcm.route_config.CopyFrom(routes[name])  # oneof: clears rds
            f.typed_config.Pack(hcm)
    return out


def _static_cluster(cluster: cluster_pb2.Cluster, assignments: dict) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    if out.type == cluster_pb2.Cluster.EDS:
        if out.name not in assignments:
            raise AssertionError(f"EDS cluster {out.name} has no ClusterLoadAssignment")
        out.ClearField("eds_cluster_config")
        out.type = cluster_pb2.Cluster.STATIC
        out.load_assignment.CopyFrom(assignments[out.name])
    return out


def static_bootstrap(resources: ResourceSet) -> bootstrap_pb2.Bootstrap:
    routes = dict(resources.of_type(types.ROUTE))
    assignments = dict(resources.of_type(types.ENDPOINT))
    b = bootstrap_pb2.Bootstrap()
    b.node.id = "validate"
    b.node.cluster = "validate"
    for name in resources.names(types.LISTENER):
        b.static_resources.listeners.append(_inline_routes(resources.of_type(types.LISTENER)[name], routes))
    for name in resources.names(types.CLUSTER):
        b.static_resources.clusters.append(_static_cluster(resources.of_type(types.CLUSTER)[name], assignments))
    return b


def bootstrap_json(resources: ResourceSet) -> str:
    return json_format.MessageToJson(static_bootstrap(resources), preserving_proto_field_name=True)
