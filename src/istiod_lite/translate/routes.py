"""RouteConfigurations: one per HTTP listener (``http.<port>``), one VirtualHost per bound service.

Orchestrates: VirtualService selection (`select_virtual_services`), matches (route_match.py), actions
(route_action.py, retries.py), domains (domains.py), per-virtual-host filter configs (authz.py). Fields of
VirtualService that are not translated yet are reported as warnings ("not supported yet") at their path.

VirtualService selection (Istio ``getVirtualServiceForWaypoint``): a VS applies to a service when one of its
``hosts`` (short names resolved in the VS's namespace) matches the service hostname, the VS lives in the service's
namespace or the waypoint's, its ``gateways`` is empty or contains ``mesh``, and it has ``http`` rules (a VS
with only tcp/tls rules leaves the default route in place). Several VS merge: their http
rules are concatenated, oldest VS first. Rules are processed in order; after a catch-all route later rules are
unreachable (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from istiod_lite.model.hosts import host_matches, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate import authz, domains, names
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, inbound_ref
from istiod_lite.translate.route_action import build_action, default_action
from istiod_lite.translate.route_match import build_matches
from istiod_lite.translate.waypoint import Waypoint, served_port

VS_FIELDS = frozenset({"hosts", "gateways", "http"})
RULE_FIELDS = frozenset({"name", "match", "route", "timeout", "retries"})
RULE_ACTIONS_UNSUPPORTED = ("redirect", "directResponse", "delegate")


@dataclass
class RouteResult:
    config: route_pb2.RouteConfiguration
    refs: list[ClusterRef] = field(default_factory=list)
    sources: set[ConfigKey] = field(default_factory=set)


def select_virtual_services(wp: Waypoint, service: Service) -> list[IstioConfig]:
    suffix = wp.snapshot.domain_suffix
    out = []
    for vs in wp.snapshot.virtual_services:
        if vs.namespace not in (service.namespace, wp.namespace):
            continue
        gateways = vs.spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            continue
        if any(host_matches(resolve_short_name(str(h), vs.namespace, suffix), service.hostname)
               for h in vs.spec.get("hosts") or ()):
            out.append(vs)
    return sorted(out, key=lambda v: (v.meta.creation_timestamp or "~", v.key))


def _report_unsupported_vs(wp: Waypoint, vs: IstioConfig) -> None:
    for f in sorted(set(vs.spec) - VS_FIELDS):
        wp.report(warning(vs.key, f"spec.{f}", f"{f} is not supported yet; ignored"))


def _vs_routes(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort,
               vss: list[IstioConfig], result: RouteResult) -> list[rc.Route]:
    routes: list[rc.Route] = []
    for vs in vss:
        _report_unsupported_vs(wp, vs)
        for i, rule in enumerate(vs.spec.get("http") or ()):
            path = f"spec.http[{i}]"
            if routes and _ends_with_catch_all(routes):
                wp.report(warning(vs.key, path, f"unreachable for {svc.hostname}: an earlier rule matches every "
                                  "request", "Unreachable"))
                break
            if not rule.get("route"):
                present = [a for a in RULE_ACTIONS_UNSUPPORTED if rule.get(a)]
                wp.report(warning(vs.key, path, f"rule without route ({', '.join(present) or 'no action'}) is not "
                                  "supported yet; rule skipped"))
                continue
            for f in sorted(set(rule) - RULE_FIELDS):
                wp.report(warning(vs.key, f"{path}.{f}", f"{f} is not supported yet; ignored"))
            matches = build_matches(wp, vs, rule, path, port.number)
            if not matches:
                continue
            action = build_action(wp, drs, vs, rule, path, svc, port)
            result.refs.extend(action.refs)
            for m in matches:
                r = rc.Route(name=names.route_name(str(rule.get("name", "")), m.name), match=m.match)
                if m.stat_prefix:
                    r.stat_prefix = m.stat_prefix
                action.apply(r)
                routes.append(r)
                if m.catch_all:
                    break
    return routes


def _ends_with_catch_all(routes: list[rc.Route]) -> bool:
    m = routes[-1].match
    return (m.WhichOneof("path_specifier") == "prefix" and m.prefix == "/" and not m.headers
            and not m.query_parameters)


def virtual_host(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort, domain_list: list[str],
                 result: RouteResult) -> rc.VirtualHost:
    vh = rc.VirtualHost(name=names.virtual_host_name(svc.hostname, port.number), domains=domain_list)
    result.sources.add(svc.key)
    vss = select_virtual_services(wp, svc)
    for vs in vss:
        if not vs.spec.get("http"):
            _report_unsupported_vs(wp, vs)  # no HTTP rules (e.g. tcp only): the default route applies
    vss = [vs for vs in vss if vs.spec.get("http")]
    if vss:
        result.sources.update(vs.key for vs in vss)
        vh.routes.extend(_vs_routes(wp, drs, svc, port, vss, result))
    else:
        ref = inbound_ref(svc, port)
        action = default_action(wp, ref)
        r = rc.Route(name=names.DEFAULT_ROUTE, match=rc.RouteMatch(prefix="/"))
        action.apply(r)
        vh.routes.append(r)
        result.refs.extend(action.refs)
    for name, cfg in sorted(authz.virtual_host_config(wp, svc).items()):
        vh.typed_per_filter_config[name].CopyFrom(cfg)
    return vh


def route_configuration(wp: Waypoint, drs: DestinationRules, listener_port: int) -> RouteResult:
    served: list[tuple[Service, ServicePort]] = []
    for svc in wp.services:
        p = served_port(svc, listener_port)
        if p is not None:
            served.append((svc, p))
    cfg = route_pb2.RouteConfiguration(name=names.route_config_name(listener_port))
    cfg.validate_clusters.value = False
    result = RouteResult(cfg, sources={wp.key})
    doms = domains.assign(wp, [(s, p.number) for s, p in served], names.listener_name(listener_port))
    vhosts = []
    for svc, p in served:
        vh_name = names.virtual_host_name(svc.hostname, p.number)
        if not doms[vh_name]:
            continue
        vhosts.append(virtual_host(wp, drs, svc, p, doms[vh_name], result))
    cfg.virtual_hosts.extend(sorted(vhosts, key=lambda v: v.name))
    return result


def dr_sources(drs: DestinationRules, refs: list[ClusterRef]) -> set[ConfigKey]:
    out: set[ConfigKey] = set()
    for ref in refs:
        if ref.subset is not None:
            out.add(ref.subset.source)
    return out

