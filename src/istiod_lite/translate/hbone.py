"""The HBONE data path of a waypoint whose Gateway has an HBONE listener (``{name: mesh, port: 15008,
protocol: HBONE}``): Istio's ambient waypoint layout on upstream Envoy (HBONE-FACTS.md, ISTIO-REFERENCE 1.3).

Two passes, called from translate():

1. `add_listeners` (before clusters are built): listeners ``connect_terminate``, ``main_internal``,
   ``connect_originate`` and clusters ``main_internal``, ``connect_originate`` (hbone_listeners.py), and per
   bound service HTTP port one ``main_internal`` filter chain named ``inbound-vip|PORT|http|HOST`` selected by
   destination VIP and port (Kubernetes clusterIPs, ServiceEntry ``addresses``), whose HCM fetches a
   RouteConfiguration of the same name by RDS: one virtual host, domains ``*``, built by routes.virtual_host
   (the same routes, retries, timeouts, faults, CORS as the plain HTTP listeners) with AuthorizationPolicy
   identity fields matched on the caller's SPIFFE id in filter state (authz ``peer_identity="filter_state"``).
   Returns the cluster refs its routes use. Built from per-unit functions (fixed_resources, claim_vips,
   service_route, service_chain, main_internal_listener) that translate/incremental_hbone.py reuses.
2. `rewrite_upstreams` (after clusters and endpoints): endpoints of ``inbound-vip`` clusters that are in the
   ambient mesh become internal addresses ``connect_originate`` / ``<ip:port>`` carrying the tunnel target in
   ``envoy.filters.listener.original_dst`` host metadata, and their cluster gets the ``internal_upstream``
   transport socket that passes it through. Endpoints not in the mesh stay plain addresses (and a cluster with
   none in the mesh is left untouched), as Istio sends plaintext to workloads without a ztunnel. Per cluster:
   `rewrite_upstream`.

Which endpoints are in the mesh: label ``istio.io/dataplane-mode`` on the endpoint (Pod / ServiceEntry
endpoint labels), else on the service's namespace, equal to ``ambient``; never for MESH_EXTERNAL
ServiceEntries. Plain HTTP listeners use the same clusters, so they tunnel to in-mesh endpoints too.

Problems reported: a second HBONE listener (ignored), a bound service without a VIP (not reachable through
HBONE), two services claiming one VIP:port (the first, in service order, wins). An unknown VIP gets no filter
chain, so its CONNECT fails, as with Istio.
"""

from __future__ import annotations

import ipaddress

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from google.protobuf import any_pb2, wrappers_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from istiod_lite.model.gateway import GatewayListener
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.model.service import Endpoint, Service, ServicePort
from istiod_lite.translate import clusters, endpoints, filters, hbone_listeners as hl, names, routes
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef
from istiod_lite.translate.waypoint import HBONE, Waypoint, http_ports
from istiod_lite.xds import types
from istiod_lite.xds.types import Encoded, as_message

DATAPLANE_MODE = "istio.io/dataplane-mode"
FILTER_STATE = "filter_state"


def hbone_listener(wp: Waypoint) -> GatewayListener | None:
    """The Gateway's first HBONE listener (later ones are reported and ignored)."""
    found = None
    for i, gl in enumerate(wp.gateway.listeners):
        if gl.protocol.upper() != HBONE:
            continue
        if found is None:
            found = gl
        else:
            wp.report(warning(wp.key, f"spec.listeners[{i}]", f"listener {gl.name!r}: only one HBONE listener is "
                              f"served ({found.name!r}); this one is ignored", "PortConflict"))
    return found


def _packed(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def _input(name: str, msg) -> extension_pb2.TypedExtensionConfig:
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=_packed(msg))


def chain_matcher(table: dict[str, dict[int, str]]) -> matcher_pb2.Matcher:
    """Destination IP -> destination port -> filter chain name."""
    top = matcher_pb2.Matcher()
    top.matcher_tree.input.CopyFrom(_input("ip", network_inputs_pb2.DestinationIPInput()))
    for ip in sorted(table):
        inner = top.matcher_tree.exact_match_map.map[ip].matcher
        inner.matcher_tree.input.CopyFrom(_input("port", network_inputs_pb2.DestinationPortInput()))
        for port in sorted(table[ip]):
            chain = table[ip][port]
            inner.matcher_tree.exact_match_map.map[str(port)].action.CopyFrom(
                _input(chain, wrappers_pb2.StringValue(value=chain)))
    return top


def _chain(name: str) -> lc.FilterChain:
    m = hcm.HttpConnectionManager(stat_prefix=name, codec_type=hcm.HttpConnectionManager.AUTO)
    m.rds.config_source.CopyFrom(clusters.ads_config_source())
    m.rds.route_config_name = name
    m.http_filters.extend(filters.http_filters())
    return lc.FilterChain(name=name, filters=[lc.Filter(name=names.HCM_FILTER, typed_config=_packed(m))])


def _vip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def fixed_resources(wp: Waypoint, gl: GatewayListener) -> list[tuple[str, object]]:
    """(type URL, message) of the parts that depend only on the Gateway and options: listeners
    ``connect_terminate``, ``connect_originate``, clusters ``main_internal``, ``connect_originate``."""
    opts = wp.options
    ips = list(wp.gateway.addresses) or [opts.listen_address]
    return [(types.LISTENER, hl.connect_terminate(ips, gl.port, opts.trust_domain)),
            (types.LISTENER, hl.connect_originate_listener()),
            (types.CLUSTER, hl.main_internal_cluster(opts.connect_timeout_seconds)),
            (types.CLUSTER, hl.connect_originate_cluster(opts.connect_timeout_seconds, opts.hbone_upstream_port,
                                                         opts.trust_domain))]


def claim_vips(wp: Waypoint) -> tuple[dict[str, dict[int, str]], list[tuple[Service, ServicePort]]]:
    """Who owns each VIP:port, in service order (the first wins; NoVIP / VIPConflict reported): (destination IP ->
    port -> chain name, the (service, HTTP port) pairs that got a chain, in service order)."""
    table: dict[str, dict[int, str]] = {}
    owners: dict[tuple[str, int], Service] = {}
    claimed: list[tuple[Service, ServicePort]] = []
    for svc in wp.services:
        ports = http_ports(svc)
        if ports and not svc.addresses:
            wp.report(warning(svc.key, "", f"service {svc.hostname} has no VIP (clusterIP / ServiceEntry addresses): "
                              "it is not reachable through the waypoint's HBONE listener", "NoVIP"))
            continue
        for port in ports:
            name = names.inbound_vip_cluster(port.number, svc.hostname)
            claimed_any = False
            for vip in map(_vip, svc.addresses):
                other = owners.get((vip, port.number))
                if other is not None:
                    wp.report(warning(svc.key, "", f"{vip}:{port.number} is already the address of {other.hostname}; "
                                      f"{svc.hostname} is not reachable there through HBONE", "VIPConflict"))
                    continue
                owners[(vip, port.number)] = svc
                table.setdefault(vip, {})[port.number] = name
                claimed_any = True
            if claimed_any:
                claimed.append((svc, port))
    return table, claimed


def service_route(wp: Waypoint, drs: DestinationRules, svc: Service, port: ServicePort
                  ) -> tuple[route_pb2.RouteConfiguration, set[ConfigKey], list[ClusterRef]]:
    """The RouteConfiguration of one main_internal chain (named like the chain): (config, sources, refs)."""
    name = names.inbound_vip_cluster(port.number, svc.hostname)
    cfg = route_pb2.RouteConfiguration(name=name)
    cfg.validate_clusters.value = False
    cfg.max_direct_response_body_size_bytes.value = routes.MAX_DIRECT_RESPONSE_BODY
    rr = routes.RouteResult(cfg, sources={wp.key})
    cfg.virtual_hosts.append(routes.virtual_host(wp, drs, svc, port, ["*"], rr, peer_identity=FILTER_STATE))
    return cfg, rr.sources | routes.dr_sources(drs, rr.refs), list(rr.refs)


def service_chain(svc: Service, port: ServicePort) -> lc.FilterChain:
    """The main_internal filter chain of one claimed service port (depends on nothing else)."""
    return _chain(names.inbound_vip_cluster(port.number, svc.hostname))


def main_internal_listener(chains: list[lc.FilterChain], table: dict[str, dict[int, str]]):
    return hl.main_internal(sorted(chains, key=lambda c: c.name), chain_matcher(table))


def add_listeners(wp: Waypoint, drs: DestinationRules, out: dict[str, dict],
                  sources: dict[tuple[str, str], set[ConfigKey]]) -> list[ClusterRef]:
    gl = hbone_listener(wp)
    if gl is None:
        return []
    for type_url, msg in fixed_resources(wp, gl):
        out[type_url][msg.name] = msg
        sources[(type_url, msg.name)] = {wp.key}
    table, claimed = claim_vips(wp)
    refs: list[ClusterRef] = []
    for svc, port in claimed:
        cfg, src, route_refs = service_route(wp, drs, svc, port)
        out[types.ROUTE][cfg.name] = cfg
        sources[(types.ROUTE, cfg.name)] = src
        refs.extend(route_refs)
    out[types.LISTENER][hl.MAIN_INTERNAL] = main_internal_listener([service_chain(s, p) for s, p in claimed], table)
    sources[(types.LISTENER, hl.MAIN_INTERNAL)] = {wp.key} | {svc.key for svc, _ in claimed}
    return refs


def in_mesh(wp: Waypoint, service: Service, endpoint: Endpoint) -> bool:
    if service.location == "MESH_EXTERNAL":
        return False
    mode = dict(endpoint.labels).get(DATAPLANE_MODE)
    if mode is None:
        ns = wp.snapshot.namespaces.get(service.namespace)
        mode = ns.label(DATAPLANE_MODE) if ns is not None else None
    return mode == "ambient"


def rewrite_upstreams(wp: Waypoint, drs: DestinationRules, out: dict[str, dict]) -> None:
    """Second pass (see module doc); a no-op unless add_listeners served an HBONE listener."""
    if hl.CONNECT_ORIGINATE not in out[types.LISTENER]:
        return
    for ref in clusters.inbound_refs(wp, drs):
        cla = out[types.ENDPOINT].get(ref.name)
        cluster = out[types.CLUSTER].get(ref.name)
        if cla is not None and cluster is not None:  # (built as Encoded bytes: parsed, rewritten, encoded again)
            cluster, cla = as_message(cluster), as_message(cla)
            rewrite_upstream(wp, ref, cluster, cla)
            out[types.CLUSTER][ref.name] = Encoded.of(types.CLUSTER, cluster, ref.name)
            out[types.ENDPOINT][ref.name] = Encoded.of(types.ENDPOINT, cla, ref.name)


def rewrite_upstream(wp: Waypoint, ref: ClusterRef, cluster, cla) -> None:
    """One inbound-vip cluster and its ClusterLoadAssignment, in place: in-mesh endpoints through
    connect_originate (module doc, pass 2)."""
    meshed = {e.address for e in endpoints.selected_endpoints(ref) if in_mesh(wp, ref.service, e)}
    tunneled = 0
    for group in cla.endpoints:
        for lb in group.lb_endpoints:
            address = lb.endpoint.address
            if not address.HasField("socket_address") or address.socket_address.address not in meshed:
                continue
            target = names.host_with_port(address.socket_address.address, address.socket_address.port_value)
            address.CopyFrom(hl.internal_endpoint(hl.CONNECT_ORIGINATE, target).endpoint.address)
            lb.metadata.filter_metadata[hl.ORIGINAL_DST].fields["local"].string_value = target
            tunneled += 1
    if tunneled:
        inner = cluster.transport_socket if cluster.HasField("transport_socket") else None
        cluster.transport_socket.CopyFrom(hl.internal_upstream(inner, passthrough_original_dst=True))
