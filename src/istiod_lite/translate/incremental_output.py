"""Output assembly of the incremental translator (translate/incremental.py): the route resources of the HTTP
listeners from the units' virtual hosts (a service's own Scoped RDS RouteConfiguration, shared-key ones, the single
RouteConfiguration of a wildcard-host listener, all parsed from the units' virtual host bytes), and the TranslateResult of one step: resource
maps patched copy-on-write (name order kept), `ResourceSet.sources`, sorted issues and the `changes` hint (every
name patched in this step; None after a full translation).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from envoy.config.route.v3 import route_pb2

from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import TranslateResult, _issue_order, names, route_scopes
from istiod_lite.translate.destination_rules import selector_issues
from istiod_lite.translate.incremental_state import _State, _Update
from istiod_lite.translate.waypoint import Waypoint
from istiod_lite.xds import types

TYPES = (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT)


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


def emit_own(st: _State, up: _Update, lp: int, hostname: str, message: bool, sources: bool) -> None:
    """The service's own RouteConfiguration on Scoped RDS listener `lp` (its message and/or sources)."""
    name = names.service_route_config_name(lp, hostname)
    unit = st.units[hostname]
    if message:
        up.put(types.ROUTE, name, route_scopes.with_vhost_bytes(name, [unit.vhosts[lp]]))
    if sources:
        up.sources((types.ROUTE, name), tuple(sorted({str(st.gateway.key)} | {str(k) for k in unit.sources[lp]})))


def emit_shared(st: _State, up: _Update, lp: int, name: str) -> None:
    plan = st.plans[lp]
    hosts = [plan.vh_host[v] for v in plan.shared[name]]
    up.put(types.ROUTE, name, route_scopes.with_vhost_bytes(name, [st.units[h].vhosts[lp] for h in hosts]))
    src = {str(st.gateway.key)} | {str(k) for h in hosts for k in st.units[h].sources[lp]}
    up.sources((types.ROUTE, name), tuple(sorted(src)))


def single_config(st: _State, lp: int) -> route_pb2.RouteConfiguration:
    """The one RouteConfiguration of wildcard-host listener `lp`: every unit's virtual host on it (bytes), parsed
    once (a fresh arena; O(virtual hosts on the listener), like copying the previous one was)."""
    return route_scopes.with_vhost_bytes(names.route_config_name(lp),
                                         [u.vhosts[lp] for u in st.units.values() if lp in u.vhosts], False)


def patch_single_configs(st: _State, up: _Update, route_ports: dict[int, list[str]]) -> None:
    """Listeners with one RouteConfiguration (wildcard hosts): rebuilt from the units' virtual host bytes when
    one of them changed; re-listed when only its sources changed."""
    for lp in route_ports:
        cfg = single_config(st, lp)
        up.put(types.ROUTE, cfg.name, cfg)
    patched = up.patches.get(types.ROUTE, {})
    for lp in up.copied & set(st.ports):
        name = names.route_config_name(lp)
        if name not in patched:
            up.put(types.ROUTE, name, st.out[types.ROUTE][name])  # sources changed


def result(st: _State, up: _Update, snapshot: ConfigSnapshot) -> TranslateResult:
    out: dict[str, dict[str, object]] = {}
    for type_url in TYPES:
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
    sel = tuple(selector_issues(Waypoint(snapshot=snapshot, gateway=st.gateway, options=st.options, services=())))
    if sel != st.selectors:
        up.issues(st.selectors, -1)
        up.issues(sel, +1)
        st.selectors = sel
    if not up.patches and not up.copied and st.issues_sorted is not None and st.result is not None:
        return st.result  # rebuilt units came out the same: the same result object
    if st.issues_sorted is None:
        st.issues_sorted = tuple(sorted(st.issue_counts, key=_issue_order))
    # what differs from the previous result (the patches; a first / full translation: unknown)
    changes = None if up.first else {t: frozenset(p) for t, p in up.patches.items() if p}
    return TranslateResult(types.ResourceSet(out, _Sources(st.fixed_sources, route_src)), st.issues_sorted, changes)
