"""Clusters: ``inbound-vip|PORT|http[/SUBSET]|HOST`` for every HTTP port (and DestinationRule subset) of every
service bound to the waypoint, plus ``outbound|PORT|SUBSET|HOST`` for VirtualService destinations not bound to it.

Discovery type by service resolution: STATIC -> EDS over ADS (endpoints in endpoints.py); DNS -> STRICT_DNS and
DNS_ROUND_ROBIN -> LOGICAL_DNS with inline endpoints (the ServiceEntry endpoints, else its host); NONE ->
ORIGINAL_DST. Traffic policy on destination_rules.effective_policy: cluster_policy.py (connection pool, outlier
detection, HTTP protocol options), cluster_lb.py (load balancer), cluster_tls.py (upstream TLS, PROXY protocol),
endpoints.py + dr_locality.py (locality LB of inline endpoints). DestinationRule fields not applied here are
reported once per DestinationRule (dr_report.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.translate import cluster_lb, cluster_policy, cluster_tls, dr_report, endpoints, wire
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, wp_inbound_refs
from istiod_lite.translate.durations import seconds_duration
from istiod_lite.translate.waypoint import Waypoint, http_ports
from istiod_lite.xds import types
from istiod_lite.xds.types import Encoded


_TEMPLATES = "_istiod_lite_cluster_templates"
_FROM_BYTES = cluster_pb2.Cluster.FromString
_CLUSTER = cluster_pb2.Cluster
_INLINE_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN", "NONE"})  # clusters without EDS (see _discovery)


def inbound_refs(wp: Waypoint, drs: DestinationRules) -> list[ClusterRef]:
    refs = []
    for svc in wp.services:  # (memoised refs: the routes to these clusters share the objects)
        rule = drs.for_service(svc)
        for port in http_ports(svc):
            refs += wp_inbound_refs(wp, svc, port, rule.subsets if rule else ())
    return refs


def ads_config_source() -> config_source_pb2.ConfigSource:
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    src.ads.SetInParent()
    return src


def _discovery(c: cluster_pb2.Cluster, ref: ClusterRef) -> bool:
    """Sets the discovery type; True when the cluster needs an EDS ClusterLoadAssignment."""
    res = ref.service.resolution
    if res in ("DNS", "DNS_ROUND_ROBIN"):
        c.type = cluster_pb2.Cluster.STRICT_DNS if res == "DNS" else cluster_pb2.Cluster.LOGICAL_DNS
        eps = [(e.address, endpoints.endpoint_port(ref, e), e.weight, e.locality)
               for e in endpoints.selected_endpoints(ref)]
        if not eps and "*" not in ref.service.hostname:
            eps = [(ref.service.hostname, ref.port.target_port or ref.port.number, 0, "")]
        if res == "DNS_ROUND_ROBIN":
            eps = sorted(eps)[:1]
        c.load_assignment.CopyFrom(endpoints.load_assignment(ref, eps))
        return False
    if res == "NONE":
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return False
    c.type = cluster_pb2.Cluster.EDS
    c.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    return True


def _body(wp: Waypoint, ref: ClusterRef, policy: Mapping[str, Any], name: str) -> tuple[cluster_pb2.Cluster, bool]:
    c = cluster_pb2.Cluster(name=name, connect_timeout=seconds_duration(wp.options.connect_timeout_seconds))
    eds = _discovery(c, ref)
    outlier = policy.get("outlierDetection")
    cluster_policy.apply_outlier_detection(c, outlier)
    cluster_lb.apply_load_balancer(c, policy.get("loadBalancer"), outlier is not None)
    if c.type == cluster_pb2.Cluster.ORIGINAL_DST:
        eds = False
    elif c.HasField("load_assignment") and policy.get("loadBalancer"):
        eps = [(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value,
                e.load_balancing_weight.value, _locality_text(lle.locality))
               for lle in c.load_assignment.endpoints for e in lle.lb_endpoints]
        c.load_assignment.CopyFrom(endpoints.locality_assignment(wp, ref, policy, eps))
    tls = cluster_tls.apply_upstream_tls(c, policy.get("tls"))
    cluster_tls.apply_proxy_protocol(c, policy.get("proxyProtocol"))
    cluster_policy.apply_connection_pool(c, policy.get("connectionPool"), ref.port, policy.get("retryBudget"),
                                         tls, outlier)
    return c, eds


def _eds_template(wp: Waypoint, ref: ClusterRef, policy: Mapping[str, Any], drs: DestinationRules
                  ) -> tuple[bytes, bool]:
    """`_eds_cluster`'s template (every field but the name) and EDS flag."""
    return _template(wp, ref, policy, drs.policy_text(policy))


def _eds_cluster(wp: Waypoint, ref: ClusterRef, policy: Mapping[str, Any], text: str
                 ) -> tuple[bytes, bool]:
    """A cluster without inline endpoints (EDS, or ORIGINAL_DST by a PASSTHROUGH load balancer) from a
    per-translation template: its body (all but the name) and EDS flag depend only on the effective policy and
    the port's protocol, so clusters of equal policies (every cluster
    without a DestinationRule, or with the same policy) are serialized once and parsed per name. The bytes are
    the ones `_body` gives (fields serialize in field-number order whatever the order they were set in)."""
    template, eds = _template(wp, ref, policy, text)
    # the name field (1) + the template (no name): the deterministic serialization (fields in number order)
    return wire.string(1, ref.name) + template, eds


def _template(wp: Waypoint, ref: ClusterRef, policy: Mapping[str, Any], text: str) -> tuple[bytes, bool]:
    memo = wp.__dict__.get(_TEMPLATES)
    if memo is None:
        memo = wp.__dict__[_TEMPLATES] = {}
    key = (ref.port.protocol, text)  # text: repr(policy)
    hit = memo.get(key)
    if hit is None:
        c, eds = _body(wp, ref, policy, "")
        hit = memo[key] = (c.SerializeToString(), eds)
    return hit


def build_cluster(wp: Waypoint, drs: DestinationRules, ref: ClusterRef) -> tuple[cluster_pb2.Cluster, bool, set[ConfigKey]]:
    c, eds, keys = _build(wp, drs, ref, drs.for_service(ref.service))
    if isinstance(c, bytes):
        c = _FROM_BYTES(c)
    return c, eds, {k for k in keys if k is not None}


def _build(wp: Waypoint, drs: DestinationRules, ref: ClusterRef, rule
           ) -> tuple[cluster_pb2.Cluster | bytes, bool, tuple[ConfigKey, ConfigKey | None, ConfigKey | None]]:
    """`build_cluster` with the service's rule already looked up; the sources as (service, DR with the
    top-level policy or None, DR of the subset or None). The cluster is a message, or (from a template) its
    serialized bytes."""
    subset = ref.subset
    policy = drs.effective(rule, ref.port.number, subset)
    if ref.service.resolution in _INLINE_RESOLUTIONS:
        c, eds = _body(wp, ref, policy, ref.name)
    else:
        c, eds = _eds_cluster(wp, ref, policy, drs.policy_text(policy))
    if rule is None:
        return c, eds, (ref.service.key, None, None)
    if policy.get("loadBalancer") is not None:  # (no loadBalancer: no locality failover setting)
        _check_failover(wp, rule, ref, policy)
    return c, eds, (ref.service.key, rule.policy_source, subset.source if subset is not None else None)


def _locality_text(loc) -> str:
    return "/".join((loc.region, loc.zone, loc.sub_zone)) if (loc.region or loc.zone or loc.sub_zone) else ""


def _check_failover(wp: Waypoint, rule, ref: ClusterRef, policy: Mapping[str, Any]) -> None:
    setting = cluster_lb.locality_setting(policy.get("loadBalancer")) or {}
    if (setting.get("failover") or setting.get("failoverPriority")) and not setting.get("distribute") \
            and policy.get("outlierDetection") is None:
        key = ref.subset.source if ref.subset is not None and ref.subset.traffic_policy else rule.policy_source
        if key is None:
            return
        wp.report(warning(key, "spec.trafficPolicy.loadBalancer.localityLbSetting", f"cluster {ref.name}: "
                          "locality failover applies only together with outlierDetection (as Istio); ignored",
                          "FailoverNeedsOutlierDetection"))


@dataclass
class BuiltClusters:
    """What `build_clusters` gives: the clusters and the EDS ClusterLoadAssignments by name, as the `Encoded` the
    cache serves, and the sources of each (the keys of the service and DestinationRules read; resources of one
    service with the same sources share one tuple)."""

    clusters: dict[str, Encoded] = field(default_factory=dict)
    cluster_sources: dict[str, tuple[ConfigKey, ...]] = field(default_factory=dict)
    assignments: dict[str, Encoded] = field(default_factory=dict)
    assignment_sources: dict[str, tuple[ConfigKey, ...]] = field(default_factory=dict)


def build_clusters(wp: Waypoint, drs: DestinationRules, refs: list[ClusterRef]) -> BuiltClusters:
    """The cluster of each distinct name in `refs` (the first ref of a name wins) and, for an EDS cluster, its
    ClusterLoadAssignment: `build_cluster` + `endpoints.eds_assignment` of each, in one pass that does the
    per-service work (DestinationRule lookup and report, endpoints, source keys) once per run of refs of one
    service (clusters.inbound_refs lists a service's refs together). The dicts are in `refs` order, not sorted."""
    out = BuiltClusters()
    clusters, cluster_sources = out.clusters, out.cluster_sources
    assignments, assignment_sources = out.assignments, out.assignment_sources
    reported: set[ConfigKey] = set()
    templates: dict[tuple[int, str], tuple[Mapping[str, Any], bytes, bool]] = {}  # (id(policy), protocol) ->
    eds_memo = endpoints.memo(wp)
    effective = drs.effective
    named = Encoded.named
    svc = rule = svc_key = policy_source = eps = None
    keys: dict[tuple[int, int], tuple[ConfigKey, ...]] = {}  # this service's source tuples by the other keys' ids
    port_policies: dict[int, dict[str, Any]] = {}  # this service's effective policies without a subset's, by port
    inline = False
    for ref in refs:
        name = ref.name
        if name in clusters:
            continue
        if ref.service is not svc:
            svc = ref.service
            rule = drs.for_service(svc)
            if rule is not None:
                for key in rule.keys:
                    if key not in reported:
                        reported.add(key)
                        dr_report.report_destination_rule(wp, wp.snapshot.config(key))
            policy_source = rule.policy_source if rule is not None else None
            svc_key = svc.key
            inline = svc.resolution in _INLINE_RESOLUTIONS
            eps = endpoints.canonical(eds_memo, svc.endpoints)
            keys = {}
            port_policies = {}
        port, subset = ref.port, ref.subset
        if subset is None or not subset.traffic_policy:  # (DestinationRules.effective: the port's very dict)
            policy = port_policies.get(port.number)
            if policy is None:
                policy = port_policies[port.number] = effective(rule, port.number, None)
        else:
            policy = effective(rule, port.number, subset)
        if inline:
            c, eds = _body(wp, ref, policy, name)
            clusters[name] = Encoded.of(types.CLUSTER, c, name)
        else:
            hit = templates.get((id(policy), port.protocol))
            if hit is None or hit[0] is not policy:
                hit = templates[(id(policy), port.protocol)] = (policy, *_eds_template(wp, ref, policy, drs))
            clusters[name] = named(_CLUSTER_URL, name, hit[1], _CLUSTER)
            eds = hit[2]
        if rule is not None and "loadBalancer" in policy and policy["loadBalancer"] is not None:
            _check_failover(wp, rule, ref, policy)  # (no loadBalancer: no locality failover setting)
        subset_source = subset.source if subset is not None else None
        # (a subset of the DR with the top-level policy adds no source: its clusters share the service's tuple)
        other = subset_source if subset_source is not policy_source else None
        src = keys.get((id(policy_source), id(other)))
        if src is None:
            src = keys[(id(policy_source), id(other))] = _keys(svc_key, policy_source, other)
        cluster_sources[name] = src
        if eds:
            if subset is not None:  # (endpoints.eds_assignment looks the subset up by name in the rule)
                same = rule.subset(subset.name) if rule is not None and subset.name else None
                if same is not subset:
                    policy = effective(rule, port.number, same)
            assignments[name] = named(_ENDPOINT_URL, name,
                                      endpoints.assignment_body(wp, eds_memo, ref, policy, eps), _CLA)
            src = keys.get((id(subset_source), id(None)))
            if src is None:  # (the same tuple as a cluster's when its sources are the same keys)
                src = keys[(id(subset_source), id(None))] = _keys(svc_key, subset_source, None)
            assignment_sources[name] = src
    return out


def _keys(a: ConfigKey, b: ConfigKey | None, c: ConfigKey | None) -> tuple[ConfigKey, ...]:
    return (a,) if b is None and c is None else (a, b) if c is None else (a, c) if b is None else (a, b, c)


_CLUSTER_URL = types.CLUSTER
_ENDPOINT_URL = types.ENDPOINT
_CLA = endpoint_pb2.ClusterLoadAssignment
