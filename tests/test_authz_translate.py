"""AuthorizationPolicy translation edge cases: validation (field paths), the matchers, Istio's checkError rule,
empty-rule semantics, ports, attachment, fail-closed for invalid policies, and the fixed filter list."""

from __future__ import annotations

import pytest
import yaml
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from testsupport.listener_routes import listener_route_sources
from istiod_lite.model import validate_authz
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import authz, authz_match, translate
from istiod_lite.translate.waypoint import resolve
from istiod_lite.translate.options import TranslateOptions
from testsupport.manifests import BOOKINFO_WAYPOINT_HEADER

KEY = ConfigKey("AuthorizationPolicy", "bookinfo", "p")
WAYPOINT = ConfigKey("Gateway", "bookinfo", "waypoint")
BASE = BOOKINFO_WAYPOINT_HEADER + """---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 9080}]
"""


def _policy(spec: dict, name: str = "p", ns: str = "bookinfo", annotations: dict | None = None) -> str:
    md = {"name": name, "namespace": ns, **({"annotations": annotations} if annotations else {})}
    return "---\n" + yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                                     "metadata": md, "spec": spec})


def _rbac(*policies: str, service: str = "reviews", port: int | None = None):
    """(filter name -> RBACPerRoute, translate issues) for `service`'s virtual host."""
    snap = snapshot_from_text(BASE + "".join(policies))
    wp, _ = resolve(snap, WAYPOINT, TranslateOptions())
    svc = next(s for s in wp.services if s.key.name == service)
    out = {}
    for name, packed in authz.virtual_host_config(wp, svc, port).items():
        msg = rbac_pb2.RBACPerRoute()
        assert packed.Unpack(msg)
        out[name] = msg
    return out, wp.issues


GW = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}
SVC = {"kind": "Service", "group": "", "name": "reviews"}


# ---- validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, ok", [
    ("/exact", True), ("/prefix/*", True), ("*.png", True), ("*", True), ("/a/{*}/b/{**}", True),
    ("/a*b", False), ("*mid*", False), ("/a/{**}/{*}", False), ("/a/{x}", False), ("{*}/a", False),
])
def test_path_patterns(path, ok):
    assert (validate_authz.path_problem(path) is None) == ok


@pytest.mark.parametrize("key, ok", [
    ("request.headers[x-user]", True), ("source.ip", True), ("destination.port", True), ("connection.sni", True),
    ("experimental.envoy.filters.network.mysql_proxy[db.table]", True), ("request.auth.claims[iss]", True),
    ("request.headers", False), ("request.headers[]", False), ("request.colour", False),
    ("destination.labels[app]", False), ("experimental.envoy.filters.x", False),
])
def test_condition_keys(key, ok):
    assert (validate_authz.key_problem(key) is None) == ok


def test_validation_reports_field_paths():
    spec = {"targetRefs": [GW], "selector": {"matchLabels": {"a": "b"}}, "action": "DENY",
            "rules": [{"from": [{"source": {"ipBlocks": ["300.1.1.1"]}}],
                       "to": [{"operation": {"ports": ["http"], "paths": ["/a*b"]}}],
                       "when": [{"key": "nope", "values": ["x"]}, {"key": "source.ip"}]},
                      {"from": []}]}
    paths = {i.path for i in validate_authz.check(spec, KEY)}
    assert paths == {"spec.selector", "spec.rules[0].from[0].source.ipBlocks[0]",
                     "spec.rules[0].to[0].operation.ports[0]", "spec.rules[0].to[0].operation.paths[0]",
                     "spec.rules[0].when[0].key", "spec.rules[0].when[1]", "spec.rules[1].from"}


def test_custom_needs_a_provider_and_only_custom_has_one():
    assert [i.path for i in validate_authz.check({"action": "CUSTOM"}, KEY)] == ["spec.provider"]
    assert [i.path for i in validate_authz.check({"action": "DENY", "provider": {"name": "x"}}, KEY)] == \
        ["spec.provider"]


def test_invalid_policy_is_kept_with_its_errors_so_it_can_fail_closed():
    snap = snapshot_from_text(BASE + _policy({"targetRefs": [SVC], "action": "PERMIT"}))
    assert [p.key.name for p in snap.authorization_policies] == ["p"]
    assert [i.path for i in snap.issues if i.is_error] == ["spec.action"]


# ---- matchers ------------------------------------------------------------------------------------------
def test_string_matcher_forms():
    assert authz_match.string_matcher("a").exact == "a"
    assert authz_match.string_matcher("a*").prefix == "a"
    assert authz_match.string_matcher("*a").suffix == "a"
    assert authz_match.string_matcher("*").safe_regex.regex == ".+"
    assert authz_match.string_matcher("ns/*", prefix="spiffe://").prefix == "spiffe://ns/"
    assert authz_match.string_matcher("*/sa/x", prefix="spiffe://").safe_regex.regex == r"spiffe://.*/sa/x"


@pytest.mark.parametrize("host, port", [("a.com", False), ("a.com:80", True), ("[::1]:80", True), ("::1", False),
                                        ("[::1]", False), ("a.com:", False)])
def test_host_port_detection(host, port):
    assert authz_match.has_port(host) == port


def test_host_without_port_matches_any_port_case_insensitively():
    import re2
    regex = authz_match.perm_host("Reviews.default").header.string_match.safe_regex.regex
    for value, hit in [("reviews.default", True), ("REVIEWS.default:9080", True), ("reviews.defaultx", False),
                       ("xreviews.default", False)]:
        assert bool(re2.fullmatch(regex, value)) == hit, value
    exact = authz_match.perm_host("reviews:9080").header.string_match
    assert exact.exact == "reviews:9080" and exact.ignore_case


def test_cidr_of_single_address_and_v6():
    c = authz_match.cidr("127.0.0.1")
    assert (c.address_prefix, c.prefix_len.value) == ("127.0.0.1", 32)
    c = authz_match.cidr("2001:db8::1/32")
    assert (c.address_prefix, c.prefix_len.value) == ("2001:db8::", 32)


# ---- semantics -----------------------------------------------------------------------------------------
def test_filter_list_does_not_depend_on_policies():
    names = [f.name for f in authz.http_filters()]
    assert names == [authz.RBAC_AUDIT_FILTER, authz.RBAC_CUSTOM_FILTER, authz.RBAC_DENY_FILTER,
                     authz.RBAC_ALLOW_FILTER]
    for f in authz.http_filters():
        cfg = rbac_pb2.RBAC()
        assert f.typed_config.Unpack(cfg) and not cfg.HasField("rules")  # no enforcement at listener level


def test_no_policy_no_per_route_config():
    assert _rbac()[0] == {}


def test_allow_without_rules_denies_all_and_empty_rule_allows_all():
    out, _ = _rbac(_policy({"targetRefs": [SVC]}))
    allow = out[authz.RBAC_ALLOW_FILTER].rbac.rules
    assert allow.action == allow.ALLOW and not allow.policies  # nothing matches -> everything denied
    out, _ = _rbac(_policy({"targetRefs": [SVC], "rules": [{}]}))
    pol = out[authz.RBAC_ALLOW_FILTER].rbac.rules.policies["ns[bookinfo]-policy[p]-rule[0]"]
    assert pol.permissions[0].and_rules.rules[0].any and pol.principals[0].and_ids.ids[0].any


def test_deny_without_rules_has_no_effect():
    assert _rbac(_policy({"targetRefs": [SVC], "action": "DENY"}))[0] == {}


def test_request_principals_drop_an_allow_rule_but_only_the_field_of_a_deny_rule():
    rules = [{"from": [{"source": {"requestPrincipals": ["iss/sub"]}}], "to": [{"operation": {"paths": ["/x"]}}]}]
    out, issues = _rbac(_policy({"targetRefs": [SVC], "rules": rules}))
    assert not out[authz.RBAC_ALLOW_FILTER].rbac.rules.policies  # narrower: the rule is gone
    assert any("requestPrincipals" in i.path and "ALLOW rule is ignored" in i.message for i in issues)
    out, issues = _rbac(_policy({"targetRefs": [SVC], "action": "DENY", "rules": rules}))
    pol = out[authz.RBAC_DENY_FILTER].rbac.rules.policies["ns[bookinfo]-policy[p]-rule[0]"]
    assert pol.principals[0].and_ids.ids[0].any  # wider: the source condition is ignored
    assert pol.permissions[0].and_rules.rules[0].url_path.path.exact == "/x"


def test_ports_are_the_virtual_hosts_service_port():
    p = _policy({"targetRefs": [SVC], "rules": [{"to": [{"operation": {"ports": ["9090"]}}]}]})
    at_9090 = _rbac(p, port=9090)[0][authz.RBAC_ALLOW_FILTER].rbac.rules.policies
    at_9080 = _rbac(p, port=9080)[0][authz.RBAC_ALLOW_FILTER].rbac.rules.policies
    assert at_9090["ns[bookinfo]-policy[p]-rule[0]"].permissions[0].and_rules.rules[0].any
    assert at_9080["ns[bookinfo]-policy[p]-rule[0]"].permissions[0].and_rules.rules[0].not_rule.any  # never


def test_identity_fields_use_the_authenticated_principal_and_warn():
    p = _policy({"targetRefs": [SVC], "rules": [{"from": [{"source": {"namespaces": ["bookinfo"]}}]}]})
    out, issues = _rbac(p)
    pol = out[authz.RBAC_ALLOW_FILTER].rbac.rules.policies["ns[bookinfo]-policy[p]-rule[0]"]
    assert pol.principals[0].and_ids.ids[0].authenticated.principal_name.safe_regex.regex == ".*/ns/bookinfo/.*"
    assert any(i.reason == "NoPeerIdentity" for i in issues)


def test_service_target_does_not_touch_other_services_and_selector_is_reported():
    p = _policy({"targetRefs": [SVC], "action": "DENY", "rules": [{}]})
    sel = _policy({"selector": {"matchLabels": {"app": "x"}}, "action": "DENY", "rules": [{}]}, name="sel")
    other_ns = _policy({"targetRefs": [{**SVC, "namespace": "other"}], "action": "DENY", "rules": [{}]}, name="o")
    assert set(_rbac(p, sel, other_ns)[0]) == {authz.RBAC_DENY_FILTER}
    out, issues = _rbac(p, sel, other_ns, service="ratings")
    assert out == {}
    assert any(i.key.name == "sel" and i.reason == "NotAppliedAtWaypoint" for i in issues)


def test_gateway_class_policy_only_from_the_root_namespace():
    spec = {"targetRefs": [{"kind": "GatewayClass", "group": "gateway.networking.k8s.io",
                            "name": "istio-waypoint"}], "action": "DENY", "rules": [{}]}
    assert _rbac(_policy(spec, ns="istio-system"))[0]
    assert not _rbac(_policy(spec, ns="bookinfo"))[0]


def test_invalid_policy_denies_all_targeted_traffic_whatever_its_action():
    bad = _policy({"targetRefs": [SVC], "action": "ALLOW",
                   "rules": [{"to": [{"operation": {"paths": ["/a*b"]}}]}]})
    out, issues = _rbac(bad)
    deny = out[authz.RBAC_DENY_FILTER].rbac.rules
    assert list(deny.policies) == ["ns[bookinfo]-policy[p]-invalid"]
    assert deny.policies["ns[bookinfo]-policy[p]-invalid"].permissions[0].any
    assert any(i.reason == "FailClosed" for i in issues)
    assert _rbac(bad, service="ratings")[0] == {}


def test_custom_policy_denies_what_it_selects():
    p = _policy({"targetRefs": [SVC], "action": "CUSTOM", "provider": {"name": "ext"},
                 "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]})
    out, issues = _rbac(p)
    rules = out[authz.RBAC_CUSTOM_FILTER].rbac.rules
    assert rules.action == rules.DENY and list(rules.policies) == ["ns[bookinfo]-policy[p]-rule[0]"]
    assert any(i.path == "spec.action" for i in issues)


def test_dry_run_policy_is_not_enforced_and_reported():
    p = _policy({"targetRefs": [SVC], "action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "true"})
    out, issues = _rbac(p)
    assert out == {}
    assert any("dry-run" in i.message for i in issues)


def test_policy_change_is_a_route_change_only():
    base = translate(snapshot_from_text(BASE), WAYPOINT).resources
    with_policy = translate(snapshot_from_text(BASE + _policy({"targetRefs": [GW], "action": "DENY",
                                                               "rules": [{}]})), WAYPOINT).resources
    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert {n: m.SerializeToString(deterministic=True) for n, m in base.of_type(lds).items()} == \
        {n: m.SerializeToString(deterministic=True) for n, m in with_policy.of_type(lds).items()}
    rds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert base.of_type(rds) != with_policy.of_type(rds)
    assert "AuthorizationPolicy/bookinfo/p" in listener_route_sources(with_policy, 8080)
