"""ClusterLoadAssignments: the endpoints of one cluster (address + the endpoint port for the service port),
filtered by the subset's labels, grouped by locality (sorted) and sorted by address/port."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2

from istiod_lite.model.service import Endpoint
from istiod_lite.translate.destinations import ClusterRef


def endpoint_port(ref: ClusterRef, ep: Endpoint) -> int:
    port = ep.port_for(ref.port.number)
    if port is None:
        port = ref.port.target_port or ref.port.number
    return port


def _locality(text: str) -> base_pb2.Locality:
    parts = (text.split("/") + ["", "", ""])[:3]
    return base_pb2.Locality(region=parts[0], zone=parts[1], sub_zone=parts[2])


def selected_endpoints(ref: ClusterRef) -> list[Endpoint]:
    eps = ref.service.endpoints
    if ref.subset is not None:
        eps = tuple(e for e in eps if e.matches(ref.subset.labels))
    return list(eps)


def load_assignment(ref: ClusterRef, endpoints: list[tuple[str, int, int, str]] | None = None
                    ) -> endpoint_pb2.ClusterLoadAssignment:
    """`endpoints` overrides the service's as (address, port, weight, locality) tuples (used for DNS clusters)."""
    if endpoints is None:
        endpoints = [(e.address, endpoint_port(ref, e), e.weight, e.locality) for e in selected_endpoints(ref)]
    groups: dict[str, list[tuple[str, int, int]]] = {}
    for addr, port, weight, loc in endpoints:
        groups.setdefault(loc, []).append((addr, port, weight))
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=ref.name)
    for loc in sorted(groups):
        lle = cla.endpoints.add()
        if loc:
            lle.locality.CopyFrom(_locality(loc))
        for addr, port, weight in sorted(set(groups[loc])):
            lb = ec.LbEndpoint(endpoint=ec.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=addr, port_value=port))))
            if weight > 0:
                lb.load_balancing_weight.value = weight
            lle.lb_endpoints.append(lb)
    return cla
