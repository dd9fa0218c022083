"""DestinationRule ``localityLbSetting`` -> priorities and weights of the endpoint groups of one cluster
(Istio ``loadbalancer.ApplyLocalityLoadBalancer``), relative to the waypoint's own locality.

The waypoint's locality is read from its Gateway's labels ``topology.kubernetes.io/region``,
``topology.kubernetes.io/zone`` and ``topology.istio.io/subzone`` (Istio reads the proxy's node); its labels
(plus those topology labels) are the "proxy labels" that ``failoverPriority`` compares with endpoint labels.
An endpoint's locality is ``region/zone/subzone`` (model.service.Endpoint.locality); its labels get the same
three topology labels derived from it, as Istio adds them.

- ``enabled: false`` -> nothing (cluster_lb.locality_setting); no setting = the mesh default ``{enabled: true}``;
- ``distribute`` (first entry whose ``from`` matches the waypoint's locality, ``*`` wildcards): each endpoint
  group matching a ``to`` locality gets weight ``ceil(own * w / total)``; groups matching none are dropped
  (Istio keeps them empty);
- otherwise, only with outlier detection (Istio: "failover should only be applied with outlier detection"):
  ``failoverPriority`` labels split groups into priorities (then ``failover`` is applied on top when given);
  else locality failover: priority 0 same region/zone/subzone, 1 same zone, 2 same region, 3 other, 4 other
  region not named by a ``failover`` entry ``from`` the waypoint's region; priorities are then renumbered
  0..N without gaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
SUBZONE = "topology.istio.io/subzone"


@dataclass
class Group:
    """One LocalityLbEndpoints being built: endpoints are (address, port, weight, labels)."""

    locality: str
    endpoints: list[tuple[str, int, int, tuple[tuple[str, str], ...]]] = field(default_factory=list)
    priority: int = 0
    weight: int | None = None

    @property
    def own_weight(self) -> int:
        return sum(max(1, w) for _, _, w, _ in self.endpoints)


def split(locality: str) -> tuple[str, str, str]:
    parts = (locality.split("/") + ["", "", ""])[:3]
    return parts[0], parts[1], parts[2]


def topology_labels(locality: str) -> dict[str, str]:
    region, zone, subzone = split(locality)
    out = {}
    if region:
        out[REGION] = region
    if zone:
        out[ZONE] = zone
    if subzone:
        out[SUBZONE] = subzone
    return out


def waypoint_locality(labels: Mapping[str, str]) -> str:
    return "/".join((labels.get(REGION, ""), labels.get(ZONE, ""), labels.get(SUBZONE, "")))


def locality_match(locality: str, rule: str) -> bool:
    """Istio ``util.LocalityMatch``: `rule` is region[/zone[/subzone]] with ``*`` wildcards."""
    region, zone, subzone = split(locality)
    r_region, r_zone, r_subzone = split(rule)
    return ((r_region == "*" or region == r_region) and (r_zone in ("*", "") or zone == r_zone)
            and (r_subzone in ("*", "") or subzone == r_subzone))


def lb_priority(proxy: str, endpoint: str) -> int:
    p, e = split(proxy), split(endpoint)
    if p[0] != e[0]:
        return 3
    if p[1] != e[1]:
        return 2
    return 0 if p[2] == e[2] else 1


def apply(groups: list[Group], setting: Mapping[str, Any] | None, has_outlier: bool, proxy_locality: str,
          proxy_labels: Mapping[str, str], weighted: bool) -> list[Group]:
    """Returns the groups with priorities/weights set (and maybe split). `weighted`: the cluster uses
    locality-weighted LB, so every group needs a weight."""
    if setting is None:
        return groups
    if setting.get("distribute"):
        _distribute(groups, setting["distribute"], proxy_locality)
        groups = [g for g in groups if g.endpoints]
    elif has_outlier:
        if setting.get("failoverPriority"):
            groups = _failover_priorities(groups, list(setting["failoverPriority"]), proxy_labels)
            if setting.get("failover"):
                _failover(groups, setting["failover"], proxy_locality)
        else:
            _failover(groups, setting.get("failover") or (), proxy_locality)
    if weighted:
        for g in groups:
            if g.weight is None:
                g.weight = g.own_weight
    return groups


def _distribute(groups: list[Group], rules: list[Mapping[str, Any]], proxy_locality: str) -> None:
    for rule in rules:
        if not locality_match(proxy_locality, str(rule.get("from", ""))):
            continue
        unmatched = set(range(len(groups)))
        for to, weight in sorted((rule.get("to") or {}).items()):
            claimed = [i for i in sorted(unmatched) if locality_match(groups[i].locality, str(to))]
            total = sum(groups[i].own_weight for i in claimed)
            for i in claimed:
                unmatched.discard(i)
                w = math.ceil(groups[i].own_weight * int(weight) / total) if total else 0
                groups[i].weight = w if w > 0 else None
        for i in unmatched:
            groups[i].endpoints = []
        return


def _failover(groups: list[Group], failover: Any, proxy_locality: str) -> None:
    region = split(proxy_locality)[0]
    for g in groups:
        prio = lb_priority(proxy_locality, g.locality)
        if prio == 3:
            for f in failover:
                if f.get("from") == region:
                    if split(g.locality)[0] != f.get("to"):
                        prio = 4
                    break
        g.priority = g.priority * 5 + prio
    _renumber(groups)


def _renumber(groups: list[Group]) -> None:
    ranks = {p: i for i, p in enumerate(sorted({g.priority for g in groups}))}
    for g in groups:
        g.priority = ranks[g.priority]


def _failover_priorities(groups: list[Group], priorities: list[str], proxy_labels: Mapping[str, str]) -> list[Group]:
    if not proxy_labels:
        return groups
    names, overrides = [], {}
    for item in priorities:
        name, sep, value = item.partition("=")
        names.append(name)
        if sep:
            overrides[name] = value
    lowest = len(names)
    out: list[Group] = []
    for g in groups:
        by_prio: dict[int, list] = {}
        for ep in g.endpoints:
            labels = dict(ep[3])
            prio = 0
            for j, name in enumerate(names):
                want = overrides.get(name, proxy_labels.get(name))
                if want != labels.get(name):
                    prio = lowest - j
                    break
            by_prio.setdefault(prio, []).append(ep)
        for prio in sorted(by_prio):
            part = Group(g.locality, by_prio[prio], prio)
            part.weight = part.own_weight
            out.append(part)
    _renumber(out)
    return out
