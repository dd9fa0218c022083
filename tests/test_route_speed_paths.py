"""The one-pass route paths give what the general paths give, and report nothing when they decline: the usual
rule's action (route_action.plain_tail vs route_tail; its bytes as runs between cluster names, plain_segments,
vs the wire encoding), the usual VirtualService's routes (routes._plain_route vs _vs_routes) and the selection
checked inline (routes._route_bytes vs select_virtual_services + _vs_routes), a service's own RouteConfiguration
and the scopes built in one pass (route_scopes.own_config / ScopePlan.scopes_and_sources vs with_vhost_bytes /
scopes + scope_sources), policy attachment with attachment_issues' note of simple policies
(authz_attach.attached with and without it) and a virtual host's policies (authz.virtual_host_part vs
_general_part)."""

from __future__ import annotations

import copy

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import authz_attach, destinations, names, route_action, route_scopes, routes
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import resolve
from testsupport.manifests import SHOP_SERVICE_WITHOUT_RULES, SHOP_WAYPOINT_HEADER, two_port_shop_service

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")
LONG_HOST = "a" * 60 + "." + "b" * 60 + ".shop.example"  # cluster names over 127 bytes: two-byte lengths
_POLICIES = {
    "plain": "{connectionPool: {tcp: {maxConnections: 10}}}",
    "hashed": "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
    "porthashed": "{portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]}",
}


def _mesh() -> str:
    docs = []
    for i, (name, policy) in enumerate(_POLICIES.items()):
        docs.append(two_port_shop_service(name, f"{name}.shop.example", i, policy, """
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}}
  - {name: v3, labels: {version: v3}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}}"""))
    docs.append(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: long, namespace: shop}}
spec:
  hosts: [{LONG_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.2.1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: long, namespace: shop}}
spec:
  host: {LONG_HOST}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}, {{name: v3, labels: {{}}}}]
""")
    docs.append(SHOP_SERVICE_WITHOUT_RULES)
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
        {"route": [{"destination": d(subset="v1"), "weight": 20}, {"destination": d(subset="v3"), "weight": 0},
                   {"destination": d(), "weight": 300}, {"destination": d(subset="v3"), "weight": 5}]},
        {"route": [{"destination": d(subset="v3"), "weight": 0}, {"destination": d(), "weight": 1}]},
        {"route": [{"destination": d(subset="v1"), "weight": 1}, {"destination": d(subset="nope"), "weight": 0}]},
        {"route": [{"destination": d(subset="v1"), "weight": 1, "extra": True}]},
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
    assert route_action.DESTINATION_FIELDS is routes.DESTINATION_FIELDS  # (what plain_tail declines, _usual reports)
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
                if fast:
                    got = routes._plain_route(wp, drs, svc, svc.ports[0], vs, rr)
                    got = None if got is None else [got[0] + got[1]]
                else:
                    got = routes._vs_routes(wp, drs, svc, svc.ports[0], 9080, [vs], rr)
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
        "e" * 130 + ".example:80": ["e" * 130 + ".example", "e" * 130 + ".example:80"],  # a key over 127 bytes
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
        split = route_scopes.own_config(8080, host, vhost[:7], vhost[7:])
        assert (split.name, split.any_bytes) == (want.name, want.any_bytes)
        short = route_scopes.own_config(8080, host, b"\x0a\x01a", b"")
        assert short == route_scopes.with_vhost_bytes(names.service_route_config_name(8080, host), [("v", b"\x0a\x01a")])


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
        _policy("p-wp", [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}]),
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


def test_plain_segments_joined_with_names_are_the_wire_encoding() -> None:
    """plain_tail's runs between cluster names, for one and several names of lengths around the one- and
    two-byte varint limits."""
    from istiod_lite.translate import wire
    for common in (b"", b"\x22\x02\x08\x01", b"\x42\x05" + b"x" * 200):
        for n in (1, 20, 127, 128, 16383, 16384):
            name = b"c" * n
            assert name.join(route_action.plain_segments(common, n)) == \
                wire.ld(2, wire.string(1, name.decode()) + common)
        for pairs in ([(3, 100)], [(127, 1), (128, 300)], [(10, 5), (200, 70), (1, 128)], [(16384, 2)]):
            names_ = [bytes([97 + i]) * n for i, (n, _) in enumerate(pairs)]
            segments = route_action.plain_segments(common, tuple(pairs))
            got = segments[0] + b"".join(nm + seg for nm, seg in zip(names_, segments[1:]))
            weighted = [wire.string(1, nm.decode()) + wire.ld(2, wire.uint(1, w)) for nm, (_, w) in zip(names_, pairs)]
            assert got == wire.ld(2, wire.ld(3, wire.lds(1, weighted)) + common), pairs


def _reference_route_bytes(wp, drs, svc, port, vh_name, domain_list, rr) -> bytes:
    """routes._route_bytes through the general code only: select_virtual_services, _vs_routes."""
    from istiod_lite.translate import wire
    rr.sources.add(svc.meta.key)
    with_http = []
    for vs in routes.select_virtual_services(wp, svc):
        if vs.spec.get("http"):
            with_http.append(vs)
        else:
            routes.report_unsupported(wp, vs)
    found = routes._vs_routes(wp, drs, svc, port, port.number, with_http, rr) if with_http else []
    rr.sources.update(vs.meta.key for vs in with_http)
    if not found:
        action = route_action.default_action(wp, destinations.wp_inbound_ref(wp, svc, port))
        rr.refs += action.refs
        found = [routes._DEFAULT_HEAD + action.route_bytes()]
    return wire.string(1, vh_name) + wire.strings(2, domain_list) + wire.lds(3, found)


def test_route_bytes_are_the_general_selection_and_routes() -> None:
    """The one-VirtualService path of _route_bytes (selection checked inline, _plain_route) gives what the
    general selection and _vs_routes give, reports included, for VirtualServices that apply silently, apply
    with their gateways / exportTo, or do not apply (reported)."""
    host = "plain.shop.example"
    rule = {"route": [{"destination": {"host": host, "subset": "v1"}, "weight": 100},
                      {"destination": {"host": host, "subset": "v3"}, "weight": 0}]}
    variants = [({}, "shop"), ({}, "other"), ({"gateways": ["mesh"]}, "shop"), ({"gateways": ["shop/waypoint"]}, "shop"),
                ({"gateways": ["other/gw"]}, "shop"), ({"exportTo": ["."]}, "shop"), ({"exportTo": ["~"]}, "shop"),
                ({"exportTo": ["*"]}, "shop"), ({"tcp": [{"route": [{"destination": {"host": host}}]}]}, "shop")]
    for extra, ns in variants:
        for http in ([rule], [{**rule, "match": [{"uri": {"prefix": "/a"}}]}], []):
            spec = {**extra, **({"http": copy.deepcopy(http)} if http else {})}
            text = _vs_mesh([], spec).replace("namespace: shop\n  name: vs", f"namespace: {ns}\n  name: vs")
            text = text.replace("metadata:\n  name: vs\n  namespace: shop", f"metadata:\n  name: vs\n  namespace: {ns}")
            results = []
            for general in (False, True):
                wp, _ = resolve(snapshot_from_text(text), WAYPOINT, TranslateOptions())
                drs = DestinationRules(wp)
                before = list(wp.issues)
                svc = next(s for s in wp.services if s.hostname == host)
                rr = routes.RouteResult(routes._NO_CONFIG, [], set())
                args = (wp, drs, svc, svc.ports[0], f"{host}:9080", [host, f"{host}:9080"], rr)
                got = _reference_route_bytes(*args) if general else routes._route_bytes(*args, 0)
                results.append((got, _names_of(rr.refs), sorted(map(str, rr.sources)),
                                [str(i) for i in wp.issues[len(before):]]))
            assert results[0] == results[1], (extra, ns, http)


def _authz_mesh(with_waypoint_policy: bool) -> str:
    import yaml
    se = {"kind": "ServiceEntry", "group": "networking.istio.io"}

    def policy(name: str, target: str | dict, spec: dict) -> str:
        ref = target if isinstance(target, dict) else {**se, "name": target}
        return "---\n" + yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                                         "metadata": {"name": name, "namespace": "shop"},
                                         "spec": {"targetRefs": [ref], **spec}})
    ops = {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
    text = _mesh()
    if with_waypoint_policy:
        text += policy("wp-deny", {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"},
                       {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]})
    text += policy("plain-allow", "plain", ops)  # quiet, its own filter
    text += policy("hashed-allow", "hashed", ops) + policy("hashed-allow2", "hashed", ops)  # one filter, shared
    text += policy("porthashed-bad", "porthashed", {"rules": [{"to": [{"operation": {"paths": ["/a*b"]}}]}]})
    text += policy("nodr-custom", "nodr", {"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]})
    text += policy("long-empty", LONG_HOST.split(".")[0], {"action": "ALLOW"})  # (targets nothing)
    text += policy("long-deny", "long", {"action": "DENY", "rules": [{"from": [{"source": {
        "requestPrincipals": ["*"]}}]}]})  # a rule issue reported with its policy
    return text


def test_virtual_host_part_is_the_grouped_part() -> None:
    """authz.virtual_host_part's inline path (one or two quiet policies in distinct filters) gives what
    `_grouped` gives, and leaves everything else (shared filters, invalid, CUSTOM, policies with issues) to it:
    same keys, bytes and issues, in order, per service and port, the parts memo cold or warm."""
    from istiod_lite.translate import authz
    for with_wp in (True, False):
        text = _authz_mesh(with_wp)
        runs = []
        for general in (False, True):
            wp, _ = resolve(snapshot_from_text(text), WAYPOINT, TranslateOptions())
            out = []
            for _ in range(2):
                for svc in wp.services:
                    for port in (*svc.ports, None):
                        number = port.number if port is not None else None
                        out.append(authz._general_part(wp, svc, number, "tls") if general else
                                   authz.virtual_host_part(wp, svc, number))
            runs.append((out, [str(i) for i in wp.issues]))
        assert runs[0] == runs[1], with_wp
        assert any(part for _, part in runs[0][0]) and runs[0][1]
