"""DestinationRule lookup and merge for a service, the effective traffic policy of one port/subset, and the
route hash policies of consistent-hash load balancing.

Lookup (Istio ``PushContext.destinationRule`` for the waypoint proxy, whose config namespace is the waypoint's):
a DR is a candidate when its ``host`` (short names resolved in the DR's namespace) matches the service hostname,
it is visible from the waypoint's namespace (``exportTo``: absent or ``*`` = everywhere, ``.`` = its own
namespace, ``~`` = nowhere, else the listed namespaces; a DR in the waypoint's own namespace is always visible)
and it has no ``workloadSelector`` (such a DR targets sidecars: reported as not applicable at a waypoint).
Namespaces are searched in Istio's order: the waypoint's namespace, the service's namespace, the root namespace,
then any other; in the first namespace with a candidate the most specific host wins (exact > longest
wildcard). DRs of that namespace with that same host are merged (Istio ``mergeDestinationRule``): subsets
concatenated in creation order (a duplicate name is dropped and reported), the first (oldest, then by key)
top-level ``trafficPolicy`` wins (the others are reported as shadowed).

Policy precedence (``GetPortLevelTrafficPolicy`` + ``MergeSubsetTrafficPolicy``): ``portLevelSettings[port]``
*replaces* the DR-level loadBalancer/connectionPool/outlierDetection/tls (an omitted component falls back to
defaults, not to the DR level); a subset's policy (itself port-level resolved) overrides per component when it
sets that component or has port-level settings for the port; other fields (retryBudget, proxyProtocol, tunnel)
are overridden when the subset sets them.

``hash_policies(wp, service, port, subset)``: the consistentHash key of that effective policy as Envoy route
``hash_policy`` (called by route building; a route whose destination uses consistent hash must also drop the
``previous_hosts`` retry predicate, see ``uses_consistent_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc

from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate.durations import to_duration
from istiod_lite.translate.waypoint import Waypoint

COMPONENTS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_MISSING = object()
_CACHE_ATTR = "_istiod_lite_destination_rules"


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


def visible_from(dr: IstioConfig, namespace: str) -> bool:
    """Istio exportTo semantics for a DR seen from a proxy in `namespace`."""
    if dr.namespace == namespace:
        return True
    export = [str(x) for x in dr.spec.get("exportTo") or ()]
    if not export or "*" in export:
        return True
    return namespace in export


def selector_issues(wp: Waypoint) -> list:
    return [warning(dr.key, "spec.workloadSelector", "a DestinationRule with workloadSelector applies to sidecars "
                    "only; it is not applied at a waypoint", "NotApplicable")
            for dr in wp.snapshot.destination_rules_with_selector()]


class DestinationRules:
    """Per-translation DR index (memoised per service hostname). `of(wp)` returns the instance of this
    translation (created on first use), so route and cluster building share one index."""

    def __init__(self, wp: Waypoint, report_selectors: bool = True, shared: dict | None = None) -> None:
        """`report_selectors`: report the DRs with workloadSelector (once per translation; the incremental
        translator reports them itself, see `selector_issues`). `shared`: a lookup memo shared by several
        instances over one snapshot (the incremental translator's per-unit instances); a hit re-reports the
        issues the lookup raised, so each instance's waypoint gets the same issues as without sharing."""
        self._wp = wp
        self._cache: dict[tuple[str, str], MergedRule | None] = {}
        self._shared = shared
        self._policies: dict[tuple[int, int, int], tuple[Any, Any, dict[str, Any]]] = {}
        self._texts: dict[int, tuple[Mapping[str, Any], str]] = {}
        self._hashes: dict[int, tuple[Mapping[str, Any], list]] = {}
        self._by_id: dict[int, tuple[Service, MergedRule | None]] = {}
        self._namespace = wp.namespace
        self._label_memo: dict[tuple, tuple[tuple[str, str], ...]] = {}
        if report_selectors:
            for issue in selector_issues(wp):
                wp.report(issue)
        wp.__dict__.setdefault(_CACHE_ATTR, self)

    def _candidates(self, service: Service) -> list[tuple[str, IstioConfig]]:
        """(resolved host, DR) of the DRs visible here whose host matches (snapshot index by host)."""
        snapshot = self._wp.snapshot
        ns = self._namespace
        hostname = service.hostname
        out = []
        for dr in snapshot.destination_rules_for_host(hostname):
            spec = dr.spec
            if spec.get("workloadSelector") or (dr.meta.key.namespace != ns and not visible_from(dr, ns)):
                continue
            raw = spec.get("host", "")
            host = raw if type(raw) is str and "." in raw and raw[:1] != "*" else \
                resolve_short_name(str(raw), dr.namespace, snapshot.domain_suffix)  # (as resolve_short_name)
            if host and (host == hostname or host_matches(host, hostname)):
                out.append((host, dr))
        return out

    @classmethod
    def of(cls, wp: Waypoint) -> "DestinationRules":
        found = wp.__dict__.get(_CACHE_ATTR)
        return found if isinstance(found, cls) else cls(wp)

    def for_service(self, service: Service) -> MergedRule | None:
        hit = self._by_id.get(id(service))  # the same Service object is asked about ~10 times per translation
        if hit is not None and hit[0] is service:
            return hit[1]
        rule = self._for_service(service)
        self._by_id[id(service)] = (service, rule)
        return rule

    def _for_service(self, service: Service) -> MergedRule | None:
        ck = (service.hostname, service.meta.key.namespace)
        rule = self._cache.get(ck, _MISSING)
        if rule is not _MISSING:
            return rule
        if self._shared is None:
            rule = self._lookup(service)
        elif ck in self._shared:
            rule, issues = self._shared[ck]
            for issue in issues:
                self._wp.report(issue)
        else:
            before = len(self._wp.issues)
            rule = self._lookup(service)
            self._shared[ck] = (rule, tuple(self._wp.issues[before:]))
        self._cache[ck] = rule
        return rule

    def effective(self, rule: MergedRule | None, port: int, subset: Subset | None = None) -> dict[str, Any]:
        """`effective_policy(rule, port, subset)`, memoised (clusters, endpoints and routes all ask for the same
        ones). The dict is shared: read it, never change it. A subset without a traffic policy gets the very
        dict of its rule's port (equal content), so its clusters share one policy (and one `policy_text`)."""
        key = (id(rule), port, id(subset))
        hit = self._policies.get(key)
        if hit is None or hit[0] is not rule or hit[1] is not subset:
            if subset is not None and not subset.traffic_policy:
                policy = self.effective(rule, port, None)
            else:
                policy = effective_policy(rule, port, subset)
            hit = self._policies[key] = (rule, subset, policy)
        return hit[2]

    def ref_policy(self, service: Service, port: int, subset: Subset | None) -> dict[str, Any]:
        """`policy_for(wp, service, port, subset)` of this index (the subset looked up by name, as there)."""
        rule = self.for_service(service)
        name = subset.name if subset is not None else None
        return self.effective(rule, port, rule.subset(name) if rule is not None and name else None)

    def route_hashes(self, service: Service, port: int, subset: Subset | None) -> list[rc.RouteAction.HashPolicy]:
        """`hash_policies(wp, service, port, subset)` (a new list; its messages are shared read-only), once per
        effective policy."""
        policy = self.ref_policy(service, port, subset)
        hit = self._hashes.get(id(policy))
        if hit is None or hit[0] is not policy:
            ch = consistent_hash(policy)
            hp = hash_policy(ch) if ch is not None else None
            hit = self._hashes[id(policy)] = (policy, [hp] if hp is not None else [])
        return list(hit[1])

    def policy_text(self, policy: Mapping[str, Any]) -> str:
        """repr(policy), once per memoised policy dict (a content key for templates built from a policy)."""
        hit = self._texts.get(id(policy))
        if hit is None or hit[0] is not policy:
            hit = self._texts[id(policy)] = (policy, repr(policy))
        return hit[1]

    def _ns_rank(self, ns: str, service: Service) -> int:
        order = (self._wp.namespace, service.namespace, self._wp.snapshot.root_namespace)
        return order.index(ns) if ns in order else len(order)

    def _lookup(self, service: Service) -> MergedRule | None:
        cands = self._candidates(service)
        if not cands:
            return None
        if len(cands) == 1:  # the common case: one DR for the host (same result as below, without ranking)
            host, dr = cands[0]
            return self._merge(host, (dr,))

        def rank(c: tuple[str, IstioConfig]) -> tuple:
            ns_rank = self._ns_rank(c[1].namespace, service)
            # "other" namespaces are searched one at a time, in name order
            return (ns_rank, c[1].namespace if ns_rank == 3 else "", _specificity(c[0]))

        best = min(cands, key=lambda c: (rank(c), _age(c[1])))
        best_rank = rank(best)
        return self._merge(best[0], sorted((dr for host, dr in cands if host == best[0] and rank((host, dr)) == best_rank),
                                           key=_age))

    def _merge(self, host: str, chosen: Sequence[IstioConfig]) -> MergedRule:
        """Istio ``mergeDestinationRule`` of the DRs `chosen` for `host` (oldest first)."""
        subsets: list[Subset] = []
        seen: set[str] = set()
        policy = None
        policy_source = None
        for dr in chosen:
            spec, key = dr.spec, dr.meta.key
            if spec.get("trafficPolicy"):
                if policy is None:
                    policy, policy_source = spec["trafficPolicy"], key
                else:
                    self._wp.report(warning(key, "spec.trafficPolicy", f"host {host} already has a "
                                            f"top-level trafficPolicy from the older {policy_source}; this one "
                                            "is ignored (Istio merge: first wins)", "Shadowed"))
            for i, s in enumerate(spec.get("subsets") or ()):
                name = s.get("name", "")
                if type(name) is not str:
                    name = str(name)
                if name in seen:
                    self._wp.report(warning(key, f"spec.subsets[{i}].name", f"subset {name!r} for host "
                                            f"{host} is already defined by another DestinationRule; ignored",
                                            "DuplicateSubset"))
                    continue
                seen.add(name)
                sub = _object(Subset)
                sub.__dict__.update(name=name, labels=self._labels(s.get("labels")),
                                    traffic_policy=s.get("trafficPolicy"), source=key, index=i)
                subsets.append(sub)
        rule = _object(MergedRule)
        rule.__dict__.update(host=host, traffic_policy=policy, subsets=tuple(subsets),
                             keys=tuple([dr.meta.key for dr in chosen]), policy_source=policy_source)
        return rule

    def _labels(self, raw: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
        """A subset's labels as sorted (str, str) pairs; equal label maps share one tuple per translation."""
        if not raw:
            return ()
        items = tuple(raw.items())
        try:
            hit = self._label_memo.get(items)
        except TypeError:  # (an unhashable value: converted as it is, not memoised)
            return tuple(sorted([(str(k), str(v)) for k, v in items]))
        if hit is None:
            hit = self._label_memo[items] = tuple(sorted([(str(k), str(v)) for k, v in items]))
        return hit


_object = object.__new__  # `_object(cls)` + `__dict__.update(fields)`: `cls(**fields)` for the frozen dataclasses
# above without their generated __init__ (one object.__setattr__ per field: ~3 us per object, the bulk of a DR
# lookup); same fields, same object.


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
    base.pop("_portLevel", None)
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


def policy_for(wp: Waypoint, service: Service, port: int | ServicePort, subset: str | Subset | None
               ) -> dict[str, Any]:
    """The effective policy of (service, port, subset); `port` may be a number or a ServicePort, `subset` a name
    or a Subset. Memoised per translation: read-only."""
    drs = DestinationRules.of(wp)
    rule = drs.for_service(service)
    number = port.number if isinstance(port, ServicePort) else int(port)
    name = subset.name if isinstance(subset, Subset) else subset
    sub = rule.subset(name) if rule is not None and name else None
    return drs.effective(rule, number, sub)


def consistent_hash(policy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    lb = policy.get("loadBalancer") or {}
    ch = lb.get("consistentHash")
    return ch if isinstance(ch, Mapping) else None


def hash_policy(ch: Mapping[str, Any]) -> rc.RouteAction.HashPolicy | None:
    """Istio ``consistentHashToHashPolicy``: the hash key of a consistentHash setting."""
    hp = rc.RouteAction.HashPolicy()
    if ch.get("httpHeaderName"):
        hp.header.header_name = str(ch["httpHeaderName"])
    elif ch.get("httpCookie"):
        cookie = ch["httpCookie"]
        hp.cookie.name = str(cookie.get("name", ""))
        if cookie.get("path"):
            hp.cookie.path = str(cookie["path"])
        if cookie.get("ttl") is not None and (d := to_duration(cookie["ttl"])) is not None:
            hp.cookie.ttl.CopyFrom(d)
        for attr in cookie.get("attributes") or ():
            hp.cookie.attributes.add(name=str(attr.get("name", "")), value=str(attr.get("value", "")))
    elif ch.get("useSourceIp"):
        hp.connection_properties.source_ip = True
    elif ch.get("httpQueryParameterName"):
        hp.query_parameter.name = str(ch["httpQueryParameterName"])
    else:
        return None
    return hp


def hash_policies(wp: Waypoint, service: Service, port: int | ServicePort, subset: str | Subset | None
                  ) -> list[rc.RouteAction.HashPolicy]:
    """Route hash policies for a destination (service, service port number, DR subset name or None): the
    consistentHash key of the merged policy (top level < port level < subset), [] without consistent hash."""
    ch = consistent_hash(policy_for(wp, service, port, subset))
    if ch is None:
        return []
    hp = hash_policy(ch)
    return [hp] if hp is not None else []


def uses_consistent_hash(wp: Waypoint, service: Service, port: int | ServicePort, subset: str | Subset | None
                         ) -> bool:
    """True when the destination's cluster load-balances by consistent hash (Istio then omits the
    ``previous_hosts`` retry host predicate on the route)."""
    return bool(hash_policies(wp, service, port, subset))
