"""xDS type URLs, the ADS push order, and ResourceSet: what the translator produces for one waypoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make before break: clusters, then their endpoints, then listeners, then their route scopes, then the routes the
# scopes name (removals in reverse).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)
# Types Envoy subscribes as (legacy) wildcard: SotW responses carry every resource, and a Delta first request with
# no names is a wildcard subscription. Envoy 1.40 subscribes LDS, CDS and SRDS (scoped_rds without
# srds_resources_locator) that way; EDS, RDS and SDS by name.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})

SHORT_NAMES: Mapping[str, str] = {
    LISTENER: "LDS",
    ROUTE: "RDS",
    SCOPED_ROUTE: "SRDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
}


@dataclass(frozen=True)
class ResourceSet:
    """Envoy resources for one waypoint: type URL -> resource name -> protobuf message.

    `sources` maps (type URL, resource name) -> the input objects (as strings "Kind/ns/name") that the
    resource was built from, so that a NACK can be attributed to the objects that caused it.
    """

    resources: Mapping[str, Mapping[str, Message]] = field(default_factory=dict)
    sources: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def of_type(self, type_url: str) -> Mapping[str, Message]:
        return self.resources.get(type_url, {})

    def names(self, type_url: str) -> list[str]:
        return sorted(self.of_type(type_url))
