"""Incremental translation: keep, per waypoint, what the last translation built per *unit* (one bound service:
its virtual hosts, the cluster refs it uses, the issues it raised) and per cluster, and on the next snapshot
recompute only the units and clusters that read a changed object. Unchanged resources keep their very Message
objects, so the xds cache skips them.

Dependencies (what a unit / cluster reads; `ConfigSnapshot.changed` names what changed, model-level keys):
- a unit reads its Service, the VirtualServices whose hosts match its hostname, the DestinationRules matching
  its hostname and its destinations' hostnames, the AuthorizationPolicies targeting its Service/ServiceEntry,
  the waypoint Gateway or its GatewayClass, and the services its routes resolve (`dest_hosts`);
- a cluster (and its ClusterLoadAssignment) reads its service and the DestinationRules matching its hostname;
- waypoint-level parts (listeners, domain assignment, service binding, DuplicateHost / NoHTTPPort /
  DomainConflict issues) read the Gateway and the *shape* of the bound services (key, hostname, ports, VIPs,
  binding). A change of any of those, a Namespace or Gateway change, an unknown kind, a cluster name shared by
  two different refs, or a waypoint with TCP or HBONE listeners falls back to a full `translate()` of that
  waypoint (the HBONE / TCP layouts are cross-service by nature: VIP claims, per-port service choice).

`IncrementalTranslator.translate(snapshot, waypoint)` returns the same TranslateResult as `translate()` would,
byte for byte per resource (tests/test_incremental_equivalence.py checks it after every step of randomized
change sequences); its `changes` names the resources that may differ from the previous result of the
waypoint (None after a full translation), so the app hands the xds cache O(changed) work. `affected(snapshot)`
says which waypoints a snapshot can change at all, so the app never translates (or pushes) a waypoint no
changed object reaches.

Route granularity (route_scopes.py): on a Scoped RDS listener a changed virtual host re-emits its service's own
RouteConfiguration (one virtual host) and any shared-key RouteConfiguration holding it; scopes depend only on the
domain assignment (waypoint shape), so they are built once per full translation. On a listener serving a wildcard
host (one RouteConfiguration) the changed virtual host is replaced in a copy of the previous RouteConfiguration.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from envoy.config.route.v3 import route_pb2

from istiod_lite.model.gateway import Gateway
from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.service import Service
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import (TranslateResult, _issue_order, authz, authz_attach, clusters, domains,
                                   dr_report, endpoints, listeners, names, route_scopes, routes, translate)
from istiod_lite.translate.destination_rules import DestinationRules, selector_issues
from istiod_lite.translate.destinations import ClusterRef, inbound_ref
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import Waypoint, http_ports, resolve, served_port
from istiod_lite.xds import types

SERVICE_KINDS = frozenset({"Service", "ServiceEntry"})
CONFIG_KINDS = frozenset({"VirtualService", "DestinationRule", "AuthorizationPolicy"})


class _Full(Exception):
    """This change needs a full translation of the waypoint (internal control flow)."""


@dataclass
class _Unit:
    service: Service
    vhosts: dict[int, object]  # listener port -> VirtualHost
    sources: dict[int, frozenset[ConfigKey]]  # listener port -> route sources contributed
    refs: dict[str, ClusterRef]  # cluster name -> first ref (inbound refs, then route refs)
    dest_hosts: frozenset[str]
    issues: tuple[Issue, ...]


@dataclass
class _Cluster:
    ref: ClusterRef
    cluster: object
    endpoint: object | None
    sources: tuple[str, ...]
    eds_sources: tuple[str, ...] | None
    issues: tuple[Issue, ...]


@dataclass
class _State:
    snapshot: ConfigSnapshot
    gateway: Gateway
    services: dict[str, Service]  # hostname -> bound service
    by_lower: dict[str, str]  # lowercased hostname -> hostname
    ports: tuple[int, ...]  # HTTP listener ports
    doms: dict[int, dict[str, list[str]]]
    base_issues: tuple[Issue, ...]  # resolve, listeners, domains
    near: frozenset[str]
    attach: dict[ConfigKey, tuple[Issue, ...]] | None = None  # attachment issues per near policy
    units: dict[str, _Unit] = field(default_factory=dict)
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=dict)  # cluster name -> unit hostnames
    dest_index: dict[str, set[str]] = field(default_factory=dict)  # destination hostname -> unit hostnames
    plans: dict[int, route_scopes.ScopePlan] = field(default_factory=dict)  # Scoped RDS listener ports
    shared_of: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # port -> hostname -> shared configs
    # single-RouteConfiguration listener ports (wildcard hosts):
    route_configs: dict[int, route_pb2.RouteConfiguration] = field(default_factory=dict)
    vh_index: dict[int, dict[str, int]] = field(default_factory=dict)
    route_sources: dict[int, Counter] = field(default_factory=dict)
    issue_counts: Counter = field(default_factory=Counter)
    issues_sorted: tuple[Issue, ...] | None = None
    selectors: tuple[Issue, ...] = ()
    services_tuple: tuple[Service, ...] | None = None
    dr_memo: dict = field(default_factory=dict)  # DestinationRules lookups of the current snapshot
    out: dict[str, dict[str, object]] = field(default_factory=dict)
    fixed_sources: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    result: TranslateResult | None = None


class _Update:
    """Copy-on-write bookkeeping of one translation step (earlier results stay unchanged)."""

    def __init__(self, st: _State, first: bool) -> None:
        self.st = st
        self.first = first
        self.copied: set = set()
        self.patches: dict[str, dict[str, object | None]] = {}

    def counter(self, lp: int) -> Counter:
        if lp not in self.copied:
            self.copied.add(lp)
            self.st.route_sources[lp] = Counter(self.st.route_sources.get(lp, ()))
        return self.st.route_sources[lp]

    def issues(self, items: Iterable[Issue], sign: int) -> None:
        counts = self.st.issue_counts
        for i in items:
            before = counts[i]
            counts[i] = before + sign
            if (before > 0) != (counts[i] > 0):
                self.st.issues_sorted = None
            if counts[i] <= 0:
                del counts[i]

    def put(self, type_url: str, name: str, msg: object | None) -> None:
        self.patches.setdefault(type_url, {})[name] = msg

    def sources(self, key: tuple[str, str], value: tuple[str, ...] | None) -> None:
        if "fixed" not in self.copied:
            self.copied.add("fixed")
            self.st.fixed_sources = dict(self.st.fixed_sources)
        if value is None:
            self.st.fixed_sources.pop(key, None)
        else:
            self.st.fixed_sources[key] = value


def _shape(s: Service) -> tuple:
    return (s.key, s.hostname, s.ports, s.addresses, s.waypoint)


def _scratch(st: _State, snapshot: ConfigSnapshot, options: TranslateOptions) -> tuple[Waypoint, DestinationRules]:
    if st.services_tuple is None:
        st.services_tuple = tuple(st.services.values())
    wp = Waypoint(snapshot=snapshot, gateway=st.gateway, options=options, services=st.services_tuple)
    wp.__dict__[authz._ATTACHMENT_REPORTED] = True  # reported per policy by the state (`attach`)
    return wp, DestinationRules(wp, report_selectors=False, shared=st.dr_memo)


def _build_unit(st: _State, snapshot: ConfigSnapshot, options: TranslateOptions, svc: Service) -> _Unit:
    wp, drs = _scratch(st, snapshot, options)
    refs: dict[str, ClusterRef] = {}
    rule = drs.for_service(svc)
    for port in http_ports(svc):  # clusters.inbound_refs for this service
        for ref in [inbound_ref(svc, port)] + [inbound_ref(svc, port, s) for s in (rule.subsets if rule else ())]:
            refs.setdefault(ref.name, ref)
    vhosts: dict[int, object] = {}
    sources: dict[int, frozenset[ConfigKey]] = {}
    dests: set[str] = set()
    for lp in st.ports:
        p = served_port(svc, lp)
        if p is None:
            continue
        doms = st.doms[lp].get(names.virtual_host_name(svc.hostname, p.number))
        if not doms:
            continue
        rr = routes.RouteResult(route_pb2.RouteConfiguration())
        vhosts[lp] = routes.virtual_host(wp, drs, svc, p, doms, rr, lp)
        sources[lp] = frozenset(rr.sources | routes.dr_sources(drs, rr.refs))
        for ref in rr.refs:
            refs.setdefault(ref.name, ref)
            dests.add(ref.service.hostname.lower())
    # destinations are looked up by host whether they resolve or not: track every VS destination host
    for vs in snapshot.virtual_services_for_host(svc.hostname):
        dests.update(_destination_hosts(vs, snapshot.domain_suffix))
    return _Unit(svc, vhosts, sources, refs, frozenset(dests), tuple(wp.issues))


def _destination_hosts(vs: IstioConfig, suffix: str) -> Iterable[str]:
    for section in ("http", "tcp"):
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


def _build_cluster(st: _State, snapshot: ConfigSnapshot, options: TranslateOptions, ref: ClusterRef) -> _Cluster:
    wp, drs = _scratch(st, snapshot, options)
    rule = drs.for_service(ref.service)
    for key in rule.keys if rule else ():
        dr_report.report_destination_rule(wp, snapshot.config(key))
    c, eds, src = clusters.build_cluster(wp, drs, ref)
    cla = endpoints.eds_assignment(wp, ref) if eds else None
    eds_src = None
    if eds:
        eds_src = tuple(sorted(str(x) for x in {ref.service.key} | ({ref.subset.source} if ref.subset else set())))
    return _Cluster(ref, c, cla, tuple(sorted(str(x) for x in src)), eds_src, tuple(wp.issues))


class _Sources(Mapping):
    """ResourceSet.sources: fixed entries plus route entries computed on access (no per-change sort of every
    route's key set). Holds copies, so later translations never change it."""

    def __init__(self, fixed: dict, routes_: dict[str, Counter]):
        self._fixed = fixed
        self._routes = routes_
        self._all: dict | None = None

    def _route(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(str(k) for k, n in self._routes[name].items() if n > 0))

    def _materialize(self) -> dict:
        if self._all is None:
            merged = dict(self._fixed)
            for name in self._routes:
                merged[(types.ROUTE, name)] = self._route(name)
            self._all = {k: merged[k] for k in sorted(merged)}
        return self._all

    def __getitem__(self, key):
        if key[0] == types.ROUTE and key[1] in self._routes:
            return self._route(key[1])
        return self._fixed[key]

    def __iter__(self):
        return iter(self._materialize())

    def __len__(self) -> int:
        return len(self._materialize())


class IncrementalTranslator:
    """Per-waypoint incremental translation state. Not thread-safe: one push loop owns it."""

    def __init__(self, options: TranslateOptions = TranslateOptions()) -> None:
        self.options = options
        self._states: dict[ConfigKey, _State | None] = {}
        self._last: dict[ConfigKey, tuple[ConfigSnapshot, TranslateResult]] = {}
        self.stats: Counter = Counter()  # how translate() calls were served: full / incremental / reused

    def forget(self, waypoint: ConfigKey) -> None:
        self._states.pop(waypoint, None)
        self._last.pop(waypoint, None)

    def retain(self, waypoints: Iterable[ConfigKey]) -> None:
        keep = set(waypoints)
        for k in [k for k in self._last if k not in keep]:
            self.forget(k)

    # ---- which waypoints a snapshot touches ------------------------------------------------------------
    def affected(self, snapshot: ConfigSnapshot, waypoint: ConfigKey) -> bool:
        """False when the previous result for `waypoint` is certainly still right for `snapshot` (nothing the
        waypoint reads changed): the app then neither translates nor pushes it."""
        last = self._last.get(waypoint)
        if last is None:
            return True
        if last[0] is snapshot:
            return False
        changed = self._changes_since(last[0], snapshot)
        st = self._states.get(waypoint)
        if changed is None or st is None:
            return True
        try:
            return any(self._dirty(st, last[0], snapshot, changed, waypoint))
        except _Full:
            return True

    @staticmethod
    def _changes_since(prev: ConfigSnapshot, snapshot: ConfigSnapshot) -> frozenset[ConfigKey] | None:
        if snapshot.changed is None or snapshot.base_version != prev.version:
            return None
        return snapshot.changed

    # ---- translation -----------------------------------------------------------------------------------
    def translate(self, snapshot: ConfigSnapshot, waypoint: ConfigKey) -> TranslateResult:
        """The result `translate(snapshot, waypoint, options)` gives, recomputing only what changed since the
        previous call for this waypoint (when the snapshot says what changed; otherwise in full)."""
        last = self._last.get(waypoint)
        if last is not None and last[0] is snapshot:
            self.stats["reused"] += 1
            return last[1]
        st = self._states.get(waypoint)
        result = None
        if last is not None and self._changes_since(last[0], snapshot) == frozenset():
            self.stats["reused"] += 1  # nothing changed at all (e.g. only load issues): same result object
            self._last[waypoint] = (snapshot, last[1])
            if st is not None:
                st.snapshot = snapshot
            return last[1]
        if st is not None and last is not None:
            changed = self._changes_since(last[0], snapshot)
            if changed is not None:
                try:
                    result = self._update(st, last[0], snapshot, changed, waypoint)
                    self.stats["reused" if result is last[1] else "incremental"] += 1
                except _Full:
                    result = None
        if result is None:
            result = self._full(snapshot, waypoint)
            self.stats["full"] += 1
        self._last[waypoint] = (snapshot, result)
        return result

    def _full(self, snapshot: ConfigSnapshot, waypoint: ConfigKey) -> TranslateResult:
        self._states[waypoint] = None
        wp, _ = resolve(snapshot, waypoint, self.options)
        if wp is None or _needs_plain_translate(wp):
            return translate(snapshot, waypoint, self.options)
        try:
            st = self._initial_state(snapshot, wp)
        except _Full:
            return translate(snapshot, waypoint, self.options)
        self._states[waypoint] = st
        assert st.result is not None
        return st.result

    def _initial_state(self, snapshot: ConfigSnapshot, wp: Waypoint) -> _State:
        gls = wp.http_listeners()
        ports = tuple(gl.port for gl in gls)
        doms: dict[int, dict[str, list[str]]] = {}
        plans: dict[int, route_scopes.ScopePlan] = {}
        for lp in ports:
            served = [(s, p.number) for s in wp.services if (p := served_port(s, lp)) is not None]
            doms[lp] = domains.assign(wp, served, names.listener_name(lp))
            if route_scopes.is_scoped(doms[lp]):
                plans[lp] = route_scopes.plan(lp, doms[lp], {names.virtual_host_name(s.hostname, p): s.hostname
                                                             for s, p in served})
        near = frozenset({wp.namespace, snapshot.root_namespace} | {s.namespace for s in wp.services})
        st = _State(snapshot, wp.gateway, {s.hostname: s for s in wp.services},
                    {s.hostname.lower(): s.hostname for s in wp.services}, ports, doms, tuple(wp.issues), near)
        st.plans = plans
        for lp, plan in plans.items():
            st.shared_of[lp] = {}
            for name, vhs in plan.shared.items():
                for v in vhs:
                    st.shared_of[lp].setdefault(plan.vh_host[v], []).append(name)
        up = _Update(st, first=True)
        up.issues(st.base_issues, +1)
        for gl in gls:
            lst = listeners.build_listener(wp, gl, gl.port in plans)
            up.put(types.LISTENER, lst.name, lst)
            up.sources((types.LISTENER, lst.name), (str(wp.key),))
        touched: set[str] = set()
        for svc in wp.services:
            unit = _build_unit(st, snapshot, self.options, svc)
            touched |= unit.refs.keys()
            self._set_unit(st, up, svc.hostname, unit)
        for lp, plan in plans.items():
            for h, u in st.units.items():
                if lp in u.vhosts and u.vhosts[lp].name in plan.own:
                    self._emit_own(st, up, lp, h, True, True)
            for name in plan.shared:
                self._emit_shared(st, up, lp, name)
            keys = {h: s.key for h, s in st.services.items()}
            for sc in plan.scopes():
                up.put(types.SCOPED_ROUTE, sc.name, sc)
            for name, src in plan.scope_sources(keys, wp.key).items():
                up.sources((types.SCOPED_ROUTE, name), src)
        for lp in ports:
            if lp in plans:
                continue
            cfg = route_scopes.new_config(names.route_config_name(lp), False)
            hosts = sorted((u.vhosts[lp].name, h) for h, u in st.units.items() if lp in u.vhosts)
            cfg.virtual_hosts.extend(st.units[h].vhosts[lp] for _, h in hosts)
            st.route_configs[lp] = cfg
            st.vh_index[lp] = {h: i for i, (_, h) in enumerate(hosts)}
            up.counter(lp)[wp.key] += 1
            up.put(types.ROUTE, cfg.name, cfg)
        if any(u.vhosts for u in st.units.values()):
            st.attach = {p.key: tuple(authz_attach.policy_issues(p))
                         for ns in sorted(near) for p in snapshot.policies_in(ns)}
            for v in st.attach.values():
                up.issues(v, +1)
        self._sync_clusters(st, up, snapshot, touched, set(st.units), set())
        st.result = self._result(st, up, snapshot)
        return st

    def _set_unit(self, st: _State, up: _Update, hostname: str, unit: _Unit) -> None:
        old = st.units.get(hostname)
        if old is not None:
            if old.dest_hosts != unit.dest_hosts:
                for h in old.dest_hosts - unit.dest_hosts:
                    st.dest_index.get(h, set()).discard(hostname)
            for name in old.refs.keys() - unit.refs.keys():
                st.users.get(name, set()).discard(hostname)
            if old.sources != unit.sources:
                for lp, src in old.sources.items():
                    if lp not in st.plans:
                        up.counter(lp).subtract(src)
            up.issues(old.issues, -1)
        st.units[hostname] = unit
        for h in unit.dest_hosts:
            st.dest_index.setdefault(h, set()).add(hostname)
        for name in unit.refs:
            st.users.setdefault(name, set()).add(hostname)
        if old is None or old.sources != unit.sources:
            for lp, src in unit.sources.items():
                if lp not in st.plans:
                    up.counter(lp).update(src)
        up.issues(unit.issues, +1)

    def _emit_own(self, st: _State, up: _Update, lp: int, hostname: str, message: bool, sources: bool) -> None:
        """The service's own RouteConfiguration on Scoped RDS listener `lp` (its message and/or sources)."""
        name = names.service_route_config_name(lp, hostname)
        unit = st.units[hostname]
        if message:
            up.put(types.ROUTE, name, route_scopes.with_vhosts(name, [unit.vhosts[lp]]))
        if sources:
            up.sources((types.ROUTE, name), tuple(sorted({str(st.gateway.key)} | {str(k) for k in unit.sources[lp]})))

    def _emit_shared(self, st: _State, up: _Update, lp: int, name: str) -> None:
        plan = st.plans[lp]
        hosts = [plan.vh_host[v] for v in plan.shared[name]]
        up.put(types.ROUTE, name, route_scopes.with_vhosts(name, [st.units[h].vhosts[lp] for h in hosts]))
        src = {str(st.gateway.key)} | {str(k) for h in hosts for k in st.units[h].sources[lp]}
        up.sources((types.ROUTE, name), tuple(sorted(src)))

    def _sync_clusters(self, st: _State, up: _Update, snapshot: ConfigSnapshot, names_: set[str], fresh: set[str],
                       dirty_hosts: set[str]) -> None:
        """Bring the clusters named in `names_` in line with the units' refs (`fresh`: units just rebuilt)."""
        for name in sorted(names_):
            users = st.users.get(name)
            rec = st.clusters.get(name)
            if not users:
                st.users.pop(name, None)
                if rec is not None:
                    del st.clusters[name]
                    up.issues(rec.issues, -1)
                    up.put(types.CLUSTER, name, None)
                    up.sources((types.CLUSTER, name), None)
                    if rec.endpoint is not None:
                        up.put(types.ENDPOINT, name, None)
                        up.sources((types.ENDPOINT, name), None)
                continue
            ref = rec.ref if rec is not None and (users - fresh) else None
            for h in (fresh & users if len(fresh) < len(users) else users & fresh):
                r = st.units[h].refs[name]
                if ref is None:
                    ref = r
                elif r is not ref and r != ref:
                    raise _Full()  # two different refs share a cluster name: order-dependent, rebuild all
            assert ref is not None
            if rec is not None and ref.service.hostname.lower() not in dirty_hosts and (rec.ref is ref or rec.ref == ref):
                continue
            new = _build_cluster(st, snapshot, self.options, ref)
            if rec is not None:
                up.issues(rec.issues, -1)
                if rec.cluster == new.cluster:
                    new.cluster = rec.cluster
                if rec.endpoint is not None and new.endpoint is not None and rec.endpoint == new.endpoint:
                    new.endpoint = rec.endpoint
            up.issues(new.issues, +1)
            st.clusters[name] = new
            if rec is None or new.cluster is not rec.cluster:
                up.put(types.CLUSTER, name, new.cluster)
            if rec is None or rec.sources != new.sources:
                up.sources((types.CLUSTER, name), new.sources)
            if new.endpoint is not None and (rec is None or new.endpoint is not rec.endpoint):
                up.put(types.ENDPOINT, name, new.endpoint)
            elif new.endpoint is None and rec is not None and rec.endpoint is not None:
                up.put(types.ENDPOINT, name, None)
            if new.eds_sources != (rec.eds_sources if rec is not None else None):
                up.sources((types.ENDPOINT, name), new.eds_sources)

    # ---- the incremental step --------------------------------------------------------------------------
    def _dirty(self, st: _State, prev: ConfigSnapshot, snapshot: ConfigSnapshot, changed: frozenset[ConfigKey],
               waypoint: ConfigKey) -> tuple[set[str], set[str], set[ConfigKey], bool]:
        """(unit hostnames to rebuild, lowercased hostnames whose clusters to rebuild, policies whose
        attachment issues to recompute, whether a DR with workloadSelector changed); raises _Full when the
        change is outside the incremental model."""
        if snapshot.gateway(waypoint) is not st.gateway:
            raise _Full()
        units: set[str] = set()
        hosts: set[str] = set()
        attach: set[ConfigKey] = set()
        selectors = False
        suffix = snapshot.domain_suffix
        for key in changed:
            if key.kind in SERVICE_KINDS:
                old, new = prev.services_with_key(key), snapshot.services_with_key(key)
                if any(s.waypoint == waypoint for s in (*old, *new)) and \
                        [_shape(s) for s in old] != [_shape(s) for s in new]:
                    raise _Full()
                hosts.update(s.hostname.lower() for s in (*old, *new))
            elif key.kind in CONFIG_KINDS:
                for cfg in (prev.config(key), snapshot.config(key)):
                    if cfg is None:
                        continue
                    if key.kind == "VirtualService":
                        for h in cfg.spec.get("hosts") or ():
                            for x in self._hosts_matching(st, resolve_short_name(str(h), cfg.namespace, suffix)):
                                if x in st.by_lower:
                                    units.add(st.by_lower[x])
                    elif key.kind == "DestinationRule":
                        selectors |= bool(cfg.spec.get("workloadSelector"))
                        hosts |= self._hosts_matching(st, resolve_short_name(str(cfg.spec.get("host", "")),
                                                                             cfg.namespace, suffix))
                    else:
                        units |= self._units_for_policy(st, snapshot, cfg)
                        if cfg.namespace in st.near:
                            attach.add(key)
            else:
                raise _Full()  # Gateway, Namespace, unknown kinds: bindings, listeners, labels
        hosts = {h for h in hosts if h in st.by_lower or st.dest_index.get(h)}  # clusters exist only for these
        for h in hosts:
            if h in st.by_lower:
                units.add(st.by_lower[h])
            units |= st.dest_index.get(h, set())
        return units, hosts, attach, selectors

    def _hosts_matching(self, st: _State, pattern: str) -> set[str]:
        """Lowercased hostnames (of units, clusters, destinations) a host pattern matches; a wildcard scans."""
        pattern = pattern.lower()
        if not pattern.startswith("*"):
            return {pattern}
        out = {h for h in st.by_lower if host_matches(pattern, h)}
        out |= {r.ref.service.hostname.lower() for r in st.clusters.values()
                if host_matches(pattern, r.ref.service.hostname)}
        out |= {h for h in st.dest_index if host_matches(pattern, h)}
        return out

    def _units_for_policy(self, st: _State, snapshot: ConfigSnapshot, policy: IstioConfig) -> set[str]:
        out: set[str] = set()
        for _, ref in authz_attach.target_refs(policy):
            kind, name = ref.get("kind"), ref.get("name")
            if kind == "Gateway" and policy.namespace == st.gateway.key.namespace and name == st.gateway.key.name:
                return set(st.services)
            if kind == "GatewayClass" and policy.namespace == snapshot.root_namespace \
                    and name == st.gateway.class_name:
                return set(st.services)
            if kind in SERVICE_KINDS:
                target = ConfigKey(str(kind), policy.namespace, str(name))
                for s in snapshot.services_with_key(target):
                    if s.hostname in st.services and st.services[s.hostname].key == target:
                        out.add(s.hostname)
        return out

    def _update(self, st: _State, prev: ConfigSnapshot, snapshot: ConfigSnapshot, changed: frozenset[ConfigKey],
                waypoint: ConfigKey) -> TranslateResult:
        units, hosts, attach, selectors = self._dirty(st, prev, snapshot, changed, waypoint)
        if not (units or hosts or attach or selectors):
            st.snapshot = snapshot  # nothing this waypoint reads changed: the same result object
            assert st.result is not None
            return st.result
        self._states[waypoint] = None  # a _Full raised below leaves no half-updated state behind
        st.dr_memo = {}
        up = _Update(st, first=False)
        for key in changed:  # bound services: the new objects of changed services (same shape, see _dirty)
            if key.kind in SERVICE_KINDS:
                for s in snapshot.services_with_key(key):
                    if s.hostname in st.services and st.services[s.hostname].key == key:
                        st.services[s.hostname] = s
                        st.services_tuple = None
        touched: set[str] = set()
        route_ports: dict[int, list[str]] = {}
        scoped: list[tuple[int, str, bool, bool]] = []  # (port, hostname, vhost changed, sources changed)
        for hostname in sorted(units):
            old = st.units[hostname]
            unit = _build_unit(st, snapshot, self.options, st.services[hostname])
            if unit.vhosts.keys() != old.vhosts.keys():
                raise _Full()
            for lp, vh in unit.vhosts.items():
                same = old.vhosts[lp] == vh
                if same:
                    unit.vhosts[lp] = old.vhosts[lp]
                if lp in st.plans:
                    src_changed = old.sources.get(lp) != unit.sources.get(lp)
                    if not same or src_changed:
                        scoped.append((lp, hostname, not same, src_changed))
                elif not same:
                    route_ports.setdefault(lp, []).append(hostname)
            touched |= old.refs.keys() | unit.refs.keys()
            self._set_unit(st, up, hostname, unit)
        if hosts:
            touched |= {n for n, r in st.clusters.items() if r.ref.service.hostname.lower() in hosts} \
                if len(hosts) > 8 else {n for h in hosts for n in self._clusters_of_host(st, h)}
        if touched:
            self._sync_clusters(st, up, snapshot, touched, units, hosts)
        shared: set[tuple[int, str]] = set()
        for lp, hostname, vh_changed, src_changed in scoped:
            if st.units[hostname].vhosts[lp].name in st.plans[lp].own:
                self._emit_own(st, up, lp, hostname, vh_changed, src_changed)
            shared.update((lp, name) for name in st.shared_of[lp].get(hostname, ()))
        for lp, name in sorted(shared):
            self._emit_shared(st, up, lp, name)
        for lp, changed_hosts in route_ports.items():
            cfg = route_pb2.RouteConfiguration()
            cfg.CopyFrom(st.route_configs[lp])
            index = st.vh_index[lp]
            for hostname in changed_hosts:
                cfg.virtual_hosts[index[hostname]].CopyFrom(st.units[hostname].vhosts[lp])
            st.route_configs[lp] = cfg
            up.put(types.ROUTE, cfg.name, cfg)
        for lp in up.copied & set(st.ports):
            up.put(types.ROUTE, names.route_config_name(lp), st.route_configs[lp])  # sources changed
        if attach and st.attach is not None:
            st.attach = dict(st.attach)
            for key in attach:
                p = snapshot.config(key)
                if key in st.attach:
                    up.issues(st.attach.pop(key), -1)
                if p is not None:
                    st.attach[key] = tuple(authz_attach.policy_issues(p))
                    up.issues(st.attach[key], +1)
        st.snapshot = snapshot
        st.result = self._result(st, up, snapshot)
        self._states[waypoint] = st
        return st.result

    def _clusters_of_host(self, st: _State, host: str) -> list[str]:
        h = st.by_lower.get(host)
        names_: list[str] = []
        unit = st.units.get(h) if h else None
        if unit is not None:
            names_ += list(unit.refs)
        for u in st.dest_index.get(host, ()):
            names_ += [n for n, r in st.units[u].refs.items() if r.service.hostname.lower() == host]
        return names_

    # ---- output ----------------------------------------------------------------------------------------
    def _result(self, st: _State, up: _Update, snapshot: ConfigSnapshot) -> TranslateResult:
        out: dict[str, dict[str, object]] = {}
        for type_url in (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT):
            prev = st.out.get(type_url, {})
            patch = up.patches.get(type_url)
            if not patch:
                out[type_url] = prev
                continue
            d = dict(prev)
            reorder = False
            for name, msg in patch.items():
                if msg is None:
                    d.pop(name, None)
                else:
                    reorder |= name not in d
                    d[name] = msg
            out[type_url] = {k: d[k] for k in sorted(d)} if reorder else d
        st.out = out
        route_src = {names.route_config_name(lp): c for lp, c in st.route_sources.items()}
        sel = tuple(selector_issues(Waypoint(snapshot=snapshot, gateway=st.gateway, options=self.options,
                                             services=())))
        if sel != st.selectors:
            up.issues(st.selectors, -1)
            up.issues(sel, +1)
            st.selectors = sel
        if not up.patches and not up.copied and st.issues_sorted is not None and st.result is not None:
            return st.result  # rebuilt units came out the same: the same result object
        if st.issues_sorted is None:
            st.issues_sorted = tuple(sorted(st.issue_counts, key=_issue_order))
        issues = st.issues_sorted
        # what differs from the previous result (the patches; a first / full translation: unknown)
        changes = None if up.first else {t: frozenset(p) for t, p in up.patches.items() if p}
        return TranslateResult(types.ResourceSet(out, _Sources(st.fixed_sources, route_src)), issues, changes)


def _needs_plain_translate(wp: Waypoint) -> bool:
    """Waypoints the incremental path does not model (TCP / HBONE listeners): always translated in full."""
    return any(gl.protocol.upper() in ("TCP", "HBONE") for gl in wp.gateway.listeners)

