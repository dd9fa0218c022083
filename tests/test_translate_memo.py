"""The per-translation memos of translate/ (cluster and endpoint templates, shared effective policies, RBAC rules
built once per distinct content, the default retry policy) must not leak between resources or translations:
every resource is its own message, names and issue keys stay per object, and the collector pause of
`translate()` restores the caller's gc state."""

from __future__ import annotations

import gc

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import translate
from istiod_lite.xds import types
from testsupport.manifests import SHOP_WAYPOINT_HEADER, shop_service

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")
HEADER = SHOP_WAYPOINT_HEADER


def _service(i: int) -> list[dict]:
    """Service i: same endpoints, DestinationRule policy and AuthorizationPolicy content as every other one;
    the policy also has a field that raises a warning (NoPeerIdentity), so its issues are memoised too."""
    name = f"svc-{i}"
    return shop_service(i, [{"name": "v1", "labels": {"version": "v1"}}]) + [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": name, "namespace": "shop"},
         "spec": {"targetRefs": [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": name}],
                  "action": "ALLOW",
                  "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]},
                            {"to": [{"operation": {"methods": ["GET"]}}]}]}},
    ]


def _messages(result) -> dict:
    """type URL -> name -> message (translate() gives Encoded bytes: each parse is the reader's own copy)."""
    return {t: result.resources.messages(t) for t in result.resources.resources}


def _snapshot(n: int = 3):
    docs = [d for i in range(n) for d in _service(i)]
    return snapshot_from_text(HEADER + "---\n" + yaml.safe_dump_all(docs))


def test_templated_resources_are_separate_messages_with_their_own_names() -> None:
    result = _messages(translate(_snapshot(), WAYPOINT))
    clusters = result[types.CLUSTER]
    names = [f"inbound-vip|9080|http|svc-{i}.shop.example" for i in range(3)]
    assert [clusters[n].name for n in names] == names
    assert len({id(clusters[n]) for n in names}) == 3
    assert all(clusters[n].circuit_breakers.thresholds[0].max_connections.value == 7 for n in names)
    cla = result[types.ENDPOINT]
    assert [cla[n].cluster_name for n in names] == names
    assert [len(cla[n].endpoints[0].lb_endpoints) for n in names] == [2, 2, 2]
    clusters[names[0]].circuit_breakers.thresholds[0].max_connections.value = 99  # a consumer mutating one
    cla[names[0]].endpoints[0].lb_endpoints.add()
    assert clusters[names[1]].circuit_breakers.thresholds[0].max_connections.value == 7
    assert len(cla[names[1]].endpoints[0].lb_endpoints) == 2
    again = _messages(translate(_snapshot(), WAYPOINT))
    assert again[types.CLUSTER][names[0]].circuit_breakers.thresholds[0].max_connections.value == 7
    assert len(again[types.ENDPOINT][names[0]].endpoints[0].lb_endpoints) == 2


def test_equal_policies_keep_their_own_rule_names_and_issue_keys() -> None:
    result = translate(_snapshot(), WAYPOINT)
    routes = result.resources.messages(types.ROUTE)
    for i in range(3):
        vh = routes[f"http.8080/svc-{i}.shop.example"].virtual_hosts[0]
        per_route = rbac_pb2.RBACPerRoute()
        vh.typed_per_filter_config["istiod-lite.rbac.allow"].Unpack(per_route)
        assert sorted(per_route.rbac.rules.policies) == [f"ns[shop]-policy[svc-{i}]-rule[0]",
                                                         f"ns[shop]-policy[svc-{i}]-rule[1]"]
    warned = {i.key for i in result.issues if i.reason == "NoPeerIdentity"}
    assert warned == {ConfigKey("AuthorizationPolicy", "shop", f"svc-{i}") for i in range(3)}


def test_default_retry_policy_is_a_fresh_message_per_route() -> None:
    routes = translate(_snapshot(), WAYPOINT).resources.messages(types.ROUTE)
    a = routes["http.8080/svc-0.shop.example"].virtual_hosts[0].routes[0].route.retry_policy
    b = routes["http.8080/svc-1.shop.example"].virtual_hosts[0].routes[0].route.retry_policy
    assert a == b and a.num_retries.value == 2
    a.num_retries.value = 5
    assert b.num_retries.value == 2
    fresh = translate(_snapshot(), WAYPOINT).resources.messages(types.ROUTE)
    assert fresh["http.8080/svc-0.shop.example"].virtual_hosts[0].routes[0].route.retry_policy.num_retries.value == 2


def test_passthrough_subset_cluster_is_not_eds_even_when_templated() -> None:
    docs = _service(0)
    docs[1]["spec"]["subsets"].append({"name": "pt", "labels": {"version": "v1"},
                                       "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}})
    result = translate(snapshot_from_text(HEADER + "---\n" + yaml.safe_dump_all(docs)), WAYPOINT).resources
    pt = "inbound-vip|9080|http/pt|svc-0.shop.example"
    assert result.messages(types.CLUSTER)[pt].type == cluster_pb2.Cluster.ORIGINAL_DST
    assert pt not in result.resources[types.ENDPOINT]
    assert "inbound-vip|9080|http/v1|svc-0.shop.example" in result.resources[types.ENDPOINT]


def test_translate_restores_the_callers_gc_state() -> None:
    snap = _snapshot(1)
    assert gc.isenabled()
    translate(snap, WAYPOINT)
    assert gc.isenabled()
    gc.disable()
    try:
        translate(snap, WAYPOINT)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_batch_inbound_refs_are_the_memoised_refs() -> None:
    """destinations.wp_inbound_refs (clusters.inbound_refs' batch) and wp_inbound_ref (routes) hand out the same
    ClusterRef objects, whichever asks first, with the names of names.inbound_vip_cluster."""
    from istiod_lite.translate.destination_rules import DestinationRules
    from istiod_lite.translate.destinations import wp_inbound_ref, wp_inbound_refs
    from istiod_lite.translate.options import TranslateOptions
    from istiod_lite.translate.waypoint import resolve

    docs = [d for i in range(2) for d in shop_service(i, [{"name": "v1", "labels": {"version": "v1"}},
                                                          {"name": "v2", "labels": {"version": "v2"}}])]
    snap = snapshot_from_text(HEADER + "---\n" + yaml.safe_dump_all(docs))
    wp, _ = resolve(snap, WAYPOINT, TranslateOptions())
    drs = DestinationRules(wp)
    first, second = wp.services
    rule = drs.for_service(first)
    port = first.ports[0]
    single = wp_inbound_ref(wp, first, port, rule.subsets[1])  # asked by a route before the batch
    batch = wp_inbound_refs(wp, first, port, rule.subsets)
    assert [r.name for r in batch] == [f"inbound-vip|{port.number}|{k}|{first.hostname}"
                                       for k in ("http", "http/v1", "http/v2")]
    assert batch[2] is single and [r.subset for r in batch] == [None, *rule.subsets]
    assert wp_inbound_ref(wp, first, port, None) is batch[0] and wp_inbound_refs(wp, first, port, rule.subsets) == batch
    other = wp_inbound_refs(wp, second, second.ports[0], ())
    assert len(other) == 1 and other[0].service is second and other[0].inbound and other[0] is not batch[0]
