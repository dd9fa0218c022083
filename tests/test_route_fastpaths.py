"""The route translation's fast paths give what the general paths give: repeated wire fields and two-byte
varints (wire.py), one-pass domain assignment (domains.assign vs the per-domain ranking `_assign_general`), the
usual destinations resolved per rule (destinations.resolve_route_destinations vs resolve_destination, issues
included), consistent-hash lookups skipped without a loadBalancer (route_action._route_hashes vs
DestinationRules.route_hashes) and rule actions without an Action object (route_action.route_tail vs
build_action)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import wrappers_pb2

from testsupport.manifests import SHOP_SERVICE_WITHOUT_RULES, SHOP_WAYPOINT_HEADER, two_port_shop_service
from istiod_lite.model.meta import ConfigKey, ObjectMeta
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import destinations, domains, route_action, wire
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import resolve, served_port

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")


def test_two_byte_varints_and_repeated_fields() -> None:
    for n in (*range(0, 0x4100), 2**21 - 1, 2**21, 2**32 + 7):
        encoded = wire.varint(n)
        assert wire.read_varint(encoded, 0) == (n, len(encoded))
        assert encoded == wrappers_pb2.UInt64Value(value=n).SerializeToString()[1:] or n == 0
    texts = ["", "a", "é" * 90, "x" * 200, "y" * 20000]
    assert wire.strings(2, texts) == b"".join(wire.string(2, t) for t in texts)
    payloads = [t.encode() for t in texts]
    assert wire.lds(3, payloads) == b"".join(wire.ld(3, p) for p in payloads)
    assert rc.VirtualHost.FromString(wire.strings(2, texts)).domains == texts


def _service(kind: str, ns: str, host: str, addresses: tuple[str, ...] = ()) -> Service:
    return Service(ObjectMeta(ConfigKey(kind, ns, host.split(".")[0])), host, (ServicePort(80, "http", "HTTP"),),
                   addresses)


def test_one_pass_domain_assignment_equals_ranking_per_domain() -> None:
    suffix = "cluster.local"
    pool = [
        _service("Service", "a", "web.a.svc.cluster.local", ("10.0.0.1",)),
        _service("Service", "b", "web.b.svc.cluster.local", ("10.0.0.1",)),  # shares the VIP and "web"
        _service("ServiceEntry", "a", "web.a", ()),  # = a short name of the first
        _service("ServiceEntry", "c", "api.example.com", ("2001:db8::a",)),
        _service("ServiceEntry", "d", "API.example.com", ("[2001:db8::a]",)),
        _service("ServiceEntry", "e", "*.example.com", ()),
        _service("ServiceEntry", "f", "solo.example.org", ()),
        _service("ServiceEntry", "g", "web.a.svc.cluster.local", ()),  # the same virtual host name as the first
    ]
    for size in (1, 2, 3):
        for chosen in itertools.permutations(pool, size):
            served = [(s, 80) for s in chosen]
            fast = SimpleNamespace(snapshot=SimpleNamespace(domain_suffix=suffix), issues=[])
            fast.report = fast.issues.append
            general = SimpleNamespace(snapshot=fast.snapshot, issues=[])
            general.report = general.issues.append
            assert domains.assign(fast, served, "http-80") == \
                domains._assign_general(general, served, "http-80"), chosen
            assert fast.issues == general.issues, chosen


_DR_POLICIES = {
    "plain": "{connectionPool: {tcp: {maxConnections: 10}}}",
    "hashed": "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
    "port-hashed": "{portLevelSettings: [{port: {number: 9080}, loadBalancer: {consistentHash: {useSourceIp: true}}}]}",
    "simple-lb": "{loadBalancer: {simple: LEAST_REQUEST}}",
}


def _mesh() -> str:
    docs = []
    for i, (kind, policy) in enumerate(_DR_POLICIES.items()):
        host, name = f"{kind}.shop.example", kind
        docs.append(two_port_shop_service(name, host, i, policy, f"""
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}, trafficPolicy: {_DR_POLICIES["hashed"]}}}"""))
    docs.append(SHOP_SERVICE_WITHOUT_RULES)
    return SHOP_WAYPOINT_HEADER + "---\n" + "---\n".join(docs)


def _destinations(host: str) -> list[dict]:
    return [
        {"destination": {"host": host, "subset": "v1"}, "weight": 70},
        {"destination": {"host": host, "subset": "v2"}, "weight": 30},
        {"destination": {"host": host}},
        {"destination": {"host": host, "subset": "nope"}, "weight": 10},  # SubsetNotFound
        {"destination": {"host": host, "port": {"number": 9090}, "subset": "v1"}},
        {"destination": {"host": host.upper(), "subset": "v2"}},
        {"destination": {"host": "nodr.shop.example"}, "weight": 5},
        {"destination": {"host": "nodr"}},  # a short name
        {"destination": {"host": "missing.shop.example"}},  # HostNotFound
        {"destination": {"host": "*.shop.example"}},  # InvalidHost
        {"destination": {"host": "nodr.shop.example", "subset": "v1"}},  # no DestinationRule: SubsetNotFound
        {},
    ]


def _fresh():
    wp, _ = resolve(snapshot_from_text(_mesh()), WAYPOINT, TranslateOptions())
    return wp, DestinationRules(wp)


def test_route_destinations_resolve_as_one_by_one() -> None:
    wp_fast, drs_fast = _fresh()
    wp_slow, drs_slow = _fresh()
    cfg = wp_fast.snapshot.destination_rules_for_host("plain.shop.example")[0]  # (any IstioConfig: the key)
    for svc_fast, svc_slow in zip(wp_fast.services, wp_slow.services):
        routes = _destinations(svc_fast.hostname)
        port_fast, port_slow = served_port(svc_fast, 8080), served_port(svc_slow, 8080)
        got = destinations.resolve_route_destinations(wp_fast, drs_fast, cfg, routes, "spec.http[0]", svc_fast,
                                                      port_fast)
        want = [destinations.resolve_destination(wp_slow, drs_slow, cfg, r.get("destination") or {},
                                                 f"spec.http[0].route[{j}].destination", svc_slow, port_slow)
                for j, r in enumerate(routes)]
        assert [r and (r.name, r.inbound, r.subset and r.subset.name) for r in got] == \
            [r and (r.name, r.inbound, r.subset and r.subset.name) for r in want]
        assert sum(r is None for r in got) >= 4
    assert wp_fast.issues == wp_slow.issues and len(wp_fast.issues) > 0


def test_route_hashes_without_load_balancer_are_skipped_exactly() -> None:
    wp, drs = _fresh()
    seen_hashed = seen_plain = 0
    for svc in wp.services:
        for port in svc.ports:
            for subset_name in (None, "v1", "v2"):
                rule = drs.for_service(svc)
                subset = rule.subset(subset_name) if rule is not None and subset_name else None
                ref = destinations.ref_for(wp, svc, port, subset)
                got = route_action._route_hashes(drs, ref)
                want = drs.route_hashes(svc, port.number, subset)
                assert [h.SerializeToString() for h in got] == [h.SerializeToString() for h in want], ref.name
                seen_hashed += bool(want)
                seen_plain += not want
    assert seen_hashed and seen_plain


def test_route_tail_is_the_actions_route_bytes() -> None:
    rules = [
        {"route": [{"destination": {"host": "plain.shop.example", "subset": "v1"}, "weight": 90},
                   {"destination": {"host": "plain.shop.example", "subset": "v2"}, "weight": 10}]},
        {"route": [{"destination": {"host": "hashed.shop.example", "subset": "v1"}}], "name": "one"},
        {"route": [{"destination": {"host": "plain.shop.example", "subset": "nope"}}]},  # 503
        {"route": [{"destination": {"host": "plain.shop.example"},
                    "headers": {"request": {"set": {"x-a": "1", ":authority": "b.example"}}}}], "timeout": "2s"},
        {"route": [{"destination": {"host": "plain.shop.example"}}], "retries": {"attempts": 0},
         "mirror": {"host": "nodr.shop.example"}, "rewrite": {"uri": "/v2"}},
        {"redirect": {"uri": "/elsewhere"}},
        {"directResponse": {"status": 418}, "headers": {"response": {"add": {"x-b": "2"}}}},
    ]
    wp_a, drs_a = _fresh()
    wp_b, drs_b = _fresh()
    svc_a = next(s for s in wp_a.services if s.hostname == "plain.shop.example")
    svc_b = next(s for s in wp_b.services if s.hostname == "plain.shop.example")
    vs_a = wp_a.snapshot.destination_rules_for_host("plain.shop.example")[0]
    vs_b = wp_b.snapshot.destination_rules_for_host("plain.shop.example")[0]
    for i, rule in enumerate(rules):
        path = f"spec.http[{i}]"
        tail, refs, action = route_action.route_tail(wp_a, drs_a, vs_a, rule, path, svc_a, svc_a.ports[0], 8080)
        want = route_action.build_action(wp_b, drs_b, vs_b, rule, path, svc_b, svc_b.ports[0], 8080)
        assert [r.name for r in refs] == [r.name for r in want.refs], rule
        got = action.route_bytes() if action is not None else tail
        assert got == want.route_bytes(), rule
        reference = rc.Route()
        want.apply(reference)
        assert rc.Route.FromString(got) == reference, rule
    assert wp_a.issues == wp_b.issues
