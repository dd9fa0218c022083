"""Unit tests of translate's small rules: served port choice, retryOn parsing, DestinationRule precedence,
domain collision resolution, listener port conflicts (golden files cover the full output)."""

from __future__ import annotations

from testsupport.listener_routes import listener_route_config
from istiod_lite.model.gateway import Gateway, GatewayListener
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, ObjectMeta
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import TranslateOptions, translate
from istiod_lite.translate.destination_rules import MergedRule, Subset, effective_policy
from istiod_lite.translate.retries import parse_retry_on
from istiod_lite.translate.waypoint import served_port
from istiod_lite.xds import types

WP = ConfigKey("Gateway", "ns", "wp")


def _svc(name: str, ns: str, ports: tuple[ServicePort, ...], waypoint: ConfigKey | None = WP) -> Service:
    return Service(ObjectMeta(ConfigKey("Service", ns, name)), f"{name}.{ns}.svc.cluster.local", ports,
                   waypoint=waypoint)


def _gateway(*listeners: GatewayListener) -> Gateway:
    return Gateway(ObjectMeta(WP), "istio-waypoint", listeners)


def test_served_port_prefers_listener_port_then_first_http_port() -> None:
    svc = _svc("a", "ns", (ServicePort(5432, "tcp", "TCP"), ServicePort(8080, "http", "HTTP"),
                           ServicePort(9090, "grpc", "GRPC")))
    assert served_port(svc, 9090).number == 9090
    assert served_port(svc, 80).number == 8080  # first HTTP port, TCP port skipped
    assert served_port(svc, 5432).number == 8080  # a TCP port equal to the listener port is not served
    assert served_port(_svc("b", "ns", (ServicePort(5432, "tcp", "TCP"),)), 80) is None


def test_retry_on_numeric_codes_become_retriable_status_codes() -> None:
    assert parse_retry_on("5xx,503, 429") == ("5xx,retriable-status-codes", [503, 429])
    assert parse_retry_on("retriable-status-codes,502") == ("retriable-status-codes", [502])
    assert parse_retry_on("gateway-error") == ("gateway-error", [])
    assert parse_retry_on("999") == ("999", [])  # not an HTTP status code: kept as a policy name


def test_port_level_settings_replace_and_subset_overrides_per_component() -> None:
    key = ConfigKey("DestinationRule", "ns", "dr")
    policy = {"connectionPool": {"tcp": {"maxConnections": 1}}, "outlierDetection": {"interval": "1s"},
              "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}}]}
    subset = Subset("v1", (("v", "1"),), {"outlierDetection": {"interval": "9s"}}, key, 0)
    rule = MergedRule("h", policy, (subset,), (key,), key)
    assert effective_policy(rule, 8080)["connectionPool"] == {"tcp": {"maxConnections": 1}}
    at_80 = effective_policy(rule, 80)
    assert "connectionPool" not in at_80 and "outlierDetection" not in at_80  # replaced, not inherited
    assert at_80["loadBalancer"] == {"simple": "RANDOM"}
    sub = effective_policy(rule, 8080, subset)
    assert sub["outlierDetection"] == {"interval": "9s"}
    assert sub["connectionPool"] == {"tcp": {"maxConnections": 1}}


def test_short_name_collision_goes_to_first_namespace_and_is_reported() -> None:
    http = (ServicePort(80, "http", "HTTP"),)
    snap = ConfigSnapshot(gateways=(_gateway(GatewayListener("http", 80, "HTTP")),),
                          services=(_svc("web", "zeta", http), _svc("web", "alpha", http)))
    result = translate(snap, WP)
    rc = listener_route_config(result.resources, 80)
    domains = {vh.name: list(vh.domains) for vh in rc.virtual_hosts}
    assert "web" in domains["web.alpha.svc.cluster.local:80"]
    assert "web" not in domains["web.zeta.svc.cluster.local:80"]
    assert "web.zeta" in domains["web.zeta.svc.cluster.local:80"]
    all_domains = [d for ds in domains.values() for d in ds]
    assert len(all_domains) == len(set(all_domains))
    assert [i.reason for i in result.issues if i.key == ConfigKey("Service", "zeta", "web")] == ["DomainConflict"]


def test_duplicate_listener_port_reported_and_missing_waypoint_is_empty() -> None:
    http = (ServicePort(80, "http", "HTTP"),)
    snap = ConfigSnapshot(gateways=(_gateway(GatewayListener("a", 80, "HTTP"), GatewayListener("b", 80, "HTTP")),),
                          services=(_svc("web", "ns", http),))
    result = translate(snap, WP, TranslateOptions(listen_address="127.0.0.1"))
    assert list(result.resources.of_type(types.LISTENER)) == ["http-80"]
    lst = result.resources.of_type(types.LISTENER)["http-80"]
    assert lst.address.socket_address.address == "127.0.0.1"
    assert any(i.reason == "PortConflict" and i.path == "spec.listeners[1].port" for i in result.issues)
    missing = translate(snap, ConfigKey("Gateway", "ns", "nope"))
    assert all(not missing.resources.of_type(t) for t in types.PUSH_ORDER)
    assert [i.reason for i in missing.issues] == ["WaypointNotFound"]


def test_vs_in_unrelated_namespace_or_other_gateway_is_ignored() -> None:
    http = (ServicePort(80, "http", "HTTP"),)
    route = [{"route": [{"destination": {"host": "web.ns.svc.cluster.local"}}], "timeout": "3s"}]
    vss = (IstioConfig(ObjectMeta(ConfigKey("VirtualService", "other", "x")),
                       {"hosts": ["web.ns.svc.cluster.local"], "http": route}),
           IstioConfig(ObjectMeta(ConfigKey("VirtualService", "ns", "gw-only")),
                       {"hosts": ["web"], "gateways": ["ingress"], "http": route}))
    snap = ConfigSnapshot(gateways=(_gateway(GatewayListener("http", 80, "HTTP")),),
                          services=(_svc("web", "ns", http),), virtual_services=vss)
    rc = listener_route_config(translate(snap, WP).resources, 80)
    (route0,) = rc.virtual_hosts[0].routes
    assert route0.name == "default" and route0.route.timeout.seconds == 0
