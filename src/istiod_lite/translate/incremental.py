"""Incremental translation: keep, per waypoint, what the last translation built per *unit* (one bound service:
its virtual hosts on the HTTP listeners, its HBONE RouteConfigurations, the cluster refs they use, the issues it
raised; the waypoint's TCP listeners form one more unit) and per cluster, and on the next snapshot recompute only
the units and clusters that read a changed object. Memory: the state and the results keep no Envoy messages,
only bytes: virtual hosts as their serialization, and every resource (results, clusters, a unit's own
resources) as an `xds.types.Encoded` (its Any bytes, serialized once when built: the xds cache serves that very
bytes object; `.message` parses on demand). Unchanged resources keep their very Encoded objects, so the xds
cache skips them. The waypoint-level parts (listeners, domain assignment, Scoped RDS plans, HBONE VIP claims
and the main_internal listener, fixed HBONE resources) are built at a full translation and depend only on the
Gateway, the options and the bound services' shape; a change of those falls back to a full translation.

Modules: incremental_state.py (units, clusters, per-waypoint state, copy-on-write step bookkeeping),
incremental_dirty.py (what a change reaches; when to fall back), incremental_units.py (building units and
clusters with translate()'s own builders, cluster bookkeeping), incremental_hbone.py (HBONE layout, per-service
HBONE routes, endpoint rewrite, TCP unit), incremental_output.py (route assembly, TranslateResult and its
`changes`). A unit only AuthorizationPolicy changes reach keeps its routes and gets its RBAC configs re-encoded
(incremental_units.rebuild_authz). This module: `IncrementalTranslator`, the full / incremental step.

`IncrementalTranslator.translate(snapshot, waypoint)` returns the same TranslateResult as `translate()` would,
byte for byte per resource (Encoded values where translate() has messages) (tests/test_incremental_equivalence.py checks it after every step of randomized
change sequences, plain HTTP, HBONE and TCP waypoints); its `changes` names the resources that may differ from the
previous result of the waypoint (None after a full translation), so the app hands the xds cache O(changed) work.
`affected(snapshot)` says which waypoints a snapshot can change at all, so the app never translates (or pushes) a
waypoint no changed object reaches.

Route granularity (route_scopes.py): on a Scoped RDS listener a changed virtual host re-emits its service's own
RouteConfiguration (one virtual host) and any shared-key RouteConfiguration holding it; scopes depend only on the
domain assignment (waypoint shape), so they are built once per full translation. On a listener serving a wildcard
host (one RouteConfiguration) the changed virtual host is replaced in a copy of the previous RouteConfiguration.
On the HBONE listener every claimed service port has its own chain and RouteConfiguration: a change re-emits
only the RouteConfigurations of the rebuilt services whose message differs.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import TranslateResult, authz_attach, domains, listeners, names, route_scopes, translate
from istiod_lite.translate import incremental_hbone as ih
from istiod_lite.translate import incremental_output as io
from istiod_lite.translate.incremental_dirty import clusters_of_host, dirty
from istiod_lite.translate.incremental_state import TCP_UNIT, _Full, _State, _Update
from istiod_lite.translate.incremental_units import build_unit, rebuild_authz, set_unit, sync_clusters
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import Waypoint, resolve, served_port
from istiod_lite.xds import types

__all__ = ["IncrementalTranslator"]


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
            return any(dirty(st, last[0], snapshot, changed, waypoint))
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
        st = self._states.get(waypoint)
        if st is not None:  # the lookups of this snapshot are done: do not keep them alive until the next change
            st.dr_memo = {}
            st.authz_memo = {}
        self._last[waypoint] = (snapshot, result)
        return result

    def _full(self, snapshot: ConfigSnapshot, waypoint: ConfigKey) -> TranslateResult:
        self._states[waypoint] = None
        wp, _ = resolve(snapshot, waypoint, self.options)
        if wp is None:
            return _encoded(translate(snapshot, waypoint, self.options))
        try:
            st = self._initial_state(snapshot, wp)
        except _Full:
            return _encoded(translate(snapshot, waypoint, self.options))
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
                    {s.hostname.lower(): s.hostname for s in wp.services}, ports, doms, (), near, self.options)
        st.plans = plans
        for lp, plan in plans.items():
            st.shared_of[lp] = {}
            for name, vhs in plan.shared.items():
                for v in vhs:
                    st.shared_of[lp].setdefault(plan.vh_host[v], []).append(name)
        up = _Update(st, first=True)
        for gl in gls:
            lst = listeners.build_listener(wp, gl, gl.port in plans)
            up.put(types.LISTENER, lst.name, lst)
            up.sources((types.LISTENER, lst.name), (str(wp.key),))
        ih.hbone_layout(st, up, wp)  # HBONE listener: fixed resources, VIP claims, main_internal
        st.base_issues = tuple(wp.issues)
        up.issues(st.base_issues, +1)
        touched: set[str] = set()
        for svc in wp.services:
            unit = build_unit(st, snapshot, svc)
            touched |= unit.refs.keys()
            set_unit(st, up, svc.hostname, unit)
        if ih.has_tcp_listeners(st):
            unit = ih.build_tcp_unit(st, snapshot)
            touched |= unit.refs.keys()
            set_unit(st, up, TCP_UNIT, unit)
        for lp, plan in plans.items():
            for h, u in st.units.items():
                if lp in u.vhosts and u.vhosts[lp][0] in plan.own:
                    io.emit_own(st, up, lp, h, True, True)
            for name in plan.shared:
                io.emit_shared(st, up, lp, name)
            keys = {h: s.key for h, s in st.services.items()}
            for sc in plan.scopes():
                up.put(types.SCOPED_ROUTE, sc.name, sc)
            for name, src in plan.scope_sources(keys, wp.key).items():
                up.sources((types.SCOPED_ROUTE, name), src)
        for lp in ports:
            if lp in plans:
                continue
            cfg = io.single_config(st, lp)
            up.counter(lp)[wp.key] += 1
            up.put(types.ROUTE, cfg.name, cfg)
        if any(u.vhosts or (u.service is not None and u.extra) for u in st.units.values()):  # authz was built
            st.attach = {p.key: tuple(authz_attach.policy_issues(p))
                         for ns in sorted(near) for p in snapshot.policies_in(ns)}
            for v in st.attach.values():
                up.issues(v, +1)
        sync_clusters(st, up, snapshot, touched, set(st.units), set())
        st.result = io.result(st, up, snapshot)
        return st

    # ---- the incremental step --------------------------------------------------------------------------
    def _update(self, st: _State, prev: ConfigSnapshot, snapshot: ConfigSnapshot, changed: frozenset[ConfigKey],
                waypoint: ConfigKey) -> TranslateResult:
        policy_only: set[str] = set()
        units, hosts, attach, selectors = dirty(st, prev, snapshot, changed, waypoint, policy_only)
        if not (units or hosts or attach or selectors):
            st.snapshot = snapshot  # nothing this waypoint reads changed: the same result object
            assert st.result is not None
            return st.result
        self._states[waypoint] = None  # a _Full raised below leaves no half-updated state behind
        st.dr_memo = {}
        st.authz_memo = {}
        up = _Update(st, first=False)
        for key in changed:  # bound services: the new objects of changed services (same shape, see dirty())
            if key.kind in ("Service", "ServiceEntry"):
                for s in snapshot.services_with_key(key):
                    if s.hostname in st.services and st.services[s.hostname].key == key:
                        st.services[s.hostname] = s
                        st.services_tuple = None
        touched: set[str] = set()
        route_ports: dict[int, list[str]] = {}
        scoped: list[tuple[int, str, bool, bool]] = []  # (port, hostname, vhost changed, sources changed)
        for key in sorted(units):
            old = st.units[key]
            if key in policy_only:  # only AuthorizationPolicies changed for it: its routes stay
                unit = rebuild_authz(st, snapshot, old)
            elif key == TCP_UNIT:
                unit = ih.build_tcp_unit(st, snapshot)
            else:
                unit = build_unit(st, snapshot, st.services[key])
            if unit.vhosts.keys() != old.vhosts.keys():
                raise _Full()
            for lp, vh in unit.vhosts.items():
                same = old.vhosts[lp] == vh
                if same:
                    unit.vhosts[lp] = old.vhosts[lp]
                if lp in st.plans:
                    src_changed = old.sources.get(lp) != unit.sources.get(lp)
                    if not same or src_changed:
                        scoped.append((lp, key, not same, src_changed))
                elif not same:
                    route_ports.setdefault(lp, []).append(key)
            if unit.refs is not old.refs:  # (rebuild_authz keeps them: its clusters are unchanged)
                touched |= old.refs.keys() | unit.refs.keys()
            set_unit(st, up, key, unit)
        if hosts:
            touched |= {n for n, r in st.clusters.items() if r.ref.service.hostname.lower() in hosts} \
                if len(hosts) > 8 else {n for h in hosts for n in clusters_of_host(st, h)}
        if touched:
            sync_clusters(st, up, snapshot, touched, units, hosts)
        shared: set[tuple[int, str]] = set()
        for lp, hostname, vh_changed, src_changed in scoped:
            if st.units[hostname].vhosts[lp][0] in st.plans[lp].own:
                io.emit_own(st, up, lp, hostname, vh_changed, src_changed)
            shared.update((lp, name) for name in st.shared_of[lp].get(hostname, ()))
        for lp, name in sorted(shared):
            io.emit_shared(st, up, lp, name)
        io.patch_single_configs(st, up, route_ports)
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
        st.result = io.result(st, up, snapshot)
        self._states[waypoint] = st
        return st.result


def _encoded(result: TranslateResult) -> TranslateResult:
    """`translate()`'s result with every message serialized into an Encoded (what this translator's results hold
    and keep: bytes, no messages)."""
    rs = result.resources
    out = {t: {n: types.encode(t, m, n) for n, m in by_name.items()} for t, by_name in rs.resources.items()}
    return TranslateResult(types.ResourceSet(out, rs.sources), result.issues, result.changes)
