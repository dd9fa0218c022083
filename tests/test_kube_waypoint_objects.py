"""Waypoint ServiceAccount / ConfigMap / Deployment / Service for a Gateway: golden files
(tests/golden_waypoint_objects/<case>/{input,expected}.yaml; UPDATE_GOLDEN=1 rewrites them), field checks,
and the server-side-apply applier against the fake API server."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import os
import re
from pathlib import Path

import pytest
import yaml

from istiod_lite.model.store import snapshot_from_text
from istiod_lite.ops.waypoint_objects import (RBAC_RULES, WaypointApplier, WaypointOptions, desired_objects,
                                              gateway_class, parse_classes, waypoint_objects)

GOLDEN = Path(__file__).resolve().parent / "golden_waypoint_objects"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").is_file())


def load(case: str):
    text = (GOLDEN / case / "input.yaml").read_text()
    m = re.search(r"^# options: (.*)$", text, re.MULTILINE)
    options = WaypointOptions(**json.loads(m.group(1))) if m else WaypointOptions()
    [gw] = snapshot_from_text(text).waypoints()
    return gw, options


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    gw, options = load(case)
    rendered = yaml.safe_dump_all(waypoint_objects(gw, options), sort_keys=False)
    expected = GOLDEN / case / "expected.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(rendered)
    assert expected.exists(), f"run UPDATE_GOLDEN=1 to create {expected}"
    assert rendered == expected.read_text(), f"{case}: waypoint objects differ from {expected}"


def test_objects_field_by_field():
    gw, options = load("http-listener")
    sa, cm, dep, svc = waypoint_objects(gw, options)
    assert [o["kind"] for o in (sa, cm, dep, svc)] == ["ServiceAccount", "ConfigMap", "Deployment", "Service"]
    for o in (sa, cm, dep, svc):
        assert o["metadata"]["namespace"] == "bookinfo"
        assert o["metadata"]["ownerReferences"] == [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                                                     "name": "reviews-waypoint",
                                                     "uid": "7e2b3c1d-0000-4000-8000-000000000042"}]
        assert o["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "reviews-waypoint"
        assert o["metadata"]["labels"]["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [c] = pod["spec"]["containers"]
    assert c["image"] == "registry.example.com/envoy:v1.40.0" and dep["spec"]["replicas"] == 2
    assert "--service-node" in c["args"] and "bookinfo/reviews-waypoint~$(POD_NAME)" in c["args"]
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    bootstrap = json.loads(cm["data"]["bootstrap.json"])
    assert bootstrap["node"]["metadata"]["WAYPOINT"] == "bookinfo/reviews-waypoint"
    xds = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert xds["endpoint"]["address"]["socket_address"] == {"address": "istiod-lite.istiod-lite.svc",
                                                            "port_value": 15010}
    assert "delta" in json.dumps(bootstrap["dynamic_resources"]["ads_config"]).lower()
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP", "appProtocol": "http"},
        {"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP", "appProtocol": "all"}]


def test_routing_config_does_not_change_the_objects():
    gw, options = load("istioctl-waypoint")
    text = (GOLDEN / "istioctl-waypoint" / "input.yaml").read_text() + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
"""
    [gw2] = snapshot_from_text(text).waypoints()
    assert waypoint_objects(gw, options) == waypoint_objects(gw2, options)


def test_gateways_without_uid_are_not_deployed():
    text = (GOLDEN / "istioctl-waypoint" / "input.yaml").read_text().replace("  uid: ", "  x-uid: ")
    assert [o["kind"] for o in desired_objects(snapshot_from_text(text).waypoints())] == ["GatewayClass"] * 2


def test_managed_classes_decide_what_is_deployed():
    """Beside Istio (`--gateway-classes istiod-lite-waypoint`) only our class and its waypoints are touched:
    Istio's istio-waypoint GatewayClass and Gateways are left to istiod."""
    both = (GOLDEN / "istioctl-waypoint" / "input.yaml").read_text() + "\n---\n" + \
        (GOLDEN / "third-party-waypoint" / "input.yaml").read_text()
    waypoints = snapshot_from_text(both).waypoints()
    assert len(waypoints) == 2
    lite_only = desired_objects(waypoints, classes=("istiod-lite-waypoint",))
    assert [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in lite_only] == [
        ("GatewayClass", "", "istiod-lite-waypoint"),
        ("ServiceAccount", "shop", "lite-waypoint"), ("ConfigMap", "shop", "lite-waypoint-envoy-bootstrap"),
        ("Deployment", "shop", "lite-waypoint"), ("Service", "shop", "lite-waypoint")]
    assert lite_only[0]["spec"]["controllerName"] == "istiod-lite.io/waypoint-controller"
    assert gateway_class()["spec"]["controllerName"] == "istio.io/mesh-controller"
    standalone = desired_objects(waypoints)
    assert {o["metadata"]["name"] for o in standalone if o["kind"] == "GatewayClass"} == \
        {"istio-waypoint", "istiod-lite-waypoint"}
    assert {o["metadata"]["namespace"] for o in standalone if o["kind"] == "Deployment"} == {"default", "shop"}
    assert parse_classes(" istiod-lite-waypoint ,istiod-lite-waypoint") == (("istiod-lite-waypoint",), None)
    assert "unknown GatewayClass istio" in (parse_classes("istio,istio-waypoint")[1] or "")
    assert parse_classes(",")[1]


def test_third_party_waypoint_objects():
    """What an Istio ambient mesh needs from a third-party waypoint: pods labelled with the Gateway name (how
    istiod recognises waypoint workloads), out of the mesh's own capture, the HBONE port 15008 exposed as
    `mesh` with appProtocol `all`; Istio's managed label is not claimed; no certificate is mounted (the
    waypoint's SPIFFE certificate comes over SDS from istiod-lite)."""
    gw, options = load("third-party-waypoint")
    sa, cm, dep, svc = waypoint_objects(gw, options)
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "lite-waypoint"
    assert pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    for o in (sa, cm, dep, svc, pod):
        assert "gateway.istio.io/managed" not in o["metadata"]["labels"]
    assert all(o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "istiod-lite" for o in (sa, cm, dep, svc))
    assert svc["spec"]["ports"] == [{"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP",
                                     "appProtocol": "all"}]
    assert pod["spec"]["serviceAccountName"] == "lite-waypoint"  # the identity spiffe://TD/ns/shop/sa/lite-waypoint
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["bootstrap"]
    [c] = pod["spec"]["containers"]
    assert c["readinessProbe"]["tcpSocket"]["port"] == 15008  # ready once the HBONE listener is pushed
    sds = json.loads(cm["data"]["bootstrap.json"])["dynamic_resources"]["ads_config"]
    assert sds["transport_api_version"] == "V3"


def test_apply_needs_create_and_patch():
    """Server-side apply of an object that does not exist yet is a create on a real API server."""
    assert all(set(verbs) == {"create", "patch"} for _, _, verbs in RBAC_RULES)


def test_applier_server_side_applies_only_changes(fake):
    gw, options = load("http-listener")
    api = fake.api_client()
    try:
        applier = WaypointApplier(api)
        objs = [gateway_class(), *waypoint_objects(gw, options)]
        assert len(applier.apply(objs)) == 5
        patches = [r for r in fake.requests if r.method == "PATCH"]
        assert {r.content_type for r in patches} == {"application/apply-patch+yaml"}
        assert {(r.query.get("fieldManager"), r.query.get("force")) for r in patches} == {("istiod-lite", "true")}
        assert [r.path for r in patches] == [
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/istio-waypoint",
            "/api/v1/namespaces/bookinfo/serviceaccounts/reviews-waypoint",
            "/api/v1/namespaces/bookinfo/configmaps/reviews-waypoint-envoy-bootstrap",
            "/apis/apps/v1/namespaces/bookinfo/deployments/reviews-waypoint",
            "/api/v1/namespaces/bookinfo/services/reviews-waypoint"]
        assert patches[3].body == objs[3]
        assert fake.get("Deployment", "bookinfo", "reviews-waypoint")["spec"]["replicas"] == 2
        assert applier.apply(objs) == []  # unchanged: nothing sent
        changed = waypoint_objects(gw, dataclasses.replace(options, image="envoyproxy/envoy:v1.40.1"))
        assert applier.apply(changed) == [("Deployment", "bookinfo", "reviews-waypoint")]
        fake.fail("PATCH", "/services/", 500)
        applier.reset()
        assert ("Service", "bookinfo", "reviews-waypoint") not in applier.apply(changed)
        assert applier.failures == 1
    finally:
        api.close()


def test_bootstrap_and_args_are_accepted_by_envoy(tmp_path):
    """The ConfigMap's bootstrap with the Deployment's arguments passes `envoy --mode validate`."""
    gw, options = load("http-listener")
    _, cm, dep, _ = waypoint_objects(gw, dataclasses.replace(options, xds_host="127.0.0.1"))
    path = tmp_path / "bootstrap.json"
    path.write_text(cm["data"]["bootstrap.json"])
    [c] = dep["spec"]["template"]["spec"]["containers"]
    args = [a.replace("/etc/istiod-lite/bootstrap.json", str(path)).replace("$(POD_NAME)", "pod-0") for a in c["args"]]
    envoy = Path(sys.executable).parent / "envoy"
    proc = subprocess.run([str(envoy), "--mode", "validate", *args, "--base-id", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
