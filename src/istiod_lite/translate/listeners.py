"""Listeners: one per HTTP listener port of the waypoint Gateway (``http-<port>``), bound to the Gateway's first
``spec.addresses`` IP (others as additional addresses) or options.listen_address. The HCM fetches its routes by
RDS (``http.<port>``, ADS) and carries the fixed filter chain of filters.py, so policy changes never touch the
listener (a listener change drains connections)."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from istiod_lite.model.gateway import GatewayListener
from istiod_lite.translate import filters, names
from istiod_lite.translate.clusters import ads_config_source
from istiod_lite.translate.waypoint import Waypoint


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def connection_manager(port: int) -> hcm.HttpConnectionManager:
    m = hcm.HttpConnectionManager(stat_prefix=names.listener_name(port), codec_type=hcm.HttpConnectionManager.AUTO)
    m.rds.config_source.CopyFrom(ads_config_source())
    m.rds.route_config_name = names.route_config_name(port)
    m.http_filters.extend(filters.http_filters())
    # Istio's default path normalization (MeshConfig pathNormalization BASE): RFC 3986 normalization before
    # routing and RBAC, so `/public/../admin` cannot bypass a path rule.
    m.normalize_path.value = True
    return m


def build_listener(wp: Waypoint, gl: GatewayListener) -> listener_pb2.Listener:
    ips = list(wp.gateway.addresses) or [wp.options.listen_address]
    lst = listener_pb2.Listener(name=names.listener_name(gl.port), address=_address(ips[0], gl.port),
                                traffic_direction=base_pb2.INBOUND)
    for ip in ips[1:]:
        lst.additional_addresses.add(address=_address(ip, gl.port))
    packed = any_pb2.Any()
    packed.Pack(connection_manager(gl.port))
    chain = listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=names.HCM_FILTER, typed_config=packed)])
    lst.filter_chains.append(chain)
    return lst
