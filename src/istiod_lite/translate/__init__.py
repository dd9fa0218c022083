"""The translate room: ``translate(snapshot, waypoint, options) -> TranslateResult`` (Envoy resources + Issues).

Pure and deterministic: no I/O, logging, clock or environment reads; switches come in TranslateOptions; every
resource map is built in name order. Reads like a table of contents:

1. waypoint.resolve      the waypoint Gateway and the services bound to it (missing -> empty result + Issue)
2. listeners             one Envoy listener per Gateway HTTP listener port, HCM with RDS
   tcp                   one Envoy listener per Gateway TCP listener port, tcp_proxy from VirtualService tcp[]
3. routes                a virtual host per bound service, VirtualService rules (route_match, route_action,
                         retries), domains; route_scopes: Scoped RDS, a RouteConfiguration per service
4. clusters              inbound-vip clusters of bound services (+ DestinationRule subsets), outbound clusters of
                         other destinations (cluster_policy for DestinationRule traffic policy)
5. endpoints             one ClusterLoadAssignment per EDS cluster
6. hbone                 with an HBONE listener: connect_terminate -> main_internal (a chain + routes per service
                         VIP:port) -> inbound-vip clusters -> connect_originate (add_listeners before clusters,
                         rewrite_upstreams of in-mesh endpoints after endpoints)

incremental.IncrementalTranslator gives the same result from per-service units, recomputing only what the
snapshot's changed objects reach, for HTTP, TCP and HBONE waypoints (the app's push loop uses it; this
`translate()` is the reference it is tested against, and what it falls back to when a change alters which
services, ports or VIPs a waypoint serves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Collection
from itertools import chain
from typing import Mapping

from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import clusters, hbone, listeners, routes, tcp
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.gc_pause import paused_gc
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import Waypoint, resolve
from istiod_lite.xds import types

__all__ = ["translate", "TranslateOptions", "TranslateResult"]


@dataclass(frozen=True)
class TranslateResult:
    resources: types.ResourceSet
    issues: tuple[Issue, ...]
    # type URL -> names upserted or removed since the previous result for the same waypoint (a superset: a name
    # may be listed although its message came out the same); a type URL absent is unchanged. None: unknown (a
    # full translation). Set by translate/incremental.py; not part of equality.
    changes: Mapping[str, frozenset[str]] | None = field(default=None, compare=False)


def _sorted(d: dict) -> dict:
    return {k: d[k] for k in sorted(d)}


def translate(snapshot: ConfigSnapshot, waypoint: ConfigKey,
              options: TranslateOptions = TranslateOptions()) -> TranslateResult:
    with paused_gc():  # allocation-heavy, nothing to collect until it returns (gc_pause.py)
        return _translate(snapshot, waypoint, options)


def _translate(snapshot: ConfigSnapshot, waypoint: ConfigKey, options: TranslateOptions) -> TranslateResult:
    wp, problem = resolve(snapshot, waypoint, options)
    if wp is None:
        empty = {t: {} for t in (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT)}
        return TranslateResult(types.ResourceSet(empty), (problem,) if problem else ())
    try:
        return _translate_waypoint(wp)
    finally:
        _drop_memos(wp)


def _drop_memos(wp: Waypoint) -> None:
    """Drop the per-translation memos that modules keep on the Waypoint (``wp.__dict__["_istiod_lite_..."]``).
    Some refer back to it (DestinationRules holds its waypoint), so without this the waypoint and every memo
    (hundreds of thousands of tuples at 5,000 services) live until the next cyclic collection, which then scans
    and frees them all (~170 ms at 5,000 services); dropped here they are freed by reference counting at once."""
    d = wp.__dict__
    for k in [k for k in d if k.startswith("_istiod_lite_")]:
        del d[k]


def _translate_waypoint(wp: Waypoint) -> TranslateResult:
    drs = DestinationRules(wp)
    out: dict[str, dict] = {types.LISTENER: {}, types.SCOPED_ROUTE: {}, types.ROUTE: {}, types.CLUSTER: {},
                            types.ENDPOINT: {}}
    sources: dict[tuple[str, str], set[ConfigKey]] = {}
    ready: dict[tuple[str, str], tuple[str, ...]] = {}  # sources already as sorted "Kind/ns/name" tuples

    refs = clusters.inbound_refs(wp, drs)
    for gl in wp.http_listeners():
        lr = routes.listener_routes(wp, drs, gl.port)
        lst = listeners.build_listener(wp, gl, lr.scoped)
        out[types.LISTENER][lst.name] = lst
        sources[(types.LISTENER, lst.name)] = {wp.key}
        for rr in lr.configs:
            out[types.ROUTE][rr.config.name] = rr.config
            sources[(types.ROUTE, rr.config.name)] = rr.sources | routes.dr_sources(drs, rr.refs)
        for s in lr.scopes:
            out[types.SCOPED_ROUTE][s.name] = s
            ready[(types.SCOPED_ROUTE, s.name)] = lr.scope_sources[s.name]
        refs.extend(lr.refs)

    for tl in tcp.build_listeners(wp, drs):
        out[types.LISTENER][tl.listener.name] = tl.listener
        sources[(types.LISTENER, tl.listener.name)] = tl.sources
        refs.extend(tl.refs)

    refs.extend(hbone.add_listeners(wp, drs, out, sources))  # HBONE listener: the ambient layout

    built = clusters.build_clusters(wp, drs, refs)
    out[types.CLUSTER].update(built.clusters)
    out[types.ENDPOINT].update(built.assignments)
    hbone.rewrite_upstreams(wp, drs, out)  # in-mesh endpoints through connect_originate (no-op without HBONE)

    resources = {t: _sorted(v) for t, v in out.items()}
    by_type: dict[str, dict[str, Collection[ConfigKey | str]]] = {}
    for (t, name), keys in chain(sources.items(), ready.items()):
        named = by_type.get(t)
        if named is None:
            named = by_type[t] = {}
        named[name] = keys
    for t, named in ((types.CLUSTER, built.cluster_sources), (types.ENDPOINT, built.assignment_sources)):
        by_type[t] = {**by_type[t], **named} if t in by_type else named  # (HBONE adds fixed clusters)
    # (the "Kind/ns/name" strings are made when someone looks a resource's sources up: types.SourcesByType)
    return TranslateResult(types.ResourceSet(resources, types.SourcesByType(by_type)),
                           tuple(sorted(set(wp.issues), key=_issue_order)))


def _issue_order(i: Issue) -> tuple:
    return (i.key or ConfigKey("", "", ""), i.path, i.message, i.reason, i.severity.value)
