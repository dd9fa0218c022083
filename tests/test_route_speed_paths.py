"""The one-pass route paths give what the general paths give, and report nothing when they decline: the usual
rule's action (route_action.plain_tail vs route_tail, destinations.own_destinations vs
resolve_route_destinations), the usual VirtualService's routes (routes._plain_routes vs _vs_routes), a service's
own RouteConfiguration and the scopes built in one pass (route_scopes.own_config / ScopePlan.scopes_and_sources
vs with_vhost_bytes / scopes + scope_sources), and policy attachment with attachment_issues' note of simple
policies (authz_attach.attached with and without it)."""

from __future__ import annotations

import copy

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import authz_attach, destinations, names, route_action, route_scopes, routes
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import resolve
from testsupport.manifests import SHOP_WAYPOINT_HEADER

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")
_POLICIES = {
    "plain": "{connectionPool: {tcp: {maxConnections: 10}}}",
    "hashed": "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
    "porthashed": "{portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]}",
}


def _mesh() -> str:
    docs = []
    for i, (name, policy) in enumerate(_POLICIES.items()):
        docs.append(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}, {{number: 9090, name: http2, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.{i + 1}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: shop}}
spec:
  host: {name}.shop.example
  trafficPolicy: {policy}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}, trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true}}}}}}}}
  - {{name: v3, labels: {{version: v3}}, trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 5}}}}}}}}
""")
    docs.append("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: nodr, namespace: shop}
spec:
  hosts: [nodr.shop.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
""")
    return SHOP_WAYPOINT_HEADER + "---\n" + "---\n".join(docs)


def _rules(host: str) -> list[dict]:
    def d(**kw):
        return {"host": host, **kw}
    return [
        {"route": [{"destination": d(subset="v1"), "weight": 90}, {"destination": d(subset="v3"), "weight": 10}]},
        {"route": [{"destination": d(subset="v1"), "weight": 100}, {"destination": d(subset="v3"), "weight": 0}]},
        {"route": [{"destination": d(subset="v1"), "weight": "30"}, {"destination": d(), "weight": 70}]},
        {"route": [{"destination": d(subset="v1"), "weight": 0}, {"destination": d(), "weight": 0}]},  # 503
        {"route": [{"destination": d()}], "name": "one"},
        {"route": [{"destination": d(subset="v1")}], "name": 7},
        {"route": [{"destination": d(subset="v2")}]},  # consistent hash on the subset
        {"route": [{"destination": d(subset="v1"), "weight": 50}, {"destination": d(subset="v2"), "weight": 50}]},
        {"route": [{"destination": d(subset="nope")}]},  # SubsetNotFound
        {"route": [{"destination": d(subset=1)}]},  # not a string: SubsetNotFound
        {"route": [{"destination": d(port={"number": 9090})}]},
        {"route": [{"destination": d(), "headers": {"request": {"set": {"x-a": "1"}}}}]},
        {"route": [{"destination": {"host": "nodr.shop.example"}}]},
        {"route": [{"destination": {"host": host.split(".")[0]}}]},  # a short name
        {"route": [{"destination": {"host": host.upper()}}]},
        {"route": [{}]},
        {"route": [{"destination": d()}], "timeout": "2s"},
        {"route": [{"destination": d()}], "match": [{"uri": {"prefix": "/a"}}]},
        {"route": []},
        {"redirect": {"uri": "/elsewhere"}},
    ]


def _fresh():
    wp, _ = resolve(snapshot_from_text(_mesh()), WAYPOINT, TranslateOptions())
    return wp, DestinationRules(wp)


def _names_of(refs) -> list:
    return [(r.name, r.inbound, r.subset and r.subset.name) for r in refs]


def test_plain_tail_is_route_tail_or_declines_silently() -> None:
    wp_a, drs_a = _fresh()
    wp_b, drs_b = _fresh()
    vs = wp_b.snapshot.destination_rules_for_host("plain.shop.example")[0]  # (any IstioConfig: the key)
    taken = declined = 0
    for svc_a, svc_b in zip(wp_a.services, wp_b.services):
        for port_a, port_b in zip(svc_a.ports, svc_b.ports):
            for i, rule in enumerate(_rules(svc_a.hostname)):
                before = len(wp_a.issues)
                got = route_action.plain_tail(wp_a, drs_a, rule, svc_a, port_a)
                assert len(wp_a.issues) == before, rule
                tail, refs, action = route_action.route_tail(wp_b, drs_b, vs, rule, f"spec.http[{i}]", svc_b, port_b)
                if got is None:
                    declined += 1
                    continue
                taken += 1
                assert action is None, rule
                assert got[0] == tail, (svc_a.hostname, rule)
                assert _names_of(got[1]) == _names_of(refs), rule
                # the refs are the translation's own objects (clusters.py builds from the same ones)
                assert all(r is destinations.ref_for(wp_a, r.service, r.port, r.subset) for r in got[1])
    assert taken >= 12 and declined >= 40


def test_own_destinations_are_resolve_route_destinations() -> None:
    wp_a, drs_a = _fresh()
    wp_b, drs_b = _fresh()
    vs = wp_b.snapshot.destination_rules_for_host("plain.shop.example")[0]
    taken = 0
    for svc_a, svc_b in zip(wp_a.services, wp_b.services):
        for rule in _rules(svc_a.hostname):
            dests = rule.get("route") or []
            got = destinations.own_destinations(wp_a, drs_a, svc_a, svc_a.ports[0], dests)
            assert not wp_a.issues
            if got is not None:
                taken += 1
                want = destinations.resolve_route_destinations(wp_b, drs_b, vs, dests, "spec.http[0]", svc_b,
                                                               svc_b.ports[0])
                assert _names_of(got) == _names_of(want), rule
    assert taken >= 8


def _vs_mesh(http: list[dict], extra: dict | None = None) -> str:
    import yaml
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "vs", "namespace": "shop"},
          "spec": {"hosts": ["plain.shop.example"], "http": http, **(extra or {})}}
    return _mesh() + "---\n" + yaml.safe_dump(vs)


def test_plain_routes_are_vs_routes_or_decline_silently() -> None:
    host = "plain.shop.example"
    cases = [[rule] for rule in _rules(host)] + [
        [_rules(host)[0], _rules(host)[4]],  # a second rule after a catch-all: Unreachable
        [{"route": [{"destination": {"host": host}, "weight": 1, "mirror": True}]}],  # unsupported field
        [{"route": [{"destination": {"host": host}}], "fault": {"abort": {"httpStatus": 500}}}],
    ]
    taken = 0
    for http in cases:
        for extra in ({}, {"tcp": []}, {"tls": []}):
            text = _vs_mesh(copy.deepcopy(http), extra)
            results = []
            for fast in (True, False):
                wp, _ = resolve(snapshot_from_text(text), WAYPOINT, TranslateOptions())
                drs = DestinationRules(wp)
                svc = next(s for s in wp.services if s.hostname == host)
                vss = routes.select_virtual_services(wp, svc)
                if len(vss) != 1:
                    break  # (the parser rejected this VirtualService)
                vs = vss[0]
                rr = routes.RouteResult(routes._NO_CONFIG, [], set())
                got = routes._plain_routes(wp, drs, svc, svc.ports[0], vs, rr) if fast else \
                    routes._vs_routes(wp, drs, svc, svc.ports[0], 9080, [vs], rr)
                if fast and got is None:
                    assert not wp.issues and not rr.refs and not rr.sources, http
                    break
                results.append((got, _names_of(rr.refs), sorted(map(str, wp.issues))))
            if len(results) == 2:
                taken += 1
                assert results[0] == results[1], http
    assert taken >= 6


def test_one_pass_scopes_equal_the_plan_scopes() -> None:
    doms = {
        "a.example:80": ["a.example", "a.example:80"],
        "b.example:80": ["b.example", "b.example:80", "[2001:db8::1]", "[2001:db8::1]:80"],
        "c.example:80": ["c.example", "c.example:80", "[2001:db8::2]", "[2001:db8::2]:80"],  # key "[2001" shared
        "d.example:80": [],
    }
    vh_host = {vh: vh.rsplit(":", 1)[0] for vh in doms}
    keys = {h: ConfigKey("ServiceEntry", "shop" if h < "c" else "zz", h.split(".")[0]) for h in vh_host.values()}
    for wp_key in (ConfigKey("Gateway", "shop", "waypoint"), ConfigKey("Gateway", "a", "w")):
        plan = route_scopes.plan(8080, doms, vh_host)
        assert plan.shared and plan.own
        scopes, sources = plan.scopes_and_sources(keys, wp_key)
        assert [s.any_bytes for s in scopes] == [s.any_bytes for s in plan.scopes()]
        assert [s.name for s in scopes] == [s.name for s in plan.scopes()]
        assert sources == plan.scope_sources(keys, wp_key)
    vhost = b"\x0a\x03abc" * 50
    for host in ("a.example", "x" * 200):
        own = route_scopes.own_config(8080, host, vhost)
        want = route_scopes.with_vhost_bytes(names.service_route_config_name(8080, host), [("v", vhost)])
        assert (own.name, own.any_bytes) == (want.name, want.any_bytes)


def _policy(name: str, refs: list[dict], annotations: dict | None = None) -> str:
    import yaml
    meta = {"name": name, "namespace": "shop", **({"annotations": annotations} if annotations else {})}
    return yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta,
                           "spec": {"targetRefs": refs, "action": "ALLOW", "rules": [{}]}})


def test_attachment_with_simple_policies_noted_is_attachment() -> None:
    se = {"kind": "ServiceEntry", "group": "networking.istio.io"}
    policies = [
        _policy("p-plain", [{**se, "name": "plain"}]),
        _policy("p-group", [{**se, "name": "hashed", "group": "wrong.io"}, {**se, "name": "nodr"}]),
        _policy("p-dry", [{**se, "name": "porthashed"}], {"istio.io/dry-run": "true"}),
        _policy("p-ns", [{**se, "name": "nodr", "namespace": "other"}]),
        _policy("p-int", [{**se, "name": 5}]),
        _policy("p-svc", [{"kind": "Service", "name": "plain"}]),
    ]
    text = _mesh() + "".join("---\n" + p for p in policies)
    wp, _ = resolve(snapshot_from_text(text), WAYPOINT, TranslateOptions())
    memo: dict = {}
    issues = authz_attach.attachment_issues(wp, memo)
    assert issues == authz_attach.attachment_issues(wp)
    assert memo[authz_attach._SIMPLE]  # (some policies noted)
    for svc in wp.services:
        assert authz_attach.attached(wp, svc, memo) == authz_attach.attached(wp, svc), svc.hostname
    assert any(authz_attach.attached(wp, svc, memo) for svc in wp.services)
