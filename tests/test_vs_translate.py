"""Unit tests of the VirtualService translation rules (golden files cover full outputs): visibility
(gateways/exportTo/namespace), merge order, header operations, fault/mirror percentages, redirect ports,
retry host predicate with consistent hashing, TCP service choice."""

from __future__ import annotations

import textwrap

import yaml
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from testsupport.listener_routes import listener_route_config
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import TranslateOptions, translate
from istiod_lite.translate.route_headers import ADD, SET, header_ops
from istiod_lite.translate.retries import retry_policy
from istiod_lite.xds import types

WP = ConfigKey("Gateway", "app", "waypoint")
BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: app}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: db, port: 5432, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: app}
spec:
  hosts: [web.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: app}
spec:
  hosts: [db.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.2}]
"""


def _vs(name: str, spec: dict, ns: str = "app", created: str = "") -> str:
    md = {"name": name, "namespace": ns, **({"creationTimestamp": created} if created else {})}
    return "---\n" + yaml.safe_dump({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                     "metadata": md, "spec": spec})


def _run(*docs: str, extra: str = ""):
    snap = snapshot_from_text(textwrap.dedent(BASE) + extra + "".join(docs))
    assert not [i for i in snap.issues if i.is_error], snap.issues
    return translate(snap, WP, TranslateOptions())


def _routes(result) -> list[rc.Route]:
    cfg = listener_route_config(result.resources, 80)
    vh = next(v for v in cfg.virtual_hosts if v.name.startswith("web.example.com"))
    return list(vh.routes)


def _direct(status: int) -> dict:
    return {"hosts": ["web.example.com"], "http": [{"directResponse": {"status": status}}]}


def test_gateways_exportto_and_namespace_decide_visibility() -> None:
    result = _run(_vs("ingress-only", {**_direct(401), "gateways": ["istio-system/ingress"]}, created="2020"),
                  _vs("hidden", {**_direct(402), "exportTo": ["other"]}, created="2021"),
                  _vs("by-name", {**_direct(403), "gateways": ["app/waypoint"]}, created="2022"))
    routes = _routes(result)
    assert [r.direct_response.status for r in routes] == [403]
    reasons = {(i.key.name, i.path): i.reason for i in result.issues if i.key and i.key.kind == "VirtualService"}
    assert reasons == {("ingress-only", "spec.gateways"): "NotApplied", ("hidden", "spec.exportTo"): "NotApplied"}
    assert [r.direct_response.status for r in _routes(_run(_vs("dot", {**_direct(404), "exportTo": ["."]})))] == [404]


def test_several_virtual_services_merge_oldest_first_and_shadowing_is_reported() -> None:
    newer = {"hosts": ["web.example.com"], "http": [{"match": [{"uri": {"prefix": "/b"}}],
                                                      "directResponse": {"status": 202}}]}
    older = {"hosts": ["*.example.com"], "http": [{"match": [{"uri": {"prefix": "/a"}}],
                                                    "directResponse": {"status": 201}},
                                                   {"directResponse": {"status": 200}}]}
    result = _run(_vs("newer", newer, created="2024-02-01T00:00:00Z"),
                  _vs("older", older, created="2024-01-01T00:00:00Z"))
    assert [r.direct_response.status for r in _routes(result)] == [201, 200]
    shadowed = [i for i in result.issues if i.reason == "Unreachable"]
    assert [(i.key.name, i.path) for i in shadowed] == [("newer", "spec.http[0]")]
    assert "older VirtualService app/older" in shadowed[0].message


def test_header_ops_sort_set_before_add_and_take_authority() -> None:
    ops = header_ops({"request": {"set": {"b": "2", "a": "1", ":authority": "x.internal"}, "add": {"c": "3"},
                                  "remove": ["d", ":path"]}, "response": {"add": {"e": "5"}}})
    assert [(h.header.key, h.append_action) for h in ops.request_add] == [("a", SET), ("b", SET), ("c", ADD)]
    assert ops.authority == "x.internal" and ops.request_remove == ["d"]
    assert [h.header.key for h in ops.response_add] == ["e"]


def test_fault_percentages_follow_istio() -> None:
    spec = {"hosts": ["web.example.com"], "http": [
        {"match": [{"uri": {"prefix": "/p"}}], "route": [{"destination": {"host": "web.example.com"}}],
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 12.5}}}},
        {"route": [{"destination": {"host": "web.example.com"}}], "fault": {"delay": {"fixedDelay": "1s"}}}]}
    result = _run(_vs("f", spec))
    first, second = _routes(result)
    f1, f2 = fault_pb2.HTTPFault(), fault_pb2.HTTPFault()
    first.typed_per_filter_config["envoy.filters.http.fault"].Unpack(f1)
    second.typed_per_filter_config["envoy.filters.http.fault"].Unpack(f2)
    assert (f1.abort.http_status, f1.abort.percentage.numerator, f1.abort.percentage.denominator) == (503, 125000, 2)
    assert f2.delay.percentage.numerator == 0  # Istio: no percentage -> nothing delayed, and we say so
    assert any(i.reason == "NoEffect" and i.path == "spec.http[1].fault.delay.percentage" for i in result.issues)


def test_mirror_zero_percent_is_left_out_and_default_is_100() -> None:
    spec = {"hosts": ["web.example.com"], "http": [{
        "route": [{"destination": {"host": "web.example.com"}}],
        "mirrors": [{"destination": {"host": "db.example.com"}},
                    {"destination": {"host": "web.example.com"}, "percentage": {"value": 0}}]}]}
    (route,) = _routes(_run(_vs("m", spec)))
    (policy,) = route.route.request_mirror_policies
    assert policy.cluster == "inbound-vip|5432|http|db.example.com"
    assert (policy.runtime_fraction.default_value.numerator, policy.trace_sampled.value) == (100, False)


def test_redirect_ports_and_unsupported_code() -> None:
    spec = {"hosts": ["web.example.com"], "http": [
        {"match": [{"uri": {"prefix": "/a"}}], "redirect": {"authority": "x", "derivePort": "FROM_REQUEST_PORT"}},
        {"match": [{"uri": {"prefix": "/b"}}], "redirect": {"scheme": "https", "port": 443}},
        {"match": [{"uri": {"prefix": "/c"}}], "redirect": {"uri": "/d", "redirectCode": 399}}]}
    result = _run(_vs("r", spec))
    a, b, c = _routes(result)
    assert a.redirect.port_redirect == 0  # the listener port is 80: elided for http
    assert b.redirect.scheme_redirect == "https" and b.redirect.port_redirect == 0
    assert c.direct_response.status == 500
    assert any(i.path == "spec.http[2].redirect.redirectCode" and i.is_error for i in result.issues)


def test_consistent_hash_drops_the_previous_hosts_predicate() -> None:
    assert len(retry_policy(None, TranslateOptions()).retry_host_predicate) == 1
    assert len(retry_policy(None, TranslateOptions(), consistent_hash=True).retry_host_predicate) == 0
    assert retry_policy({"attempts": 0}, TranslateOptions()) is None


def test_tcp_listener_serves_the_service_on_its_port_with_weighted_routes() -> None:
    spec = {"hosts": ["db.example.com"], "tcp": [
        {"match": [{"port": 9999}], "route": [{"destination": {"host": "web.example.com"}}]},
        {"route": [{"destination": {"host": "db.example.com"}, "weight": 3},
                   {"destination": {"host": "web.example.com", "port": {"number": 80}}, "weight": 1}]}]}
    result = _run(_vs("db", spec))
    lst = result.resources.of_type(types.LISTENER)["tcp-5432"]
    proxy = tcp_proxy_pb2.TcpProxy()
    lst.filter_chains[0].filters[0].typed_config.Unpack(proxy)
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        ("inbound-vip|5432|tcp|db.example.com", 3), ("inbound-vip|80|tcp|web.example.com", 1)]
    assert "inbound-vip|5432|tcp|db.example.com" in result.resources.of_type(types.CLUSTER)
