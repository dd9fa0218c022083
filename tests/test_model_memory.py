"""Memory-saving representation of the model (issue 6), and that it changes nothing observable: decoded manifests
share equal sub-trees and interned strings yet equal what PyYAML returns; model objects carry no per-instance
dict; ConfigKey strings are shared."""

from __future__ import annotations

import pytest
import yaml

from istiod_lite.model import manifests
from istiod_lite.model.gateway import Gateway, GatewayListener
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, ObjectMeta
from istiod_lite.model.parse import Parsed
from istiod_lite.model.service import Endpoint, Service, ServicePort
from istiod_lite.model.store import ConfigStore, snapshot_from_text

TEXT = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: ns}
spec:
  host: a.ns.example
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: ns}
spec:
  host: b.ns.example
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
kind: Odd
values: [1, true, 1.0, -0.0, 0.0, [1], [true], [0.0], [-0.0], {x: 1}, {x: true}, {x: 1.0}, null, ~]
"""


def test_decoded_documents_equal_pyyaml_and_share_equal_subtrees() -> None:
    docs, issues = manifests.decode(TEXT, "f.yaml")
    assert issues == []
    assert docs == list(yaml.safe_load_all(TEXT))
    a, b, odd = docs
    assert a["spec"]["trafficPolicy"] is b["spec"]["trafficPolicy"]
    assert a["spec"]["subsets"] is b["spec"]["subsets"]
    assert a["spec"] is not b["spec"]  # differ (host)
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]  # interned strings
    # Equal under == but not the same value: never merged (True == 1 == 1.0, -0.0 == 0.0).
    values = odd["values"]
    assert [type(v) for v in values[:5]] == [int, bool, float, float, float]
    assert values[5] is not values[6] and values[5] is not values[7] is not values[8]
    assert repr(values[8]) == "[-0.0]" and repr(values[7]) == "[0.0]"
    assert values[9] is not values[10] and values[9] is not values[11]
    assert type(values[10]["x"]) is bool and type(values[11]["x"]) is float


def test_shared_subtrees_translate_like_separate_ones() -> None:
    """A shared sub-tree is read by two objects: the snapshot keeps both, each with its own host."""
    snap = snapshot_from_text(TEXT)
    hosts = sorted(dr.spec["host"] for dr in snap.destination_rules)
    assert hosts == ["a.ns.example", "b.ns.example"]
    assert snap.destination_rules[0].spec["subsets"] == snap.destination_rules[1].spec["subsets"]


def test_json_manifests_are_not_affected() -> None:
    docs, issues = manifests.decode('{"kind": "List", "items": [{"kind": "A"}, {"kind": "A"}]}', "f.json")
    assert issues == [] and docs == [{"kind": "A"}, {"kind": "A"}]


def test_config_key_strings_are_shared() -> None:
    k1 = ConfigKey("Service", "ns", "name-" + "x" * 20)
    k2 = ConfigKey("Service", "ns", "name-" + "x" * 20)
    assert str(k1) == "Service/ns/name-" + "x" * 20
    assert str(k1) is str(k2)
    assert str(ConfigKey("Namespace", "", "n")) == "Namespace/n"


@pytest.mark.parametrize("obj", [
    ObjectMeta(ConfigKey("Service", "ns", "a")),
    Issue(None, "", "m"),
    Parsed(ConfigKey("Service", "ns", "a"), None),
    IstioConfig(ObjectMeta(ConfigKey("VirtualService", "ns", "a")), {}),
    Gateway(ObjectMeta(ConfigKey("Gateway", "ns", "g")), "istio-waypoint", (GatewayListener("h", 80, "HTTP"),)),
    Service(ObjectMeta(ConfigKey("Service", "ns", "a")), "a.ns", (ServicePort(80),), endpoints=(Endpoint("1.1.1.1"),)),
])
def test_model_objects_have_no_instance_dict(obj: object) -> None:
    assert not hasattr(obj, "__dict__")


def test_store_keeps_issues_of_clean_objects_as_the_shared_empty_tuple() -> None:
    store = ConfigStore()
    docs, _ = manifests.decode(TEXT, "f.yaml")
    store.replace_origin("f.yaml", [(d, "f.yaml") for d in docs[:2]])
    store.snapshot()
    assert all(problems == () for _, problems in store._parsed.values())
