"""Which parts of a waypoint's incremental state a change reaches (translate/incremental.py), from the model-level
keys `ConfigSnapshot.changed` names:

- a unit (a bound service) reads its Service, the VirtualServices whose hosts match its hostname, the
  DestinationRules matching its hostname and its destinations' hostnames, the AuthorizationPolicies targeting
  its Service/ServiceEntry, the waypoint Gateway or its GatewayClass, and the services its routes resolve
  (`dest_hosts`); its HBONE routes read the same; a unit only AuthorizationPolicies reach gets its RBAC configs
  rebuilt alone (incremental_units.rebuild_authz);
- the TCP pseudo unit reads every VirtualService with tcp rules or matching a bound service, and the hosts it
  resolved (incremental_hbone.py);
- a cluster (and its ClusterLoadAssignment) reads its service and the DestinationRules matching its hostname;
- everything else (listeners, domains, service binding, HBONE VIP claims) reads the Gateway and the *shape* of
  the bound services: a change of those, a Namespace (labels: binding, ambient mode) or an unknown kind raises
  _Full.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import authz_attach
from istiod_lite.translate.incremental_state import CONFIG_KINDS, SERVICE_KINDS, TCP_UNIT, _Full, _State, shape


def dirty(st: _State, prev: ConfigSnapshot, snapshot: ConfigSnapshot, changed: frozenset[ConfigKey],
          waypoint: ConfigKey, policy_only: set[str] | None = None) -> tuple[set[str], set[str], set[ConfigKey], bool]:
    """(unit keys to rebuild, lowercased hostnames whose clusters to rebuild, policies whose attachment issues
    to recompute, whether a DR with workloadSelector changed); raises _Full when the change is outside the
    incremental model. `policy_only`, when given, receives the unit keys that only AuthorizationPolicy changes
    reach (their routes are unchanged: only their RBAC configs need rebuilding)."""
    if snapshot.gateway(waypoint) is not st.gateway:
        raise _Full()
    units: set[str] = set()
    by_policy: set[str] = set()
    hosts: set[str] = set()
    attach: set[ConfigKey] = set()
    selectors = False
    suffix = snapshot.domain_suffix
    has_tcp = TCP_UNIT in st.units
    for key in changed:
        if key.kind in SERVICE_KINDS:
            old, new = prev.services_with_key(key), snapshot.services_with_key(key)
            if any(s.waypoint == waypoint for s in (*old, *new)) and [shape(s) for s in old] != [shape(s) for s in new]:
                raise _Full()
            hosts.update(s.hostname.lower() for s in (*old, *new))
        elif key.kind in CONFIG_KINDS:
            for cfg in (prev.config(key), snapshot.config(key)):
                if cfg is None:
                    continue
                if key.kind == "VirtualService":
                    matched = False
                    for h in cfg.spec.get("hosts") or ():
                        for x in hosts_matching(st, resolve_short_name(str(h), cfg.namespace, suffix)):
                            if x in st.by_lower:
                                units.add(st.by_lower[x])
                                matched = True
                    if has_tcp and (matched or cfg.spec.get("tcp")):
                        units.add(TCP_UNIT)
                elif key.kind == "DestinationRule":
                    selectors |= bool(cfg.spec.get("workloadSelector"))
                    hosts |= hosts_matching(st, resolve_short_name(str(cfg.spec.get("host", "")), cfg.namespace,
                                                                   suffix))
                else:
                    by_policy |= units_for_policy(st, snapshot, cfg)
                    if cfg.namespace in st.near:
                        attach.add(key)
        else:
            raise _Full()  # Gateway, Namespace, unknown kinds: bindings, listeners, labels
    hosts = {h for h in hosts if h in st.by_lower or st.dest_index.get(h)}  # clusters exist only for these
    for h in hosts:
        if h in st.by_lower:
            units.add(st.by_lower[h])
        units |= st.dest_index.get(h, set())
    if policy_only is not None:
        policy_only.update(by_policy - units)
    units |= by_policy
    return units, hosts, attach, selectors


def hosts_matching(st: _State, pattern: str) -> set[str]:
    """Lowercased hostnames (of units, clusters, destinations) a host pattern matches; a wildcard scans."""
    pattern = pattern.lower()
    if not pattern.startswith("*"):
        return {pattern}
    out = {h for h in st.by_lower if host_matches(pattern, h)}
    out |= {r.ref.service.hostname.lower() for r in st.clusters.values()
            if host_matches(pattern, r.ref.service.hostname)}
    out |= {h for h in st.dest_index if host_matches(pattern, h)}
    return out


def units_for_policy(st: _State, snapshot: ConfigSnapshot, policy: IstioConfig) -> set[str]:
    out: set[str] = set()
    for _, ref in authz_attach.target_refs(policy):
        kind, name = ref.get("kind"), ref.get("name")
        if kind == "Gateway" and policy.namespace == st.gateway.key.namespace and name == st.gateway.key.name:
            return set(st.services)
        if kind == "GatewayClass" and policy.namespace == snapshot.root_namespace and name == st.gateway.class_name:
            return set(st.services)
        if kind in SERVICE_KINDS:
            target = ConfigKey(str(kind), policy.namespace, str(name))
            for s in snapshot.services_with_key(target):
                if s.hostname in st.services and st.services[s.hostname].key == target:
                    out.add(s.hostname)
    return out


def clusters_of_host(st: _State, host: str) -> list[str]:
    """Names of the clusters whose service has lowercased hostname `host`."""
    h = st.by_lower.get(host)
    names_: list[str] = []
    unit = st.units.get(h) if h else None
    if unit is not None:
        names_ += list(unit.refs)
    for u in st.dest_index.get(host, ()):
        names_ += [n for n, r in st.units[u].refs.items() if r.service.hostname.lower() == host]
    return names_


def destination_hosts(vs: IstioConfig, suffix: str, sections: tuple[str, ...] = ("http", "tcp")) -> Iterable[str]:
    """Lowercased hosts of every destination (routes, mirrors) a VirtualService's rules name."""
    for section in sections:
        for rule in vs.spec.get(section) or ():
            if not isinstance(rule, Mapping):
                continue
            items = list(rule.get("route") or ()) + list(rule.get("mirrors") or ())
            if isinstance(rule.get("mirror"), Mapping):
                items.append({"destination": rule["mirror"]})
            for d in items:
                dest = d.get("destination") if isinstance(d, Mapping) else None
                if isinstance(dest, Mapping):
                    yield resolve_short_name(str(dest.get("host", "")), vs.namespace, suffix).lower()
