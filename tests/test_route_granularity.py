"""Route granularity (route_scopes.py): Scoped RDS keyed by (listener port, Host without port), a RouteConfiguration
per service; a listener serving a wildcard host keeps one RouteConfiguration. Translation checks, then real HTTP
through the real Envoy over Delta and SotW: Host with and without port, short names, IPv4 and IPv6 VIPs (two IPv6
VIPs share the scope key ``[2001``), unknown host -> 404, a spoofed listener-port header changes nothing and never
reaches the backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from testsupport import manifests, stack as stacks
from testsupport.http import request
from testsupport.procs import wait_until

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import translate
from istiod_lite.xds import types

WP = ConfigKey("Gateway", "default", "waypoint")
V6A, V6B = "2001:db8::a", "2001:db8::b"


def _snapshot(port: int, extra: list[dict]) -> object:
    store = ConfigStore()
    docs = [manifests.namespace(), manifests.waypoint_gateway(port, hbone_port=port + 1)]
    docs += manifests.kube_service("reviews", {"v1": 1}) + extra
    for d in docs:
        store.upsert("t", d)
    return store.snapshot()


def _hcm(result, port: int) -> hcm_pb2.HttpConnectionManager:
    lst = result.resources.messages(types.LISTENER)[f"http-{port}"]
    m = hcm_pb2.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(m)
    return m


def test_each_service_gets_its_own_route_configuration_and_a_scope_per_host_form() -> None:
    result = translate(_snapshot(8080, manifests.kube_service("ratings", {"v1": 2}, cluster_ip="10.96.0.11")), WP)
    m = _hcm(result, 8080)
    assert m.WhichOneof("route_specifier") == "scoped_routes"
    assert [f.header_value_extractor.name for f in m.scoped_routes.scope_key_builder.fragments] == \
        ["x-istiod-lite-listener-port", ":authority"]
    routes = {n: r for n, r in result.resources.messages(types.ROUTE).items() if n.startswith("http.")}  # not HBONE
    assert sorted(routes) == ["http.8080/ratings.default.svc.cluster.local", "http.8080/reviews.default.svc.cluster.local"]
    assert all(len(r.virtual_hosts) == 1 for r in routes.values())
    scopes = result.resources.messages(types.SCOPED_ROUTE)
    reviews = {n: s.route_configuration_name for n, s in scopes.items() if "reviews" in s.route_configuration_name}
    assert sorted(n.split("|", 1)[1] for n in reviews) == \
        ["10.96.0.10", "reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"]
    assert [f.string_key for f in scopes["http.8080|reviews"].key.fragments] == ["8080", "reviews"]


def test_ipv6_vips_sharing_a_key_share_one_route_configuration() -> None:
    extra = manifests.kube_service("six-a", {"v1": 3}, cluster_ip=V6A) + \
        manifests.kube_service("six-b", {"v1": 4}, cluster_ip=V6B)
    result = translate(_snapshot(8080, extra), WP)
    scopes = result.resources.messages(types.SCOPED_ROUTE)
    shared = result.resources.messages(types.ROUTE)["http.8080/key/[2001"]
    assert scopes["http.8080|[2001"].route_configuration_name == "http.8080/key/[2001"
    assert [v.name for v in shared.virtual_hosts] == ["six-a.default.svc.cluster.local:9080",
                                                      "six-b.default.svc.cluster.local:9080"]
    assert scopes["http.8080|six-a"].route_configuration_name == "http.8080/six-a.default.svc.cluster.local"


def test_a_wildcard_host_keeps_one_route_configuration_for_its_listener() -> None:
    se = manifests.service_entry("*.wild.example", [(5, {})], name="wild")
    result = translate(_snapshot(8080, [se]), WP)
    m = _hcm(result, 8080)
    assert m.WhichOneof("route_specifier") == "rds" and m.rds.route_config_name == "http.8080"
    assert [n for n in result.resources.messages(types.ROUTE) if n.startswith("http.")] == ["http.8080"]
    assert not result.resources.messages(types.SCOPED_ROUTE)
    assert "*.wild.example" in [d for v in result.resources.messages(types.ROUTE)["http.8080"].virtual_hosts
                                for d in v.domains]


@pytest.fixture(scope="module", params=["delta", "sotw"])
def six_stack(request, tmp_path_factory):
    workdir: Path = tmp_path_factory.mktemp(f"granularity-{request.param}")
    f = stacks.Factories(workdir)
    try:
        st = stacks.start_stack(f, workdir, delta=request.param == "delta")
        six = f.backends.many("six-a", "six-b")
        st.write("six.yaml", manifests.kube_service("six-a", {"v1": six["six-a"].port}, cluster_ip=V6A)
                 + manifests.kube_service("six-b", {"v1": six["six-b"].port}, cluster_ip=V6B))
        stacks.wait_routed(st, f"[{V6B}]:9080")
        yield st
    finally:
        f.stop_all()


def test_hosts_with_and_without_port_vips_and_unknown_hosts_route_as_before(six_stack) -> None:
    port = six_stack.listener_port
    for host in ("reviews", "reviews:9080", "reviews.default.svc.cluster.local:9080", "10.96.0.10",
                 "10.96.0.10:9080"):
        assert request(port, host=host).served_by in ("reviews-v1", "reviews-v2"), host
    assert request(port, host=manifests.RATINGS_HOST).served_by == "ratings"
    for host, backend in ((f"[{V6A}]", "six-a"), (f"[{V6A}]:9080", "six-a"), (f"[{V6B}]", "six-b"),
                          ("six-b.default", "six-b")):
        assert request(port, host=host).served_by == backend, host
    for host in ("nobody.example.org", "[2001:db8::c]", "reviews:1234x"):
        resp = request(port, host=host)
        assert resp.status == 404 and resp.served_by is None, host


def test_a_client_listener_port_header_is_overwritten_and_never_forwarded(six_stack) -> None:
    port = six_stack.listener_port
    resp = request(port, host="reviews", headers={"x-istiod-lite-listener-port": "1"})
    assert resp.status == 200 and resp.served_by in ("reviews-v1", "reviews-v2")
    assert "x-istiod-lite-listener-port" not in {k.lower() for k in resp.json()["headers"]}


def test_a_route_change_of_one_service_is_applied(six_stack) -> None:
    six_stack.write("six-vs.yaml", [{
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "six-a", "namespace": "default"},
        "spec": {"hosts": ["six-a"], "http": [{"directResponse": {"status": 418}}]}}])
    wait_until(lambda: request(six_stack.listener_port, host=f"[{V6A}]").status == 418, 30,
               message=six_stack.diagnostics)
    assert request(six_stack.listener_port, host=f"[{V6B}]").served_by == "six-b"
    assert request(six_stack.listener_port, host="six-a.default").status == 418
