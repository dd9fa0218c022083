"""DestinationRule lookup and merge for a service, and the effective traffic policy of one port/subset.

Lookup (Istio ``SidecarScope.DestinationRule`` simplified): a DR applies when its ``host`` (short names resolved in
the DR's namespace) matches the service hostname. The most specific host wins (exact > longest wildcard); among
equal hosts, a DR in the service's namespace, then the waypoint's, then the root namespace, then any other. DRs
with that same host and rank are merged: subsets concatenated by name (duplicates dropped, reported), the first
(oldest, then by key) top-level ``trafficPolicy`` wins.

Policy precedence (``GetPortLevelTrafficPolicy`` + ``MergeTrafficPolicy``): ``portLevelSettings[port]`` *replaces*
the DR-level loadBalancer/connectionPool/outlierDetection/tls; a subset's policy (itself port-level resolved)
overrides per component when it sets that component or has port-level settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.model.service import Service
from istiod_lite.translate.waypoint import Waypoint

COMPONENTS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")


@dataclass(frozen=True)
class Subset:
    name: str
    labels: tuple[tuple[str, str], ...]
    traffic_policy: Mapping[str, Any] | None
    source: ConfigKey
    index: int  # position in the source DR's spec.subsets


@dataclass(frozen=True)
class MergedRule:
    host: str
    traffic_policy: Mapping[str, Any] | None
    subsets: tuple[Subset, ...]
    keys: tuple[ConfigKey, ...]
    policy_source: ConfigKey | None

    def subset(self, name: str) -> Subset | None:
        for s in self.subsets:
            if s.name == name:
                return s
        return None


def _specificity(host: str) -> tuple[int, int]:
    return (0, 0) if "*" not in host else (1, -len(host))


def _age(dr: IstioConfig) -> tuple:
    return (dr.meta.creation_timestamp or "~", dr.key)


class DestinationRules:
    """Per-translation DR index (memoised per service hostname)."""

    def __init__(self, wp: Waypoint) -> None:
        self._wp = wp
        self._cache: dict[tuple[str, str], MergedRule | None] = {}
        suffix = wp.snapshot.domain_suffix
        self._rules = [(resolve_short_name(str(dr.spec.get("host", "")), dr.namespace, suffix), dr)
                       for dr in wp.snapshot.destination_rules]

    def for_service(self, service: Service) -> MergedRule | None:
        ck = (service.hostname, service.namespace)
        if ck not in self._cache:
            self._cache[ck] = self._lookup(service)
        return self._cache[ck]

    def _ns_rank(self, ns: str, service: Service) -> int:
        order = (service.namespace, self._wp.namespace, self._wp.snapshot.root_namespace)
        return order.index(ns) if ns in order else len(order)

    def _lookup(self, service: Service) -> MergedRule | None:
        cands = [(host, dr) for host, dr in self._rules if host and host_matches(host, service.hostname)]
        if not cands:
            return None
        best = min(cands, key=lambda c: (_specificity(c[0]), self._ns_rank(c[1].namespace, service), _age(c[1])))
        best_rank = (_specificity(best[0]), self._ns_rank(best[1].namespace, service))
        chosen = sorted((dr for host, dr in cands
                         if host == best[0] and (_specificity(host), self._ns_rank(dr.namespace, service)) == best_rank),
                        key=_age)
        subsets: list[Subset] = []
        seen: set[str] = set()
        policy = None
        policy_source = None
        for dr in chosen:
            if policy is None and dr.spec.get("trafficPolicy"):
                policy, policy_source = dr.spec["trafficPolicy"], dr.key
            for i, s in enumerate(dr.spec.get("subsets") or ()):
                name = str(s.get("name", ""))
                if name in seen:
                    self._wp.report(warning(dr.key, f"spec.subsets[{i}].name", f"subset {name!r} for host "
                                            f"{best[0]} is already defined by another DestinationRule; ignored",
                                            "DuplicateSubset"))
                    continue
                seen.add(name)
                labels = tuple(sorted((str(k), str(v)) for k, v in (s.get("labels") or {}).items()))
                subsets.append(Subset(name, labels, s.get("trafficPolicy"), dr.key, i))
        return MergedRule(best[0], policy, tuple(subsets), tuple(dr.key for dr in chosen), policy_source)


def port_level(policy: Mapping[str, Any] | None, port: int) -> dict[str, Any]:
    """The policy for `port`: a matching portLevelSettings entry replaces the four components."""
    if not policy:
        return {}
    out = {k: v for k, v in policy.items() if k != "portLevelSettings"}
    for pls in policy.get("portLevelSettings") or ():
        if (pls.get("port") or {}).get("number") == port:
            for comp in COMPONENTS:
                out.pop(comp, None)
                if comp in pls:
                    out[comp] = pls[comp]
            out["_portLevel"] = True
            break
    return out


def effective_policy(rule: MergedRule | None, port: int, subset: Subset | None = None) -> dict[str, Any]:
    """The traffic policy of cluster (port, subset) per Istio's precedence (module doc)."""
    if rule is None:
        return {}
    base = port_level(rule.traffic_policy, port)
    if subset is None or not subset.traffic_policy:
        return base
    sub = port_level(subset.traffic_policy, port)
    merged = dict(base)
    has_port = bool(sub.get("_portLevel"))
    for comp in COMPONENTS:
        if comp in sub or has_port:
            merged.pop(comp, None)
            if comp in sub:
                merged[comp] = sub[comp]
    for k, v in sub.items():
        if k not in COMPONENTS and k != "_portLevel":
            merged[k] = v
    return merged
