"""Listeners: one per HTTP listener port of the waypoint Gateway (``http-<port>``), bound to the Gateway's first
``spec.addresses`` IP (others as additional addresses) or options.listen_address. The HCM fetches its routes by
RDS (``http.<port>``, ADS) and carries the fixed filter chain of filters.py, so policy changes never touch the
listener (a listener change drains connections).

Routes: Scoped RDS (route_scopes.py; `scoped`): an early header mutation sets the listener-port header (scope key
fragment 1, overwriting any client value), ``:authority`` without port is fragment 2; a listener serving a
wildcard host uses RDS ``http.<port>`` instead."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2
from google.protobuf import any_pb2

from istiod_lite.model.gateway import GatewayListener
from istiod_lite.translate import filters, names
from istiod_lite.translate.clusters import ads_config_source
from istiod_lite.translate.waypoint import Waypoint


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _scoped_routes(m: hcm.HttpConnectionManager, port: int) -> None:
    mutation = header_mutation_pb2.HeaderMutation()
    add = mutation.mutations.add().append
    add.header.key, add.header.value = names.LISTENER_PORT_HEADER, str(port)
    add.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    m.early_header_mutation_extensions.add(name=names.EARLY_HEADER_MUTATION).typed_config.Pack(mutation)
    sr = m.scoped_routes
    sr.name = names.route_config_name(port)
    listener_port = sr.scope_key_builder.fragments.add().header_value_extractor
    listener_port.name, listener_port.element_separator, listener_port.index = names.LISTENER_PORT_HEADER, ",", 0
    host = sr.scope_key_builder.fragments.add().header_value_extractor
    host.name, host.element_separator, host.index = ":authority", ":", 0
    sr.rds_config_source.CopyFrom(ads_config_source())
    sr.scoped_rds.scoped_rds_config_source.CopyFrom(ads_config_source())


def connection_manager(port: int, scoped: bool = True) -> hcm.HttpConnectionManager:
    m = hcm.HttpConnectionManager(stat_prefix=names.listener_name(port), codec_type=hcm.HttpConnectionManager.AUTO)
    if scoped:
        _scoped_routes(m, port)
    else:
        m.rds.config_source.CopyFrom(ads_config_source())
        m.rds.route_config_name = names.route_config_name(port)
    m.http_filters.extend(filters.http_filters())
    # Istio's default path normalization (MeshConfig pathNormalization BASE): RFC 3986 normalization before
    # routing and RBAC, so `/public/../admin` cannot bypass a path rule.
    m.normalize_path.value = True
    return m


def build_listener(wp: Waypoint, gl: GatewayListener, scoped: bool = True) -> listener_pb2.Listener:
    ips = list(wp.gateway.addresses) or [wp.options.listen_address]
    lst = listener_pb2.Listener(name=names.listener_name(gl.port), address=_address(ips[0], gl.port),
                                traffic_direction=base_pb2.INBOUND)
    for ip in ips[1:]:
        lst.additional_addresses.add(address=_address(ip, gl.port))
    packed = any_pb2.Any()
    packed.Pack(connection_manager(gl.port, scoped))
    chain = listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=names.HCM_FILTER, typed_config=packed)])
    lst.filter_chains.append(chain)
    return lst
