"""TCP listeners: a waypoint Gateway listener with ``protocol: TCP`` on port P -> Envoy listener ``tcp-P`` with
one ``tcp_proxy`` (VirtualService ``tcp[]`` routes; Istio ``buildWaypointInboundVIP`` tcp chains).

Which service does ``tcp-P`` serve? A TCP listener sees no Host header, so the choice is made per port:
1. candidates: the services bound to this waypoint that have a port numbered P or an applicable VirtualService
   whose ``tcp[].match[].port`` is P;
2. the candidate with such a tcp route wins, then the first by (namespace, hostname); any other is reported
   (warning ``AmbiguousTCPListener``) and is not reachable through this listener (give it another port, or
   route to it by weight from the winner's VirtualService).
Routing for the chosen service S (port P, or S's only port): its applicable VirtualServices (routes.py
selection: hosts, namespace, gateways, exportTo; merged oldest first) contribute their ``tcp`` rules in order;
the first rule with no match, or with a match block whose ``port`` is P (and that names no other gateway,
no sourceLabels/sourceNamespace, which cannot apply at a waypoint), is used. Its ``route[]``: one destination ->
``cluster``; several -> ``weighted_clusters`` (weights relative, ``weight: 0`` omitted). Destinations bound to
the waypoint use ``inbound-vip|PORT|tcp|HOST`` clusters. No applicable rule -> S's own ``tcp`` cluster.
A listener change drains connections (LDS): acceptable for TCP routes, which have no RDS equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

from istiod_lite.model.gateway import GatewayListener
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, error, warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate import names
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef, inbound_ref, resolve_destination
from istiod_lite.translate.route_match import gateway_applies
from istiod_lite.translate.routes import select_virtual_services
from istiod_lite.translate.waypoint import Waypoint

TCP = "TCP"
TCP_RULE_FIELDS = frozenset({"match", "route"})
TCP_MATCH_FIELDS = frozenset({"port", "gateways", "sourceLabels", "sourceNamespace", "destinationSubnets"})


@dataclass
class TcpListener:
    listener: listener_pb2.Listener
    refs: list[ClusterRef] = field(default_factory=list)
    sources: set[ConfigKey] = field(default_factory=set)


def tcp_gateway_listeners(wp: Waypoint) -> list[GatewayListener]:
    """The Gateway's TCP listeners, one per port; a port already used by an earlier listener is reported."""
    used = {lst.port: lst.name for lst in wp.gateway.listeners if lst.protocol.upper() == "HTTP"}
    out = []
    for i, lst in enumerate(wp.gateway.listeners):
        if lst.protocol.upper() != TCP:
            continue
        if lst.port in used:
            wp.report(error(wp.key, f"spec.listeners[{i}].port", f"port {lst.port} is already used by listener "
                            f"{used[lst.port]!r}; listener {lst.name!r} ignored", "PortConflict"))
            continue
        used[lst.port] = lst.name
        out.append(lst)
    return sorted(out, key=lambda x: x.port)


def _rule_applies(wp: Waypoint, vs: IstioConfig, rule: Mapping[str, Any], port: int) -> bool:
    blocks = rule.get("match") or []
    if not blocks:
        return True
    for m in blocks:
        if m.get("sourceLabels") or m.get("sourceNamespace"):
            continue
        if not gateway_applies(m.get("gateways"), wp, vs.namespace):
            continue
        if m.get("port") is None or int(m["port"]) == port:
            return True
    return False


def _candidates(wp: Waypoint, port: int) -> list[tuple[Service, list[IstioConfig]]]:
    """Services this TCP listener could serve, best first: a tcp route matching the port, then by name."""
    ranked = []
    for svc in wp.services:
        vss = [vs for vs in select_virtual_services(wp, svc) if vs.spec.get("tcp")]
        by_match = any(int(m.get("port", -1) or -1) == port
                       for vs in vss for rule in vs.spec["tcp"] for m in rule.get("match") or ())
        if svc.port(port) is not None or by_match:
            ranked.append(((0 if by_match else 1, svc.namespace, svc.hostname), svc, vss))
    return [(svc, vss) for _, svc, vss in sorted(ranked, key=lambda x: x[0])]


def _report_tcp_fields(wp: Waypoint, vs: IstioConfig) -> None:
    for i, rule in enumerate(vs.spec.get("tcp") or ()):
        for f in sorted(set(rule) - TCP_RULE_FIELDS):
            wp.report(warning(vs.key, f"spec.tcp[{i}].{f}", f"{f} is not supported; ignored"))
        for j, m in enumerate(rule.get("match") or ()):
            for f in sorted(set(m) - TCP_MATCH_FIELDS):
                wp.report(warning(vs.key, f"spec.tcp[{i}].match[{j}].{f}", f"{f} is not supported; ignored"))
            if m.get("destinationSubnets"):
                wp.report(warning(vs.key, f"spec.tcp[{i}].match[{j}].destinationSubnets", "destinationSubnets is "
                                  "not supported at a waypoint; ignored", "UnsupportedAtWaypoint"))
            for f in ("sourceLabels", "sourceNamespace"):
                if m.get(f):
                    wp.report(warning(vs.key, f"spec.tcp[{i}].match[{j}].{f}", f"{f} cannot be matched at a "
                                      "waypoint; this match block is dropped", "UnsupportedAtWaypoint"))


def _proxy(wp: Waypoint, drs: DestinationRules, svc: Service, own_port: ServicePort, port: int,
           vss: list[IstioConfig], result: TcpListener) -> tcp_proxy_pb2.TcpProxy:
    for vs in vss:
        _report_tcp_fields(wp, vs)
    for vs in vss:
        for i, rule in enumerate(vs.spec.get("tcp") or ()):
            if not _rule_applies(wp, vs, rule, port):
                continue
            result.sources.add(vs.key)
            dests = rule.get("route") or []
            chosen: list[tuple[ClusterRef, int]] = []
            for j, r in enumerate(dests):
                ref = resolve_destination(wp, drs, vs, r.get("destination") or {},
                                          f"spec.tcp[{i}].route[{j}].destination", svc, own_port, "tcp")
                weight = int(r.get("weight", 0) or 0)
                if ref is not None and (len(dests) == 1 or weight > 0):
                    chosen.append((ref, weight))
            if not chosen:
                continue  # every destination was reported; try the next rule
            proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=names.tcp_listener_name(port))
            if len(dests) == 1:
                proxy.cluster = chosen[0][0].name
            else:
                for ref, weight in chosen:
                    proxy.weighted_clusters.clusters.add(name=ref.name, weight=weight)
            result.refs.extend(ref for ref, _ in chosen)
            return proxy
    ref = inbound_ref(svc, own_port, protocol="tcp")
    result.refs.append(ref)
    return tcp_proxy_pb2.TcpProxy(stat_prefix=names.tcp_listener_name(port), cluster=ref.name)


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def build_listener(wp: Waypoint, drs: DestinationRules, gl: GatewayListener) -> TcpListener | None:
    cands = _candidates(wp, gl.port)
    if not cands:
        wp.report(warning(wp.key, "spec.listeners", f"TCP listener {gl.name!r} (port {gl.port}): no bound service "
                          f"has port {gl.port} and no VirtualService tcp route matches it; not served",
                          "NoTCPService"))
        return None
    (svc, vss), others = cands[0], cands[1:]
    if not svc.ports:
        return None
    for other, _ in others:
        wp.report(warning(other.key, "spec.ports", f"TCP listener {gl.name!r} (port {gl.port}) of waypoint "
                          f"{wp.namespace}/{wp.gateway.key.name} serves {svc.hostname}; {other.hostname} is not "
                          "reachable through it", "AmbiguousTCPListener"))
    own_port = svc.port(gl.port) or svc.ports[0]
    ips = list(wp.gateway.addresses) or [wp.options.listen_address]
    lst = listener_pb2.Listener(name=names.tcp_listener_name(gl.port), address=_address(ips[0], gl.port),
                                traffic_direction=base_pb2.INBOUND)
    for ip in ips[1:]:
        lst.additional_addresses.add(address=_address(ip, gl.port))
    result = TcpListener(lst, sources={wp.key, svc.key})
    packed = any_pb2.Any()
    packed.Pack(_proxy(wp, drs, svc, own_port, gl.port, vss, result))
    lst.filter_chains.append(listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=names.TCP_PROXY_FILTER, typed_config=packed)]))
    return result


def build_listeners(wp: Waypoint, drs: DestinationRules) -> list[TcpListener]:
    out = []
    for gl in tcp_gateway_listeners(wp):
        built = build_listener(wp, drs, gl)
        if built is not None:
            out.append(built)
    return out
