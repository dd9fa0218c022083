"""The action of one VirtualService http rule: destinations -> cluster / weighted_clusters, timeout, retries.

- one destination -> ``cluster``; several -> ``weighted_clusters`` (``weight: 0`` entries omitted);
- a destination that cannot be resolved (unknown host/port/subset, reported by destinations.py) is dropped;
  when no destination is left the route answers 503 (``direct_response``) so the rule still matches and later
  rules keep their meaning;
- ``timeout`` -> ``timeout`` and the deprecated ``max_grpc_timeout`` (Istio default 0s = disabled), as Istio does:
  any ``max_stream_duration`` switches Envoy 1.40 to its "new timeouts", where ``timeout`` is ignored for
  plain HTTP requests (measured: a 1s VirtualService timeout then never fires; tests/test_e2e_routing.py);
- ``retries`` -> retries.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, resolve_destination
from istiod_lite.translate.durations import to_duration
from istiod_lite.translate.retries import retry_policy
from istiod_lite.translate.waypoint import Waypoint

NO_DESTINATION_BODY = "no valid destination for this route (see istiod-lite issues)"
ROUTE_DESTINATION_FIELDS = frozenset({"destination", "weight"})


@dataclass
class Action:
    """Either `route` (a RouteAction) or `direct_status` is set; `refs` are the clusters it sends to."""

    route: rc.RouteAction | None = None
    direct_status: int = 0
    refs: list[ClusterRef] = field(default_factory=list)

    def apply(self, r: rc.Route) -> None:
        if self.route is not None:
            r.route.CopyFrom(self.route)
        else:
            r.direct_response.status = self.direct_status
            r.direct_response.body.inline_string = NO_DESTINATION_BODY


def set_timeout(action: rc.RouteAction, timeout: Any) -> None:
    d = to_duration(timeout) if timeout is not None else None
    if d is None:
        d = to_duration("0s")
    action.timeout.CopyFrom(d)
    action.max_grpc_timeout.CopyFrom(d)  # not max_stream_duration: see the module docstring


def default_action(wp: Waypoint, ref: ClusterRef) -> Action:
    """The route of a bound service without VirtualService: its cluster, timeout 0s, default retries."""
    action = rc.RouteAction(cluster=ref.name)
    set_timeout(action, None)
    policy = retry_policy(None, wp.options)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return Action(route=action, refs=[ref])


def build_action(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, rule: Mapping[str, Any], path: str,
                 own: Service, own_port: ServicePort) -> Action:
    dests = rule.get("route") or []
    weighted: list[tuple[ClusterRef, int]] = []
    for j, r in enumerate(dests):
        rpath = f"{path}.route[{j}]"
        for f in sorted(set(r) - ROUTE_DESTINATION_FIELDS):
            wp.report(warning(vs.key, f"{rpath}.{f}", f"{f} is not supported yet; ignored"))
        ref = resolve_destination(wp, drs, vs, r.get("destination") or {}, f"{rpath}.destination", own, own_port)
        if ref is None:
            continue
        weight = int(r.get("weight", 0) or 0)
        if len(dests) > 1 and weight == 0:
            continue
        weighted.append((ref, weight))
    if not weighted:
        return Action(direct_status=503)
    action = rc.RouteAction()
    if len(dests) == 1:
        action.cluster = weighted[0][0].name
    else:
        for ref, weight in weighted:
            action.weighted_clusters.clusters.add(name=ref.name, weight={"value": weight})
    set_timeout(action, rule.get("timeout"))
    policy = retry_policy(rule.get("retries"), wp.options)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return Action(route=action, refs=[ref for ref, _ in weighted])
