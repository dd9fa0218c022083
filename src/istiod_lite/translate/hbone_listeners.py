"""The fixed parts of the HBONE layout (HBONE-FACTS.md, Istio's ``listener_waypoint.go``): listeners
``connect_terminate``, ``main_internal`` and ``connect_originate`` and clusters ``main_internal`` and
``connect_originate``. The per-service parts (main_internal's filter chains, their routes, the inbound-vip
rewrite) are in hbone.py.

- ``connect_terminate`` (<address>:<HBONE port>): mTLS (hbone_tls), HTTP/2 with CONNECT; every CONNECT is
  terminated into cluster ``main_internal`` after set_filter_state copied, shared ONCE with the upstream
  internal connection: the target ``:authority`` (VIP:port) and the caller's address for the original_dst
  listener filter, and the caller's SPIFFE id as ``io.istio.peer_principal`` (what RBAC matches, since no TLS
  exists inside main_internal).
- cluster ``main_internal`` -> internal listener ``main_internal`` through ``internal_upstream`` (without it the
  filter state is lost and no chain matches).
- ``connect_originate`` (internal): original_dst restores the endpoint address from the host metadata the
  inbound-vip clusters pass through; tcp_proxy tunnels it as CONNECT ``<ip:port>`` to cluster
  ``connect_originate`` (ORIGINAL_DST, port override = the HBONE port, HTTP/2 + mTLS).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2 as fs
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.internal_upstream.v3 import internal_upstream_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf import any_pb2

from istiod_lite.translate import hbone_tls, names
from istiod_lite.translate.durations import seconds_duration

CONNECT_TERMINATE = "connect_terminate"
MAIN_INTERNAL = "main_internal"
CONNECT_ORIGINATE = "connect_originate"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
PEER_PRINCIPAL = "io.istio.peer_principal"
SET_FILTER_STATE = "envoy.filters.http.set_filter_state"
INTERNAL_UPSTREAM = "envoy.transport_sockets.internal_upstream"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def _packed(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def original_dst_filter() -> lc.ListenerFilter:
    return lc.ListenerFilter(name=ORIGINAL_DST, typed_config=_packed(original_dst_pb2.OriginalDst()))


def raw_buffer() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=RAW_BUFFER, typed_config=_packed(raw_buffer_pb2.RawBuffer()))


def internal_upstream(inner: base_pb2.TransportSocket | None = None,
                      passthrough_original_dst: bool = False) -> base_pb2.TransportSocket:
    cfg = internal_upstream_pb2.InternalUpstreamTransport(transport_socket=inner or raw_buffer())
    if passthrough_original_dst:
        src = cfg.passthrough_metadata.add(name=ORIGINAL_DST)
        src.kind.host.SetInParent()
    return base_pb2.TransportSocket(name=INTERNAL_UPSTREAM, typed_config=_packed(cfg))


def _state(key: str, fmt: str, factory: str = "") -> fs.FilterStateValue:
    v = fs.FilterStateValue(object_key=key, factory_key=factory, shared_with_upstream=fs.FilterStateValue.ONCE)
    v.format_string.text_format_source.inline_string = fmt
    return v


def _connect_terminate_hcm() -> hcm.HttpConnectionManager:
    m = hcm.HttpConnectionManager(stat_prefix=CONNECT_TERMINATE, codec_type=hcm.HttpConnectionManager.HTTP2)
    m.http2_protocol_options.allow_connect = True
    m.upgrade_configs.add(upgrade_type="CONNECT")
    m.stream_idle_timeout.SetInParent()  # 0: tunnels live as long as their connection
    vh = m.route_config.virtual_hosts.add(name="default", domains=["*"])
    route = vh.routes.add(name="connect", match=rc.RouteMatch(connect_matcher=rc.RouteMatch.ConnectMatcher()))
    route.route.cluster = MAIN_INTERNAL
    route.route.timeout.SetInParent()
    route.route.upgrade_configs.add(upgrade_type="CONNECT").connect_config.SetInParent()
    m.route_config.name = CONNECT_TERMINATE
    state = set_filter_state_pb2.Config(on_request_headers=[
        _state(f"{ORIGINAL_DST}.local_ip", "%REQ(:AUTHORITY)%"),
        _state(f"{ORIGINAL_DST}.remote_ip", "%DOWNSTREAM_REMOTE_ADDRESS%"),
        _state(PEER_PRINCIPAL, "%DOWNSTREAM_PEER_URI_SAN%", "envoy.string"),
    ])
    m.http_filters.add(name=SET_FILTER_STATE, typed_config=_packed(state))
    m.http_filters.add(name=names.ROUTER_FILTER, typed_config=_packed(router_pb2.Router()))
    return m


def connect_terminate(ips: list[str], port: int, trust_domain: str) -> listener_pb2.Listener:
    def addr(ip: str) -> address_pb2.Address:
        return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))

    lst = listener_pb2.Listener(name=CONNECT_TERMINATE, address=addr(ips[0]), traffic_direction=base_pb2.INBOUND)
    for ip in ips[1:]:
        lst.additional_addresses.add(address=addr(ip))
    chain = lst.filter_chains.add(name=CONNECT_TERMINATE)
    chain.transport_socket.CopyFrom(hbone_tls.downstream_socket(trust_domain))
    chain.filters.add(name=names.HCM_FILTER, typed_config=_packed(_connect_terminate_hcm()))
    return lst


def main_internal(chains: list[lc.FilterChain], matcher) -> listener_pb2.Listener:
    """`matcher`: the xds Matcher selecting a chain by destination IP and port (hbone.py)."""
    lst = listener_pb2.Listener(name=MAIN_INTERNAL, traffic_direction=base_pb2.INBOUND)
    lst.internal_listener.SetInParent()
    lst.listener_filters.append(original_dst_filter())
    lst.filter_chains.extend(chains)
    if chains:
        lst.filter_chain_matcher.CopyFrom(matcher)
    return lst


def connect_originate_listener() -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=CONNECT_ORIGINATE, traffic_direction=base_pb2.OUTBOUND)
    lst.internal_listener.SetInParent()
    lst.listener_filters.append(original_dst_filter())
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=CONNECT_ORIGINATE, cluster=CONNECT_ORIGINATE)
    proxy.tunneling_config.hostname = "%DOWNSTREAM_LOCAL_ADDRESS%"
    lst.filter_chains.add(name=CONNECT_ORIGINATE).filters.add(name=TCP_PROXY, typed_config=_packed(proxy))
    return lst


def internal_endpoint(listener: str, endpoint_id: str = "") -> ec.LbEndpoint:
    addr = address_pb2.Address(envoy_internal_address=address_pb2.EnvoyInternalAddress(
        server_listener_name=listener, endpoint_id=endpoint_id))
    return ec.LbEndpoint(endpoint=ec.Endpoint(address=addr))


def main_internal_cluster(connect_timeout: float) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=MAIN_INTERNAL, type=cluster_pb2.Cluster.STATIC,
                            connect_timeout=seconds_duration(connect_timeout))
    c.load_assignment.cluster_name = MAIN_INTERNAL
    c.load_assignment.endpoints.add().lb_endpoints.append(internal_endpoint(MAIN_INTERNAL))
    c.transport_socket.CopyFrom(internal_upstream())
    return c


def connect_originate_cluster(connect_timeout: float, upstream_port: int, trust_domain: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=CONNECT_ORIGINATE, type=cluster_pb2.Cluster.ORIGINAL_DST,
                            lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
                            connect_timeout=seconds_duration(connect_timeout))
    c.original_dst_lb_config.upstream_port_override.value = upstream_port
    opts = hpo.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions(allow_connect=True))
    c.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].Pack(opts)
    c.transport_socket.CopyFrom(hbone_tls.upstream_socket(trust_domain))
    return c
