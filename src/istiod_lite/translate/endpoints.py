"""ClusterLoadAssignments: the endpoints of one cluster (address + the endpoint port for the service port),
filtered by the subset's labels, grouped by locality (sorted) and sorted by address/port.

``eds_assignment(wp, ref)`` also applies the DestinationRule's ``localityLbSetting`` of the cluster's effective
policy (dr_locality.py): group priorities and weights relative to the waypoint's locality.
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2

from istiod_lite.model.service import Endpoint
from istiod_lite.translate import cluster_lb, dr_locality, wire
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef
from istiod_lite.translate.waypoint import Waypoint

_MEMO = "_istiod_lite_eds_memo"
EndpointTuple = tuple[str, int, int, str]  # (address, port, weight, locality)


def endpoint_port(ref: ClusterRef, ep: Endpoint) -> int:
    port = ep.port_for(ref.port.number)
    if port is None:
        port = ref.port.target_port or ref.port.number
    return port


def _locality(text: str) -> base_pb2.Locality:
    region, zone, subzone = dr_locality.split(text)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


def selected_endpoints(ref: ClusterRef) -> list[Endpoint]:
    eps = ref.service.endpoints
    if ref.subset is not None:
        eps = tuple(e for e in eps if e.matches(ref.subset.labels))
    return list(eps)


def _groups(ref: ClusterRef, endpoints: list[EndpointTuple] | None) -> list[dr_locality.Group]:
    rows: list[tuple[str, int, int, str, tuple[tuple[str, str], ...]]]
    if endpoints is None:
        rows = []
        for e in selected_endpoints(ref):
            labels = {**dict(e.labels), **dr_locality.topology_labels(e.locality)}
            rows.append((e.address, endpoint_port(ref, e), e.weight, e.locality, tuple(sorted(labels.items()))))
    else:
        rows = [(a, p, w, loc, tuple(sorted(dr_locality.topology_labels(loc).items()))) for a, p, w, loc in endpoints]
    by_loc: dict[str, dict[tuple[str, int, int], tuple[tuple[str, str], ...]]] = {}
    for addr, port, weight, loc, labels in rows:
        by_loc.setdefault(loc, {}).setdefault((addr, port, weight), labels)
    return [dr_locality.Group(loc, [(a, p, w, by_loc[loc][(a, p, w)]) for a, p, w in sorted(by_loc[loc])])
            for loc in sorted(by_loc)]


def load_assignment(ref: ClusterRef, endpoints: list[EndpointTuple] | None = None,
                    groups: list[dr_locality.Group] | None = None) -> endpoint_pb2.ClusterLoadAssignment:
    """`endpoints` overrides the service's as (address, port, weight, locality) tuples (used for DNS clusters);
    `groups` (already locality-processed) overrides both."""
    if groups is None:
        groups = _groups(ref, endpoints)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=ref.name)
    for g in groups:
        lle = cla.endpoints.add()
        if g.locality:
            lle.locality.CopyFrom(_locality(g.locality))
        if g.priority:
            lle.priority = g.priority
        if g.weight is not None:
            lle.load_balancing_weight.value = g.weight
        for addr, port, weight, _ in g.endpoints:
            lb = ec.LbEndpoint(endpoint=ec.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=addr, port_value=port))))
            if weight > 0:
                lb.load_balancing_weight.value = weight
            lle.lb_endpoints.append(lb)
    return cla


def locality_assignment(wp: Waypoint, ref: ClusterRef, policy: Mapping[str, Any],
                        endpoints: list[EndpointTuple] | None = None) -> endpoint_pb2.ClusterLoadAssignment:
    """The assignment with the policy's locality load balancing applied."""
    lb = policy.get("loadBalancer")
    has_outlier = policy.get("outlierDetection") is not None
    setting = cluster_lb.locality_setting(lb)
    groups = _groups(ref, endpoints)
    labels = {**dict(wp.gateway.meta.labels)}
    proxy_locality = dr_locality.waypoint_locality(labels)
    labels.update(dr_locality.topology_labels(proxy_locality))
    groups = dr_locality.apply(groups, setting, has_outlier, proxy_locality, labels,
                               cluster_lb.wants_locality_weighting(lb, has_outlier))
    return load_assignment(ref, groups=groups)


def eds_assignment(wp: Waypoint, ref: ClusterRef) -> endpoint_pb2.ClusterLoadAssignment:
    """The EDS resource of `ref`'s cluster (the incremental translator calls this per EDS cluster; translate()
    builds them with the clusters, clusters.build_clusters).

    Memoised per translation by everything it reads besides the name (the service's endpoints, the port, the
    subset's labels, the policy's loadBalancer and whether it has outlierDetection; the waypoint is fixed):
    services with equal endpoints and policies share serialized bytes, each result is a fresh message. Equal
    endpoint tuples are hashed once per tuple object (`canonical`), policies once per policy dict."""
    drs = DestinationRules.of(wp)
    rule = drs.for_service(ref.service)
    name = ref.subset.name if ref.subset is not None else None
    policy = drs.effective(rule, ref.port.number, rule.subset(name) if rule is not None and name else None)
    return _CLA_FROM_BYTES(_assignment(wp, memo(wp), ref, policy))


def memo(wp: Waypoint) -> dict:
    """This translation's memo of `assignment_body` and `canonical` (kept on the waypoint)."""
    found = wp.__dict__.get(_MEMO)
    if found is None:
        found = wp.__dict__[_MEMO] = {}
    return found


def _assignment(wp: Waypoint, memo: dict, ref: ClusterRef, policy: Mapping[str, Any]) -> bytes:
    """The serialized ClusterLoadAssignment of `ref`."""
    # cluster_name (1) + the template: the deterministic serialization (fields in number order)
    return wire.string(1, ref.name) + assignment_body(wp, memo, ref, policy, canonical(memo, ref.service.endpoints))


def assignment_body(wp: Waypoint, memo: dict, ref: ClusterRef, policy: Mapping[str, Any],
                    endpoints: tuple[Endpoint, ...]) -> bytes:
    """`ref`'s ClusterLoadAssignment serialized without its cluster_name (field 1): a template shared by the
    clusters with equal endpoints, port, subset labels and locality policy. `endpoints`: `canonical(memo,
    ref.service.endpoints)` (a batch computes it once per service)."""
    pk = memo.get(("policy", id(policy)))
    if pk is None or pk[0] is not policy:
        pk = memo[("policy", id(policy))] = (policy, repr(policy.get("loadBalancer")),
                                             policy.get("outlierDetection") is not None)
    port = ref.port
    key = (id(endpoints), port.number, port.target_port, ref.subset.labels if ref.subset is not None else None,
           pk[1], pk[2])
    body = memo.get(key)
    if body is None:
        cla = locality_assignment(wp, ref, policy)
        cla.cluster_name = ""  # the template: every field but cluster_name (1)
        body = memo[key] = cla.SerializeToString(deterministic=True)
    return body


def canonical(memo: dict, eps: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    """The first endpoint tuple equal to `eps` this translation (kept alive by the memo, so its id is a content
    key); each tuple object is hashed once."""
    hit = memo.get(("eps", id(eps)))
    if hit is not None and hit[0] is eps:
        return hit[1]
    canon = memo.setdefault(("eps content", eps), eps)
    memo[("eps", id(eps))] = (eps, canon)
    return canon


_CLA = endpoint_pb2.ClusterLoadAssignment
_CLA_FROM_BYTES = _CLA.FromString
