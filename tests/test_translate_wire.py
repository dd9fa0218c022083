"""Resources translate() builds as wire fragments (translate/wire.py: RBAC per-route configs, virtual hosts, route
configurations, route scopes) equal the message-built ones byte for byte, and stay separate objects."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import scoped_route_pb2

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import authz, authz_match, route_scopes, translate, wire
from istiod_lite.translate.waypoint import resolve
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.xds import types
from testsupport.manifests import SHOP_WAYPOINT_HEADER

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")
HEADER = SHOP_WAYPOINT_HEADER


def _snapshot(n: int = 3):
    docs = []
    for i in range(n):
        host, name = f"svc-{i}.shop.example", f"svc-{i}"
        docs.append(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{host}]
  http: [{{route: [{{destination: {{host: {host}}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  targetRefs: [{{kind: ServiceEntry, group: networking.istio.io, name: {name}}}]
  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]
""")
    return snapshot_from_text(HEADER + "---\n" + "---\n".join(docs))


def test_varint_and_long_fields() -> None:
    assert wire.varint(0) == b"\x00" and wire.varint(127) == b"\x7f" and wire.varint(300) == b"\xac\x02"
    long = "x" * 300
    msg = rc.VirtualHost.FromString(wire.string(1, long) + wire.string(2, "a") + wire.string(2, "b"))
    assert msg == rc.VirtualHost(name=long, domains=["a", "b"])


def test_rbac_bytes_equal_packed_messages() -> None:
    wp, _ = resolve(snapshot_from_text(HEADER), WAYPOINT, TranslateOptions())
    perm = rbac_config.Policy(permissions=[authz_match.perm_any()], principals=[authz_match.princ_any()])
    other = rbac_config.Policy(permissions=[authz_match.perm_any()])
    cases = [{}, {"b": perm, "a": other, "é" * 200: perm}, {"only": other}, {"": rbac_config.Policy()}]
    for name in authz.FILTERS:
        for policies in cases:
            assert authz._pack_bytes(wp, name, policies) == authz._pack(name, policies).value, (name, policies)


def test_scope_and_route_configuration_equal_message_built() -> None:
    for key in ("svc.example", "", "[2001"):
        s = route_scopes.scope(8080, key, "http.8080/x")
        built = scoped_route_pb2.ScopedRouteConfiguration(name=f"http.8080|{key}", route_configuration_name="http.8080/x")
        built.key.fragments.add(string_key="8080")
        built.key.fragments.add(string_key=key)
        assert s.SerializeToString() == built.SerializeToString(deterministic=True)  # the cache's bytes, exactly
        assert s.message.key.fragments[1].WhichOneof("type") == "string_key"
    vhs = [rc.VirtualHost(name=n, domains=[n]) for n in ("b:80", "a:80")]
    for scoped in (True, False):
        assert route_scopes.with_vhost_bytes("cfg", [(v.name, v.SerializeToString()) for v in vhs], scoped) == \
            route_scopes.with_vhosts("cfg", vhs, scoped)


def test_route_resources_are_separate_messages() -> None:
    snap = _snapshot()
    first = translate(snap, WAYPOINT).resources
    second = translate(snap, WAYPOINT).resources
    for t in (types.ROUTE, types.SCOPED_ROUTE):
        assert first.of_type(t) == second.of_type(t)
        assert all(isinstance(v, types.Encoded) for v in first.of_type(t).values())  # bytes, never a kept message
    name = "http.8080/svc-0.shop.example"
    mine = first.messages(types.ROUTE)[name]  # a parsed message is the reader's own copy
    mine.virtual_hosts[0].routes[0].route.cluster = "changed"
    assert first.messages(types.ROUTE)[name].virtual_hosts[0].routes[0].route.cluster != "changed"
    assert translate(snap, WAYPOINT).resources.of_type(types.ROUTE)[name] == second.of_type(types.ROUTE)[name]


def test_sources_are_sorted_strings_made_on_lookup() -> None:
    """ResourceSet.sources' contract ((type, name) -> sorted distinct "Kind/ns/name" strings, iterated in key
    order) from translate()'s keys, converted on lookup (types.SourcesByType)."""
    a, b = ConfigKey("ServiceEntry", "shop", "b"), ConfigKey("DestinationRule", "shop", "a")
    shared = (a, b, a)
    out = types.SourcesByType({"t2": {"y": shared, "x": shared}, "t1": {"z": {a}, "w": ("Gateway/shop/wp",)}})
    assert list(out) == [("t1", "w"), ("t1", "z"), ("t2", "x"), ("t2", "y")]
    assert out[("t2", "x")] == ("DestinationRule/shop/a", "ServiceEntry/shop/b")
    assert out[("t2", "x")] is out[("t2", "y")]  # one conversion per shared collection
    assert out[("t1", "z")] == ("ServiceEntry/shop/b",) and out[("t1", "w")] == ("Gateway/shop/wp",)
    assert ("t1", "z") in out and ("t1", "q") not in out and ("t9", "z") not in out and len(out) == 4
    assert out == {("t1", "w"): ("Gateway/shop/wp",), ("t1", "z"): ("ServiceEntry/shop/b",),
                   ("t2", "x"): ("DestinationRule/shop/a", "ServiceEntry/shop/b"),
                   ("t2", "y"): ("DestinationRule/shop/a", "ServiceEntry/shop/b")}
    assert out.get(("t1", "q")) is None