"""DestinationRule unit tests: validation (Istio webhook rules + Envoy limits), lookup precedence across
namespaces and exportTo, the merge order top level < port level < subset, and route hash policies (golden
files under tests/golden/dr-* cover the full Envoy output)."""

from __future__ import annotations

import textwrap

import yaml

from testsupport.listener_routes import listener_route_config
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import translate
from istiod_lite.translate.destination_rules import DestinationRules, hash_policies, policy_for
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import resolve
from istiod_lite.xds import types

WP = ConfigKey("Gateway", "shop", "waypoint")
BASE = textwrap.dedent("""
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop, labels: {istio.io/use-waypoint: waypoint}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: team, labels: {istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: shop}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: waypoint, namespace: shop}
    spec:
      gatewayClassName: istio-waypoint
      listeners: [{name: http, port: 8080, protocol: HTTP}]
    ---
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: api, namespace: shop}
    spec:
      hosts: [api.shop.example]
      resolution: STATIC
      location: MESH_INTERNAL
      ports: [{number: 8080, name: http, protocol: HTTP}]
      endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
""")


def _dr(name: str, ns: str, spec: dict) -> str:
    return "---\n" + yaml.safe_dump({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                     "metadata": {"name": name, "namespace": ns}, "spec": spec})


def _errors(spec: dict) -> list[str]:
    snap = snapshot_from_text(BASE + _dr("bad", "shop", spec))
    return [f"{i.path}: {i.message}" for i in snap.issues if i.is_error and i.key and i.key.name == "bad"]


def test_validation_rejects_what_istio_or_envoy_would() -> None:
    host = {"host": "api.shop.example"}
    assert any("prime" in e for e in _errors({**host, "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x", "maglev": {"tableSize": 1000}}}}}))
    assert any("ttl required" in e for e in _errors({**host, "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpCookie": {"name": "c"}}}}}))
    assert any("client certificate required" in e for e in _errors({**host, "trafficPolicy": {"tls": {
        "mode": "MUTUAL", "privateKey": "/k.pem"}}}))
    assert any("!= 100" in e for e in _errors({**host, "trafficPolicy": {"loadBalancer": {"localityLbSetting": {
        "distribute": [{"from": "a/*", "to": {"a/b": 60, "c/*": 30}}]}}}}))
    assert any("exceeds" in e for e in _errors({**host, "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "useSourceIp": True, "ringHash": {"minimumRingSize": 10_000_000}}}}}))
    assert any("'~'" in e for e in _errors({**host, "exportTo": ["~", "shop"]}))
    assert any("at least 1ms" in e or "duration" in e for e in _errors({**host, "subsets": [{
        "name": "v1", "labels": {"v": "1"}, "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "0s"}}}}]}))
    assert any("at least one field" in e for e in _errors({**host, "trafficPolicy": {"portLevelSettings": [
        {"port": {"number": 8080}}]}}))
    # control: a rich but valid DR has no errors (and is kept)
    assert _errors({**host, "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpCookie": {"name": "c", "ttl": "0s"}, "maglev": {"tableSize": 65537}}},
        "tls": {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem"}}}) == []


def _policy(extra: str, subset: str | None = None) -> dict:
    snap = snapshot_from_text(BASE + extra)
    wp, _ = resolve(snap, WP, TranslateOptions())
    assert wp is not None
    svc = next(s for s in wp.services if s.hostname == "api.shop.example")
    return policy_for(wp, svc, 8080, subset)


def test_lookup_prefers_the_waypoint_namespace_then_specific_hosts_and_honours_export_to() -> None:
    in_team = _dr("team-dr", "team", {"host": "api.shop.example", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    wild = _dr("wild", "shop", {"host": "*.example", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}})
    exact = _dr("exact", "shop", {"host": "api.shop.example",
                                  "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}})
    assert _policy(in_team + wild)["loadBalancer"]["simple"] == "ROUND_ROBIN"  # waypoint ns first, even a wildcard
    assert _policy(in_team + wild + exact)["loadBalancer"]["simple"] == "LEAST_REQUEST"  # then most specific
    assert _policy(in_team)["loadBalancer"]["simple"] == "RANDOM"  # another namespace's DR, exported to all
    hidden = _dr("team-dr", "team", {"host": "api.shop.example", "exportTo": ["."],
                                     "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    assert _policy(hidden) == {}  # not exported to the waypoint's namespace
    selector = _dr("sel", "shop", {"host": "api.shop.example", "workloadSelector": {"matchLabels": {"a": "b"}},
                                   "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    assert _policy(selector) == {}


def test_subset_with_port_level_settings_replaces_all_components() -> None:
    dr = _dr("api", "shop", {"host": "api.shop.example", "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"}, "outlierDetection": {"consecutive5xxErrors": 3}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 8080}, "connectionPool": {"tcp": {"maxConnections": 2}}}]}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}]})
    assert _policy(dr, "v1") == {"connectionPool": {"tcp": {"maxConnections": 2}}}
    assert _policy(dr, "v2") == {"loadBalancer": {"simple": "ROUND_ROBIN"}, "outlierDetection": {"consecutive5xxErrors": 3}}


def test_hash_policies_follow_the_merged_policy_and_reach_the_default_route() -> None:
    dr = _dr("api", "shop", {"host": "api.shop.example", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": "10s", "path": "/"}}}}},
            {"name": "plain", "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]})
    snap = snapshot_from_text(BASE + dr)
    wp, _ = resolve(snap, WP, TranslateOptions())
    svc = wp.services[0]
    DestinationRules(wp)
    assert [h.header.header_name for h in hash_policies(wp, svc, 8080, None)] == ["x-user"]
    cookie = hash_policies(wp, svc, 8080, "v1")[0].cookie
    assert (cookie.name, cookie.path, cookie.ttl.seconds) == ("s", "/", 10)
    assert hash_policies(wp, svc, 8080, "plain") == []  # the subset's load balancer replaces consistent hash
    route = listener_route_config(translate(snap, WP).resources, 8080)
    action = route.virtual_hosts[0].routes[0].route
    assert [h.header.header_name for h in action.hash_policy] == ["x-user"]
    assert not any(p.name.endswith("previous_hosts") for p in action.retry_policy.retry_host_predicate)
