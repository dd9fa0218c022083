"""translate() frees its per-translation memos by reference counting when it returns (nothing is left for the
cyclic collector to find), and the sources of clusters and endpoints are shared per distinct set."""

from __future__ import annotations

import gc

import yaml

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import translate
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import Waypoint, resolve
from istiod_lite.xds import types
from testsupport.manifests import SHOP_WAYPOINT_HEADER, shop_service

WAYPOINT = ConfigKey("Gateway", "shop", "waypoint")


def _service(i: int) -> list[dict]:
    return shop_service(i, [{"name": "v1", "labels": {"version": "v1"}},
                            {"name": "v2", "labels": {"version": "v2"},
                             "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}])


def _snapshot(n: int = 3):
    docs = [d for i in range(n) for d in _service(i)]
    return snapshot_from_text(SHOP_WAYPOINT_HEADER + "---\n" + yaml.safe_dump_all(docs))


def test_translate_leaves_no_cyclic_garbage() -> None:
    snap = _snapshot()
    translate(snap, WAYPOINT)  # (first use builds the snapshot's lazy indexes)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        result = translate(snap, WAYPOINT)
        assert not [o for o in gc.get_objects() if isinstance(o, (Waypoint, DestinationRules))]
    finally:
        if was:
            gc.enable()
    assert result.resources.of_type(types.CLUSTER)


def test_cluster_and_endpoint_sources() -> None:
    result = translate(_snapshot(), WAYPOINT)
    src = result.resources.sources
    se, dr = "ServiceEntry/shop/svc-1", "DestinationRule/shop/svc-1"
    for sub in ("", "/v1", "/v2"):
        name = f"inbound-vip|9080|http{sub}|svc-1.shop.example"
        assert src[(types.CLUSTER, name)] == (dr, se)
        assert src[(types.ENDPOINT, name)] == ((dr, se) if sub else (se,))
    assert list(src) == sorted(src)
    c0 = src[(types.CLUSTER, "inbound-vip|9080|http|svc-1.shop.example")]
    assert c0 is src[(types.CLUSTER, "inbound-vip|9080|http/v1|svc-1.shop.example")]


def test_subset_without_policy_shares_the_rule_policy() -> None:
    snap = _snapshot(1)
    wp, _ = resolve(snap, WAYPOINT, TranslateOptions())
    drs = DestinationRules(wp)
    rule = drs.for_service(wp.services[0])
    v1, v2 = rule.subsets
    base = drs.effective(rule, 9080)
    assert drs.effective(rule, 9080, v1) is base
    assert drs.effective(rule, 9080, v2) is not base
    assert drs.effective(rule, 9080, v2)["loadBalancer"] == {"simple": "RANDOM"}
    assert drs.effective(rule, 9080, v2)["connectionPool"] == base["connectionPool"]
    assert v1.labels == (("version", "v1"),) and v1.source == ConfigKey("DestinationRule", "shop", "svc-0")
