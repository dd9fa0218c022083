"""AuthorizationPolicy configs encoded as bytes (translate/authz_wire.py, authz.virtual_host_part) equal what
protobuf serializes from the messages; policies with equal rules share one encoding without mixing names or
issues; the memoised attachment and policy-warning fast paths decide what the plain ones decide."""

from __future__ import annotations

import pytest
import yaml
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import authz, authz_attach, authz_match, authz_wire
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import resolve
from testsupport.manifests import BOOKINFO_WAYPOINT_HEADER

WAYPOINT = ConfigKey("Gateway", "bookinfo", "waypoint")
BASE = BOOKINFO_WAYPOINT_HEADER
SE = {"kind": "ServiceEntry", "group": "networking.istio.io"}
GW = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}
CLASS = {"kind": "GatewayClass", "group": "gateway.networking.k8s.io", "name": "istio-waypoint"}


def _service(name: str) -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: bookinfo}}
spec:
  hosts: [{name}.bookinfo.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}, {{number: 9090, name: http-admin, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.1}}]
"""


def _policy(name: str, spec: dict, ns: str = "bookinfo", annotations: dict | None = None) -> str:
    md = {"name": name, "namespace": ns, **({"annotations": annotations} if annotations else {})}
    return "---\n" + yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                                     "metadata": md, "spec": spec})


def _wp(text: str):
    wp, problem = resolve(snapshot_from_text(BASE + text), WAYPOINT, TranslateOptions())
    assert wp is not None, problem
    return wp


def _svc(wp, name: str):
    return next(s for s in wp.services if s.key.name == name)


def _message_part(configs: dict) -> bytes:
    """typed_per_filter_config of a VirtualHost holding `configs` (filter -> Any), as protobuf serializes it."""
    vh = rc.VirtualHost()
    for name, packed in configs.items():
        vh.typed_per_filter_config[name].CopyFrom(packed)
    return vh.SerializeToString(deterministic=True)


def test_vh_filter_config_field_number() -> None:
    assert authz_wire._VH_FILTER_CONFIG == rc.VirtualHost.DESCRIPTOR.fields_by_name["typed_per_filter_config"].number


@pytest.mark.parametrize("prefix_len", [0, 1, 20, 100, 127, 128, 129, 300, 16_300, 16_400])
def test_shape_encodes_as_protobuf(prefix_len: int) -> None:
    """Shape.encode = the RBACPerRoute / typed_per_filter_config entry protobuf serializes, whatever the length of
    the name prefix (one- to three-byte lengths), for several entries sorted by name."""
    perm = rbac_config.Policy(permissions=[authz_match.perm_any()], principals=[authz_match.princ_any()])
    other = rbac_config.Policy(permissions=[authz_match.perm_any()])
    built = {"rule[10]": perm, "rule[2]": other, "rule[0]": perm}
    prefix = "p" * prefix_len
    for name, action in authz._ENVOY_ACTION.items():
        shape = authz._shape(name, [(k, authz_wire.ld(2, v.SerializeToString(deterministic=True)))
                                    for k, v in built.items()])
        packed, vh = shape.encode(prefix)
        msg = rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rbac_config.RBAC(
            action=action, policies={prefix + k: v for k, v in built.items()})))
        assert packed == msg.SerializeToString(deterministic=True)
        assert vh == _message_part({name: authz._pack(name, {prefix + k: v for k, v in built.items()})})
        assert shape.encode(prefix) == (packed, vh)  # (memoised per prefix length)


def test_virtual_host_part_equals_message_encoding() -> None:
    """Every filter at once: a root DENY + a waypoint AUDIT + two ALLOW policies sharing the allow filter (one of
    them with the same rules as the other), a CUSTOM policy, on two ports."""
    rules = [{"to": [{"operation": {"methods": ["GET"], "paths": ["/a*"]}}]},
             {"from": [{"source": {"namespaces": ["x"]}}], "to": [{"operation": {"ports": ["9090"]}}]}]
    text = (_service("reviews") + _service("ratings")
            + _policy("root", {"targetRefs": [CLASS], "action": "DENY", "rules": [{"to": [{"operation": {
                "paths": ["/admin"]}}]}]}, ns="istio-system")
            + _policy("audit", {"targetRefs": [GW], "action": "AUDIT", "rules": [{}]})
            + _policy("a", {"targetRefs": [{**SE, "name": "reviews"}], "rules": rules})
            + _policy("b", {"targetRefs": [{**SE, "name": "reviews"}, {**SE, "name": "ratings"}], "rules": rules})
            + _policy("c", {"targetRefs": [{**SE, "name": "reviews"}], "action": "CUSTOM", "provider": {"name": "x"},
                            "rules": [{}]}))
    wp = _wp(text)
    seen = 0
    for svc_name in ("reviews", "ratings"):
        for port in (9080, 9090):
            for peer in ("tls", "filter_state"):
                svc = _svc(wp, svc_name)
                keys, part = authz.virtual_host_part(wp, svc, port, peer)
                configs = authz.virtual_host_config(wp, svc, port, peer)
                assert part == _message_part(configs)
                assert set(keys) == authz.policy_keys(wp, svc)
                seen += len(configs)
    assert seen > 8
    configs = authz.virtual_host_config(wp, _svc(wp, "reviews"), 9080)
    assert set(configs) == set(authz.FILTERS)
    allow = rbac_pb2.RBACPerRoute()
    assert configs[authz.RBAC_ALLOW_FILTER].Unpack(allow)
    assert sorted(allow.rbac.rules.policies) == [f"ns[bookinfo]-policy[{p}]-rule[{i}]" for p in "ab" for i in (0, 1)]


def _fresh(text: str, svc_name: str, port: int = 9080):
    wp = _wp(text)
    out = authz.virtual_host_part(wp, _svc(wp, svc_name), port)
    return out, sorted(wp.issues, key=repr)


def test_equal_rules_share_encoding_not_names_or_issues() -> None:
    """Two policies with equal rules (one warning each: an identity field on a plaintext listener) give, in one
    translation, exactly what each gives alone; rules differing only in a value are not shared."""
    rules = [{"from": [{"source": {"principals": ["cluster.local/ns/x/sa/y"]}}]}]
    a = _policy("a", {"targetRefs": [{**SE, "name": "reviews"}], "rules": rules})
    b = _policy("b-longer-name", {"targetRefs": [{**SE, "name": "ratings"}], "rules": rules})
    c = _policy("c", {"targetRefs": [{**SE, "name": "details"}],
                      "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/x/sa/z"]}}]}]})
    services = _service("reviews") + _service("ratings") + _service("details")
    wp = _wp(services + a + b + c)
    together = {n: authz.virtual_host_part(wp, _svc(wp, n), 9080) for n in ("reviews", "ratings", "details")}
    for name, policy in (("reviews", a), ("ratings", b), ("details", c)):
        alone, issues = _fresh(services + policy, name)
        assert together[name] == alone
        assert issues and all(i.key is not None and i.key.name == alone[0][0].name for i in issues)
        assert sorted([i for i in wp.issues if i.key == alone[0][0]], key=repr) == issues
    assert together["reviews"][1] != together["details"][1].replace(b"policy[c]", b"policy[a]")


def test_invalid_and_rule_less_allow_policies() -> None:
    """An invalid policy fails closed (deny-all entry, one warning per virtual host); an ALLOW policy whose only
    rule is dropped allows nothing (an empty allow config)."""
    text = (_service("reviews")
            + _policy("bad", {"targetRefs": [{**SE, "name": "reviews"}], "rules": [{"to": [{"operation": {
                "paths": ["/a*b"]}}]}]})
            + _policy("jwt", {"targetRefs": [{**SE, "name": "reviews"}], "rules": [{"from": [{"source": {
                "requestPrincipals": ["*"]}}]}]}))
    wp = _wp(text)
    svc = _svc(wp, "reviews")
    for port in (9080, 9090):
        keys, part = authz.virtual_host_part(wp, svc, port)
        configs = authz.virtual_host_config(wp, svc, port)
        assert part == _message_part(configs)
        assert set(configs) == {authz.RBAC_DENY_FILTER, authz.RBAC_ALLOW_FILTER}
    allow, deny = rbac_pb2.RBACPerRoute(), rbac_pb2.RBACPerRoute()
    assert configs[authz.RBAC_ALLOW_FILTER].Unpack(allow) and configs[authz.RBAC_DENY_FILTER].Unpack(deny)
    assert not allow.rbac.rules.policies and list(deny.rbac.rules.policies) == ["ns[bookinfo]-policy[bad]-invalid"]
    assert len([i for i in wp.issues if i.reason == "FailClosed"]) == 4


ATTACH_CASES = [
    {"targetRefs": [{**SE, "name": "reviews"}]},
    {"targetRefs": [{**SE, "name": "reviews", "group": "wrong"}]},
    {"targetRefs": [{"kind": "ServiceEntry", "name": "reviews"}]},
    {"targetRefs": [{**SE, "name": "reviews", "namespace": "other"}]},
    {"targetRefs": [{**SE, "name": "reviews", "namespace": "bookinfo"}]},
    {"targetRef": {**SE, "name": "reviews"}},
    {"targetRefs": ["junk", {**SE, "name": "ratings"}, {**SE, "name": "reviews"}]},
    {"targetRefs": [GW, {**SE, "name": "reviews"}]},
    {"targetRefs": [{**GW, "name": "other"}, {**SE, "name": "reviews"}]},
    {"targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}]},
    {"targetRefs": [{"kind": "Pod", "group": "", "name": "reviews"}]},
    {"targetRefs": [{**SE, "name": 123}]},
    {"selector": {"matchLabels": {"app": "reviews"}}},
    {},
]


@pytest.mark.parametrize("dry_run", [False, True])
def test_memoised_attachment_equals_plain(dry_run: bool) -> None:
    annotations = {"istio.io/dry-run": "true"} if dry_run else None
    text = _service("reviews") + _service("ratings") + _service("123") + "".join(
        _policy(f"p{i}", spec, annotations=annotations if i % 2 else None) for i, spec in enumerate(ATTACH_CASES))
    text += _policy("root", {"targetRefs": [CLASS]}, ns="istio-system")
    wp = _wp(text)
    memo: dict = {}
    for svc in wp.services:
        plain = authz_attach.attached(wp, svc)
        assert authz_attach.attached(wp, svc, memo) == plain
        assert [p.key for p in plain] == [p.key for p in authz.attached(wp, svc)]
    assert len(authz_attach.attached(wp, _svc(wp, "reviews"))) > 3


@pytest.mark.parametrize("spec", ATTACH_CASES + [
    {"targetRefs": []}, {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"}],
                         "targetRef": {"kind": "Pod"}}])
@pytest.mark.parametrize("annotations", [None, {"istio.io/dry-run": "true"}, {"istio.io/dry-run": "false"}])
def test_policy_issues_fast_path_agrees(spec: dict, annotations: dict | None, monkeypatch) -> None:
    policy = _wp(_policy("p", spec, annotations=annotations)).snapshot.authorization_policies[0]
    fast = authz_attach.policy_issues(policy)
    monkeypatch.setattr(authz_attach, "_clean", lambda p: False)
    assert fast == authz_attach.policy_issues(policy)
