"""VirtualService ``mirror`` + ``mirrorPercentage`` and ``mirrors[]`` -> RouteAction.request_mirror_policies
(Istio ``route.go MirrorPercent`` / ``MirrorPercentByPolicy`` / ``TranslateRequestMirrorPolicy``).

Each mirror is one policy {cluster, runtime_fraction, trace_sampled: false}. Percentage: ``mirrorPercentage``
(or a mirror's ``percentage``) value -> per-million fraction; unset -> 100%; an explicit 0 -> that mirror is left
out; the deprecated integer ``mirrorPercent`` is honoured when ``mirrorPercentage`` is absent. Envoy sends the
copy fire-and-forget with ``-shadow`` appended to the Host; the client only sees the primary's answer. A mirror
destination that cannot be resolved is reported (destinations.py) and left out.
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.v3 import percent_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, resolve_destination
from istiod_lite.translate.route_fault import fractional
from istiod_lite.translate.waypoint import Waypoint


def _fraction(percentage: Mapping[str, Any] | None, legacy: Any = None) -> percent_pb2.FractionalPercent | None:
    if percentage is not None:
        value = float((percentage or {}).get("value", 0) or 0)
        return fractional(value) if value > 0 else None
    if legacy is not None:
        value = int(legacy)
        return percent_pb2.FractionalPercent(numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED) \
            if value > 0 else None
    return percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)


def mirror_policies(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, rule: Mapping[str, Any], path: str,
                    own: Service, own_port: ServicePort
                    ) -> tuple[list[rc.RouteAction.RequestMirrorPolicy], list[ClusterRef]]:
    wanted: list[tuple[Mapping[str, Any], str, percent_pb2.FractionalPercent | None]] = []
    if rule.get("mirror"):
        wanted.append((rule["mirror"], f"{path}.mirror",
                       _fraction(rule.get("mirrorPercentage"), rule.get("mirrorPercent"))))
    for i, m in enumerate(rule.get("mirrors") or ()):
        if m.get("destination"):
            wanted.append((m["destination"], f"{path}.mirrors[{i}].destination", _fraction(m.get("percentage"))))
    policies, refs = [], []
    for dest, dpath, fraction in wanted:
        if fraction is None:
            continue  # explicit 0%: no mirror (Istio)
        ref = resolve_destination(wp, drs, vs, dest, dpath, own, own_port)
        if ref is None:
            continue
        policies.append(rc.RouteAction.RequestMirrorPolicy(
            cluster=ref.name, runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=fraction),
            trace_sampled={"value": False}))
        refs.append(ref)
    return policies, refs
