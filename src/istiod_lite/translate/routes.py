"""Routes of a plain HTTP listener: one VirtualHost per bound service, laid out by route_scopes.py (Scoped RDS:
a RouteConfiguration per service; a listener serving a wildcard host: one RouteConfiguration ``http.<port>``).

Orchestrates: VirtualService selection (`select_virtual_services`), matches (route_match.py), actions
(route_action.py: destinations, redirect/directResponse, rewrite, headers, timeout, retries, mirrors, fault and
CORS per-route configs), domains (domains.py), per-virtual-host filter configs (authz.py).

VirtualService selection (Istio ``getVirtualServiceForWaypoint``), for a bound service S:
- one of ``hosts`` matches S's hostname (short names resolved in the VS's namespace, ``*.example.com`` wildcards);
- the VS lives in S's namespace or the waypoint's (a matching VS elsewhere is reported, not applied);
- ``gateways`` is empty or names ``mesh`` or this waypoint (``ns/name``; ``name`` in the waypoint's namespace),
  otherwise it is reported as not applied here;
- ``exportTo`` makes it visible to the waypoint's namespace: unset or ``*`` = everywhere, ``.`` = its own
  namespace, ``~`` = nowhere, else the listed namespaces (otherwise reported, not applied).
Several VS for S merge as Istio merges them at waypoints (istio/istio#59484): their ``http`` rules are
concatenated, oldest VS first (creationTimestamp, then namespace/name). Rules are processed in order, first match
wins; rules after a catch-all are unreachable and reported with the VS that shadows them (a conflict between
merged VS). When no rule yields a route on this port (e.g. every match names another port), the service keeps
its default route, as Istio does when translateRoutes finds no route. A VS without ``http`` rules (tcp only)
leaves the HTTP default route in place. ``tls`` routes and
``delegate`` are reported as unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2, scoped_route_pb2

from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate import authz, domains, names, route_scopes, wire
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, wp_inbound_ref
from istiod_lite.translate.route_action import DESTINATION_FIELDS, default_action, plain_tail, route_tail
from istiod_lite.translate.route_match import Match, build_matches, gateway_applies, match_bytes, no_match
from istiod_lite.translate.waypoint import Waypoint, served_port

VS_FIELDS = frozenset({"hosts", "gateways", "http", "tcp", "exportTo"})
RULE_FIELDS = frozenset({"name", "match", "route", "redirect", "directResponse", "rewrite", "headers", "timeout",
                         "retries", "fault", "mirror", "mirrors", "mirrorPercentage", "mirrorPercent", "corsPolicy"})
# Istio sets RouteConfiguration.max_direct_response_body_size_bytes to 1 MiB (Envoy's default is 4 KiB); the
# validation limit for directResponse bodies is the same 1 MiB.
MAX_DIRECT_RESPONSE_BODY = route_scopes.MAX_DIRECT_RESPONSE_BODY


@dataclass
class RouteResult:
    config: route_pb2.RouteConfiguration
    refs: list[ClusterRef] = field(default_factory=list)
    sources: set[ConfigKey] = field(default_factory=set)


def _age(vs: IstioConfig) -> tuple:
    return (vs.meta.creation_timestamp or "~", vs.key)


def exported_to(vs: IstioConfig, namespace: str) -> bool:
    """Istio exportTo visibility of `vs` from `namespace` (default: exported everywhere)."""
    export = [str(x) for x in vs.spec.get("exportTo") or ()]
    if not export or "*" in export:
        return True
    if "." in export and vs.namespace == namespace:
        return True
    return namespace in export


def hosts_match(wp: Waypoint, vs: IstioConfig, service: Service) -> bool:
    suffix = wp.snapshot.domain_suffix
    return any(host_matches(resolve_short_name(str(h), vs.namespace, suffix), service.hostname)
               for h in vs.spec.get("hosts") or ())


def select_virtual_services(wp: Waypoint, service: Service) -> list[IstioConfig]:
    """The VirtualServices applied to `service` at this waypoint, oldest first; the ones whose hosts match but
    that do not apply here are reported (warning NotApplied) with the reason."""
    found = wp.snapshot.virtual_services_for_host(service.hostname)  # indexed: hosts_match(wp, vs, service)
    if not found:
        return found
    out = []
    wp_ns = wp.gateway.meta.key.namespace
    svc_ns = service.meta.key.namespace
    for vs in found:
        ns = vs.meta.key.namespace
        if ns != svc_ns and ns != wp_ns:
            wp.report(warning(vs.key, "metadata.namespace", f"not applied to {service.hostname} at waypoint "
                              f"{wp.namespace}/{wp.gateway.key.name}: a waypoint reads VirtualServices from the "
                              f"service's namespace ({service.namespace}) or its own ({wp.namespace})", "NotApplied"))
            continue
        spec = vs.spec
        if spec.get("gateways") and not gateway_applies(spec.get("gateways"), wp, ns):
            wp.report(warning(vs.key, "spec.gateways", f"bound to gateways {list(vs.spec['gateways'])}, which do not "
                              f"include mesh or {wp.namespace}/{wp.gateway.key.name}: not applied at this waypoint",
                              "NotApplied"))
            continue
        if spec.get("exportTo") and not exported_to(vs, wp_ns):
            wp.report(warning(vs.key, "spec.exportTo", f"not exported to namespace {wp.namespace} of waypoint "
                              f"{wp.gateway.key.name}: not applied at this waypoint", "NotApplied"))
            continue
        out.append(vs)
    if len(out) > 1:
        out.sort(key=_age)
    return out


def _usual(vs: IstioConfig) -> bool:
    """Nothing for `report_unsupported` to report (the usual case, checked without building paths)."""
    spec = vs.spec
    if not spec.keys() <= VS_FIELDS:
        return False
    for rule in spec.get("http") or ():
        if type(rule) is not dict or not rule.keys() <= RULE_FIELDS:
            return False
        for r in rule.get("route") or ():
            if type(r) is not dict or not r.keys() <= DESTINATION_FIELDS:
                return False
    return True


def report_unsupported(wp: Waypoint, vs: IstioConfig) -> None:
    if not _usual(vs):
        _report_unsupported(wp, vs)


def _report_unsupported(wp: Waypoint, vs: IstioConfig) -> None:
    for f in sorted(set(vs.spec) - VS_FIELDS):
        why = ("TLS routes are not supported at istiod-lite waypoints yet" if f == "tls"
               else f"{f} is not supported; ignored")
        wp.report(warning(vs.key, f"spec.{f}", why))
    for i, rule in enumerate(vs.spec.get("http") or ()):
        path = f"spec.http[{i}]"
        for f in sorted(set(rule) - RULE_FIELDS):
            why = ("delegate is not supported (delegate VirtualServices are not read); rule skipped"
                   if f == "delegate" else f"{f} is not supported; ignored")
            wp.report(warning(vs.key, f"{path}.{f}", why))
        for j, r in enumerate(rule.get("route") or ()):
            for f in sorted(set(r) - DESTINATION_FIELDS):
                wp.report(warning(vs.key, f"{path}.route[{j}].{f}", f"{f} is not supported; ignored"))


_ROUTE_NAME = rc.Route.DESCRIPTOR.fields_by_name["name"].number
_ROUTE_MATCH = rc.Route.DESCRIPTOR.fields_by_name["match"].number
_ROUTE_STAT_PREFIX = rc.Route.DESCRIPTOR.fields_by_name["stat_prefix"].number
_VH_NAME = rc.VirtualHost.DESCRIPTOR.fields_by_name["name"].number
_VH_DOMAINS = rc.VirtualHost.DESCRIPTOR.fields_by_name["domains"].number
_VH_ROUTES = rc.VirtualHost.DESCRIPTOR.fields_by_name["routes"].number
_VH_FILTER_CONFIG = rc.VirtualHost.DESCRIPTOR.fields_by_name["typed_per_filter_config"].number
_MATCH_ALL = rc.RouteMatch(prefix="/").SerializeToString()
_DEFAULT_HEAD = wire.string(_ROUTE_NAME, names.DEFAULT_ROUTE) + wire.ld(_ROUTE_MATCH, _MATCH_ALL)
_HEADS = "_istiod_lite_route_heads"
_RULE_PATHS = tuple(f"spec.http[{i}]" for i in range(16))


def _route_head(wp: Waypoint, rule_name: str, m: Match) -> bytes:
    """A route's name, match and stat prefix fields, once per (rule name, memoised match) per translation."""
    memo = wp.__dict__.get(_HEADS)
    if memo is None:
        memo = wp.__dict__[_HEADS] = {}
    key = (rule_name, id(m))
    hit = memo.get(key)
    if hit is None or hit[0] is not m:
        head = wire.string(_ROUTE_NAME, names.route_name(rule_name, m.name)) + \
            wire.ld(_ROUTE_MATCH, match_bytes(wp, m))
        if m.stat_prefix:
            head += wire.string(_ROUTE_STAT_PREFIX, m.stat_prefix)
        hit = memo[key] = (m, head)  # (keeps `m` alive: its id stays its own)
    return hit[1]


def _vs_routes(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, listener_port: int,
               vss: list[IstioConfig], result: RouteResult) -> list[bytes]:
    """The serialized routes (rc.Route) of the applicable VirtualServices' http rules."""
    routes: list[bytes] = []
    shadowed_by: IstioConfig | None = None
    refs = result.refs
    heads = wp.__dict__.get(_HEADS)  # `_route_head`'s memo
    if heads is None:
        heads = wp.__dict__[_HEADS] = {}
    number = port.number
    for vs in vss:
        if not _usual(vs):
            _report_unsupported(wp, vs)
        for i, rule in enumerate(vs.spec.get("http") or ()):
            if shadowed_by is not None:
                by = "an earlier rule" if shadowed_by.key == vs.key else \
                    f"a rule of the older VirtualService {shadowed_by.namespace}/{shadowed_by.name}"
                wp.report(warning(vs.key, f"spec.http[{i}]", f"unreachable for {svc.hostname}: {by} matches every "
                                  "request", "Unreachable"))
                break
            get = rule.get
            if get("delegate") and not (get("route") or get("redirect") or get("directResponse")):
                continue  # reported by report_unsupported
            path = _RULE_PATHS[i] if i < len(_RULE_PATHS) else f"spec.http[{i}]"
            matches = build_matches(wp, vs, rule, path, number)
            if not matches:
                continue
            plain = plain_tail(wp, drs, rule, svc, port)
            if plain is not None:
                tail, action_refs = plain
                action = None
            else:
                tail, action_refs, action = route_tail(wp, drs, vs, rule, path, svc, port, listener_port)
            refs += action_refs
            rule_name = get("name", "")
            if type(rule_name) is not str:
                rule_name = str(rule_name)
            for m in matches:
                hit = heads.get((rule_name, id(m)))  # _route_head, inlined
                head = hit[1] if hit is not None and hit[0] is m else _route_head(wp, rule_name, m)
                routes.append(head + (tail if action is None else action.route_bytes()))
                if m.catch_all:
                    shadowed_by = vs
                    break
    return routes


_NAME_ROUTE = frozenset({"name", "route"})


def _plain_route(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, vs: IstioConfig,
                 result: RouteResult) -> tuple[bytes, bytes] | None:
    """`_vs_routes` of the usual VirtualService, in one pass: nothing to report (`_usual`), one http rule with
    a name and destinations only (no match: one catch-all route), its action a `plain_tail`; its one route as
    (head, tail) (name, match; action). None for any other (nothing reported, nothing added to `result`: the
    caller asks `_vs_routes`)."""
    spec = vs.spec
    http = spec.get("http")
    if type(http) is not list or len(http) != 1 or not spec.keys() <= VS_FIELDS:
        return None
    rule = http[0]
    if type(rule) is not dict or not rule.keys() <= _NAME_ROUTE:
        return None
    plain = plain_tail(wp, drs, rule, svc, port)  # (declines destinations `_usual` would report)
    if plain is None:
        return None
    result.refs += plain[1]
    rule_name = rule.get("name", "")
    d = wp.__dict__
    heads = d.get(_PLAIN_HEADS)  # rule name -> `_route_head` of the catch-all match (build_matches of no match)
    if heads is None:
        heads = d[_PLAIN_HEADS] = {}
    head = heads.get(rule_name) if type(rule_name) is str else None
    if head is None:
        head = _route_head(wp, rule_name if type(rule_name) is str else str(rule_name), no_match(wp))
        if type(rule_name) is str:
            heads[rule_name] = head
    return head, plain[0]


_PLAIN_HEADS = "_istiod_lite_plain_route_heads"


def _vh_bytes(vh_name: str, domain_list: list[str], routes: bytes, route_tail: bytes | None = None) -> bytes:
    """A virtual host's name (1), domains (2) and `routes` (its encoded routes (3)), in one join; with
    `route_tail`, `routes` + `route_tail` is its one route (not yet encoded as field 3)."""
    raw = vh_name.encode()
    n = len(raw)
    out = [_VH_NAME_TAG, _LEN[n] if n < 0x80 else wire.varint(n), raw]
    for dom in domain_list:
        raw = dom.encode()
        n = len(raw)
        out += (_VH_DOMAIN_TAG, _LEN[n] if n < 0x80 else wire.varint(n), raw)
    if route_tail is None:
        out.append(routes)
    else:
        n = len(routes) + len(route_tail)
        out += (_VH_ROUTES_TAG, _LEN[n] if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) if n < 0x4000
                else wire.varint(n), routes, route_tail)
    return b"".join(out)


_VH_NAME_TAG = wire.tag(_VH_NAME)
_VH_DOMAIN_TAG = wire.tag(_VH_DOMAINS)
_VH_ROUTES_TAG = wire.tag(_VH_ROUTES)
_LEN = wire.LEN


def virtual_host(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, domain_list: list[str],
                 result: RouteResult, listener_port: int = 0, *, peer_identity: str = "tls") -> rc.VirtualHost:
    """`peer_identity` says where AuthorizationPolicy identity fields look (authz.virtual_host_config): the
    HBONE chains of hbone.py pass "filter_state"."""
    return rc.VirtualHost.FromString(virtual_host_bytes(wp, drs, svc, port, domain_list, result, listener_port,
                                                        peer_identity=peer_identity))


def virtual_host_bytes(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, domain_list: list[str],
                       result: RouteResult, listener_port: int = 0, *, peer_identity: str = "tls") -> bytes:
    """`virtual_host`, serialized (wire fragments, no message built: translate() parses whole route
    configurations once, route_scopes.with_vhost_bytes). Its fields in number order: name (1), domains (2),
    routes (3) from `virtual_host_route_bytes`, then typed_per_filter_config (15) from
    `virtual_host_authz_bytes`; `authz_offset` finds where the latter starts (the incremental translator
    re-encodes only that part when only AuthorizationPolicies changed)."""
    return virtual_host_route_bytes(wp, drs, svc, port, domain_list, result, listener_port) + \
        virtual_host_authz_bytes(wp, svc, port, result, peer_identity=peer_identity)


def virtual_host_route_bytes(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort,
                             domain_list: list[str], result: RouteResult, listener_port: int = 0) -> bytes:
    """The virtual host's fields before typed_per_filter_config (name, domains, routes); adds the service, its
    VirtualServices and the route refs to `result`. Reads no AuthorizationPolicy."""
    return _route_bytes(wp, drs, svc, port, names.virtual_host_name(svc.hostname, port.number), domain_list, result,
                        listener_port)


def _route_bytes(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, vh_name: str,
                 domain_list: list[str], result: RouteResult, listener_port: int) -> bytes:
    """`virtual_host_route_bytes`, the virtual host's name given."""
    sources = result.sources
    sources.add(svc.meta.key)
    vss = wp.snapshot.virtual_services_for_host(svc.hostname)
    if len(vss) == 1:  # (the usual: one VirtualService, which `select_virtual_services` applies silently when
        vs = vss[0]  # it lives in the service's or the waypoint's namespace and has no gateways nor exportTo)
        spec = vs.spec
        ns = vs.meta.key.namespace
        if (ns != svc.meta.key.namespace and ns != wp.gateway.meta.key.namespace) or spec.get("gateways") or \
                spec.get("exportTo"):
            vss = select_virtual_services(wp, svc)
    elif vss:
        vss = select_virtual_services(wp, svc)
    routes: list[bytes] | None = None
    if len(vss) == 1:  # (the usual)
        vs = vss[0]
        if vs.spec.get("http"):
            sources.add(vs.meta.key)
            route = _plain_route(wp, drs, svc, port, vs, result)
            if route is not None:
                return _vh_bytes(vh_name, domain_list, *route)
            routes = _vs_routes(wp, drs, svc, port, listener_port or port.number, vss, result)
        else:
            report_unsupported(wp, vs)  # no HTTP rules (e.g. tcp only): the default route applies
    elif vss:
        with_http = []
        for vs in vss:
            if vs.spec.get("http"):
                with_http.append(vs)
            else:
                report_unsupported(wp, vs)  # no HTTP rules (e.g. tcp only): the default route applies
        if with_http:
            routes = _vs_routes(wp, drs, svc, port, listener_port or port.number, with_http, result)
            for vs in with_http:
                sources.add(vs.meta.key)
    if routes:
        return _vh_bytes(vh_name, domain_list, wire.lds(_VH_ROUTES, routes))
    # no VirtualService, or none of its rules applies on this port: the default route (as Istio)
    action = default_action(wp, wp_inbound_ref(wp, svc, port))
    result.refs += action.refs
    return _vh_bytes(vh_name, domain_list, wire.ld(_VH_ROUTES, _DEFAULT_HEAD + action.route_bytes()))


def virtual_host_authz_bytes(wp: Waypoint, svc: Service, port: ServicePort, result: RouteResult, *,
                             peer_identity: str = "tls") -> bytes:
    """The virtual host's typed_per_filter_config entries (field 15, the RBAC per-route configs of authz.py; empty
    when no policy applies); adds the attached policies' keys to `result.sources`. Reads only the service, the
    port and the AuthorizationPolicies."""
    keys, part = authz.virtual_host_part(wp, svc, port.number, peer_identity)  # (field 15 entries, encoded)
    result.sources.update(keys)
    return part


def authz_offset(vh: bytes) -> int:
    """Where `virtual_host_authz_bytes`' part starts in `vh` (a `virtual_host_bytes` result): the offset of the
    first top-level field 15, or len(vh). Walks the top-level fields only (name, domains, routes)."""
    i, n = 0, len(vh)
    while i < n:
        start = i
        key, i = wire.read_varint(vh, i)
        if key >> 3 == _VH_FILTER_CONFIG:
            return start
        wt = key & 7
        if wt == 2:
            length, i = wire.read_varint(vh, i)
            i += length
        elif wt == 0:
            _, i = wire.read_varint(vh, i)
        elif wt in (1, 5):
            i += 8 if wt == 1 else 4
        else:
            raise ValueError(f"unexpected wire type {wt} in a virtual host")
    return n


@dataclass
class ListenerRoutes:
    """The routes of one HTTP listener: RouteConfigurations (with their refs and sources) and, when scoped, the
    ScopedRouteConfigurations naming them (`scope_sources`: scope name -> sources)."""

    scoped: bool
    configs: list[RouteResult]
    refs: list[ClusterRef]
    scopes: list[scoped_route_pb2.ScopedRouteConfiguration] = field(default_factory=list)
    scope_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)


def served_domains(wp: Waypoint, listener_port: int) -> tuple[list[tuple[Service, ServicePort]], dict[str, list[str]]]:
    served: list[tuple[Service, ServicePort]] = []
    for svc in wp.services:
        ports = svc.ports
        if len(ports) == 1:  # served_port of a one-port service: that port when it is HTTP
            p = ports[0] if ports[0].is_http else None
        else:
            p = served_port(svc, listener_port)
        if p is not None:
            served.append((svc, p))
    doms = domains.assign(wp, [(s, p.number) for s, p in served], names.listener_name(listener_port))
    return served, doms


def listener_routes(wp: Waypoint, drs: DestinationRules, listener_port: int) -> ListenerRoutes:
    served, doms = served_domains(wp, listener_port)
    built: list[tuple[Service, str, bytes, bytes, RouteResult]] = []  # (service, virtual host name, its route and
    # authz parts, result)
    refs: list[ClusterRef] = []
    if len(doms) == len(served):  # (the usual: one virtual host per served service, in `served` order)
        pairs = zip(served, doms.items())
    else:
        pairs = (((svc, p), (vh, doms[vh])) for svc, p in served
                 for vh in (names.virtual_host_name(svc.hostname, p.number),))
    for (svc, p), (vh_name, domain_list) in pairs:
        if not domain_list:
            continue
        rr = RouteResult(_NO_CONFIG, [], set())
        route_part = _route_bytes(wp, drs, svc, p, vh_name, domain_list, rr, listener_port)
        keys, authz_part = authz.virtual_host_part(wp, svc, p.number)  # virtual_host_authz_bytes, inlined
        rr.sources.update(keys)
        built.append((svc, vh_name, route_part, authz_part, rr))  # (virtual_host_bytes: the two joined)
        refs += rr.refs
    if not route_scopes.is_scoped(doms):
        cfg = route_scopes.with_vhost_bytes(names.route_config_name(listener_port),
                                            [(name, rp + ap) for _, name, rp, ap, _ in built], False)
        result = RouteResult(cfg, refs, {wp.key})
        for *_, rr in built:
            result.sources |= rr.sources
        return ListenerRoutes(False, [result], refs)
    plan = route_scopes.plan(listener_port, doms, {name: svc.hostname for svc, name, *_ in built})
    configs = []
    own = plan.own
    wp_key = wp.key
    own_config = route_scopes.own_config
    for svc, name, rp, ap, rr in built:
        if name in own:
            rr.config = own_config(listener_port, svc.hostname, rp, ap)
            rr.sources.add(wp_key)
            configs.append(rr)  # (its refs list is not shared: `refs` got a copy of its items)
    by_vh = {name: (rp + ap, rr) for _, name, rp, ap, rr in built} if plan.shared else {}
    for name, vhs in plan.shared.items():
        result = RouteResult(route_scopes.with_vhost_bytes(name, [(v, by_vh[v][0]) for v in vhs]), [], {wp_key})
        for v in vhs:
            result.refs.extend(by_vh[v][1].refs)
            result.sources |= by_vh[v][1].sources
        configs.append(result)
    keys = {svc.hostname: svc.meta.key for svc, *_ in built}
    scopes, scope_sources = plan.scopes_and_sources(keys, wp_key)
    return ListenerRoutes(True, configs, refs, scopes, scope_sources)


_NO_CONFIG = route_pb2.RouteConfiguration()  # placeholder of RouteResults whose config is set later (never output)


def dr_sources(drs: DestinationRules, refs: list[ClusterRef]) -> set[ConfigKey]:
    out: set[ConfigKey] = set()
    for ref in refs:
        if ref.subset is not None:
            out.add(ref.subset.source)
    return out
