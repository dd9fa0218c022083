"""translate/hbone.py without Envoy: when the HBONE layout is produced, what the options change, where
identity policies look, and the app-side Secrets (mesh_identity.py)."""

from __future__ import annotations

import datetime as dt

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from testsupport.listener_routes import listener_route_config
from istiod_lite.mesh_identity import WaypointSecrets
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.settings import Settings
from istiod_lite.translate import TranslateOptions, translate
from istiod_lite.xds import types
from testsupport.manifests import BOTH_LISTENERS, HBONE_LISTENERS, HTTP_LISTENERS, hbone_echo_input

WP = ConfigKey("Gateway", "default", "waypoint")


_input = hbone_echo_input
HBONE, HTTP, BOTH = HBONE_LISTENERS, HTTP_LISTENERS, BOTH_LISTENERS


def _run(text: str, options: TranslateOptions = TranslateOptions()):
    return translate(snapshot_from_text(text), WP, options)


def test_http_only_waypoint_has_no_hbone_layout() -> None:
    result = _run(_input(HTTP))
    assert sorted(result.resources.messages(types.LISTENER)) == ["http-8080"]
    assert sorted(result.resources.messages(types.CLUSTER)) == ["inbound-vip|80|http|echo.example.com"]
    cla = result.resources.messages(types.ENDPOINT)["inbound-vip|80|http|echo.example.com"]
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "10.1.0.5"


def test_hbone_listener_is_served_with_options() -> None:
    result = _run(_input(HBONE), TranslateOptions(trust_domain="mesh.example", hbone_upstream_port=25008))
    assert not [i for i in result.issues if i.reason in ("NotYetServed", "NoHTTPListener")]
    listeners = result.resources.messages(types.LISTENER)
    assert sorted(listeners) == ["connect_originate", "connect_terminate", "main_internal"]
    ct: listener_pb2.Listener = listeners["connect_terminate"]
    assert ct.address.socket_address.port_value == 15008
    tls = tls_pb2.DownstreamTlsContext()
    ct.filter_chains[0].transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value
    san = tls.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert san[0].matcher.prefix == "spiffe://mesh.example/"
    co = result.resources.messages(types.CLUSTER)["connect_originate"]
    assert co.original_dst_lb_config.upstream_port_override.value == 25008
    vip = result.resources.messages(types.CLUSTER)["inbound-vip|80|http|echo.example.com"]
    assert vip.transport_socket.name == "envoy.transport_sockets.internal_upstream"
    ep = result.resources.messages(types.ENDPOINT)["inbound-vip|80|http|echo.example.com"].endpoints[0].lb_endpoints[0]
    assert ep.endpoint.address.envoy_internal_address.endpoint_id == "10.1.0.5:80"
    chain = listeners["main_internal"].filter_chains[0]
    manager = hcm.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    assert chain.name == manager.rds.route_config_name == "inbound-vip|80|http|echo.example.com"


def test_endpoints_outside_the_mesh_stay_plain() -> None:
    result = _run(_input(HBONE, ns_labels="istio.io/dataplane-mode: none"))
    vip = result.resources.messages(types.CLUSTER)["inbound-vip|80|http|echo.example.com"]
    assert not vip.HasField("transport_socket")
    cla = result.resources.messages(types.ENDPOINT)["inbound-vip|80|http|echo.example.com"]
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.HasField("socket_address")


def _principals(route_config) -> str:
    return json_format.MessageToJson(route_config)


def test_identity_policies_match_filter_state_on_hbone_and_tls_peer_on_http() -> None:
    result = _run(_input(BOTH))
    routes = result.resources.messages(types.ROUTE)
    hbone_route = _principals(routes["inbound-vip|80|http|echo.example.com"])
    assert "io.istio.peer_principal" in hbone_route and "spiffe://cluster.local/ns/default/sa/client" in hbone_route
    assert "principalName" not in hbone_route
    plain = _principals(listener_route_config(result.resources, 8080))
    assert "principalName" in plain and "io.istio.peer_principal" not in plain
    hbone_only = _run(_input(HBONE))
    assert not [i for i in hbone_only.issues if i.reason == "NoPeerIdentity"]


def test_secrets_only_for_hbone_waypoints_with_their_identity() -> None:
    secrets = WaypointSecrets(Settings(trust_domain="cluster.local", cert_lifetime=3600))
    snap = snapshot_from_text(_input(HBONE, annotations="{istiod-lite.io/service-account: wp-sa}"))
    gw = snap.gateway(WP)
    served = secrets.add(gw, translate(snap, WP).resources.resources)
    assert sorted(served[types.SECRET]) == ["ROOTCA", "default"]
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(served[types.SECRET]["default"].tls_certificate.certificate_chain.inline_bytes)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/default/sa/wp-sa"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(hours=1, minutes=1)
    plain = snapshot_from_text(_input(HTTP))
    assert types.SECRET not in secrets.add(plain.gateway(WP), translate(plain, WP).resources.resources)
