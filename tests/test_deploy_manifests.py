"""deploy/ validated offline: every manifest against the Kubernetes schemas (kubernetes-validate), the
kustomization lists exactly the files present, the Deployment/Service shape the issue asks for, and RBAC
equal to what the code uses (each module declares its API calls in an RBAC_RULES table)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from istiod_lite.ops import leader, status_writer, waypoint_objects
from istiod_lite.sources import kube_kinds

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "base"
K8S_VERSION = "1.33"


def docs() -> list[dict]:
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    out = []
    for name in kust["resources"]:
        out.extend(d for d in yaml.safe_load_all((BASE / name).read_text()) if d)
    return out


def by_kind(kind: str) -> list[dict]:
    return [d for d in docs() if d["kind"] == kind]


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == on_disk
    assert kust["namespace"] == "istio-system"


@pytest.mark.parametrize("index", range(len(docs())))
def test_manifest_matches_kubernetes_schema(index):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = docs()[index]
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_catches_mistakes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = yaml.safe_load((BASE / "service.yaml").read_text())
    bad["spec"]["ports"][0]["port"] = "fifteen"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_deployment_and_service_shape():
    [dep] = by_kind("Deployment")
    assert dep["spec"]["replicas"] == 2
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15014}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert {p["containerPort"] for p in c["ports"]} == {15010, 15014}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "istiod-lite"
    [svc] = by_kind("Service")
    assert {p["port"] for p in svc["spec"]["ports"]} == {15010, 15014}
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # the CLI accepts the Deployment's arguments
    from istiod_lite.cli import _parser

    args = _parser().parse_args(c["args"])
    assert args.command == "serve" and args.in_cluster


def _granted() -> set[tuple[str, str, str]]:
    out = set()
    for role in by_kind("ClusterRole") + by_kind("Role"):
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


def _needed() -> set[tuple[str, str, str]]:
    out = set()
    for table in (kube_kinds.RBAC_RULES, status_writer.RBAC_RULES, leader.RBAC_RULES, waypoint_objects.RBAC_RULES):
        for group, resource, verbs in table:
            for v in verbs:
                out.add((group, resource, v))
    return out


def test_rbac_grants_exactly_what_the_code_uses():
    granted, needed = _granted(), _needed()
    assert not needed - granted, f"the code needs permissions deploy/ does not grant: {sorted(needed - granted)}"
    assert not granted - needed, f"deploy/ grants permissions no code uses: {sorted(granted - needed)}"
    assert not any("*" in t for t in granted)


def test_leases_are_namespaced_not_cluster_wide():
    [cluster_role] = by_kind("ClusterRole")
    assert not any("leases" in r["resources"] for r in cluster_role["rules"])
    [binding] = by_kind("RoleBinding")
    [role] = by_kind("Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == by_kind("ServiceAccount")[0]["metadata"]["name"]


def test_rbac_tables_match_the_calls_the_code_makes():
    """The tables are not decoration: each API path the code calls maps to a declared rule."""
    assert ("", "pods", ("list", "watch")) in kube_kinds.RBAC_RULES
    assert {k.plural for k in (*kube_kinds.KINDS, kube_kinds.WAYPOINT_DEPLOYMENTS)} == \
        {r for _, r, _ in kube_kinds.RBAC_RULES}
    assert {f"{p}/status" for _, _, p in status_writer.STATUS_KINDS.values()} == \
        {r for _, r, _ in status_writer.RBAC_RULES}


def test_dockerfile_runs_the_cli():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["istiod-lite"]' in text and "EXPOSE 15010 15014" in text


def _rbac_of(method: str, path: str, query: dict, content_type: str) -> set[tuple[str, str, str]]:
    """The (apiGroup, resource[/subresource], verb) a request needs on a real API server."""
    parts = [p for p in path.split("/") if p]
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if method == "GET":
        verb = "get" if named else ("watch" if query.get("watch") in ("true", "True", "1") else "list")
        return {(group, resource, verb)}
    verbs = {"POST": {"create"}, "PUT": {"update"}, "DELETE": {"delete"}, "PATCH": {"patch"}}[method]
    if content_type == "application/apply-patch+yaml":
        verbs = verbs | {"create"}  # server-side apply of a missing object creates it
    return {(group, resource, v) for v in verbs}


async def test_every_request_the_code_makes_is_declared_and_granted():
    """Run the informers, the elector, the applier and the status writer against the fake API server, and
    check each recorded request against the RBAC tables and deploy/'s roles (the tables are not decoration)."""
    import asyncio

    from istiod_lite.model.store import ConfigStore, snapshot_from_text
    from istiod_lite.ops.status_writer import StatusWriter, compute_statuses
    from istiod_lite.ops.waypoint_objects import WaypointApplier, desired_objects
    from istiod_lite.ops.waypoint_readiness import DeploymentReadiness
    from istiod_lite.sources.kube import KubeSource
    from testsupport.fake_apiserver import FakeApiServer

    config = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: lite, namespace: shop, uid: 0b7f6c2e-8d1a-4c3b-9e5f-112233445566}
spec: {gatewayClassName: istiod-lite-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: lite}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec: {hosts: [cart], http: [{route: [{destination: {host: cart}}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.0.0.20, ports: [{name: http, port: 80}]}
"""
    fake = FakeApiServer().start()
    api = fake.api_client()
    tasks = []
    try:
        for doc in yaml.safe_load_all(config):
            fake.upsert(doc)
        readiness = DeploymentReadiness()
        sources = [(KubeSource(api, watch_timeout=30), ConfigStore()),
                   (KubeSource(api, kinds=(kube_kinds.WAYPOINT_DEPLOYMENTS,), watch_timeout=30), readiness)]
        tasks = [asyncio.create_task(src.run(sink)) for src, sink in sources]
        kinds = [k.kind for k in kube_kinds.KINDS] + ["Deployment"]
        for _ in range(500):
            if all(src.synced for src, _ in sources) and all(fake.watch_count.get(k) for k in kinds):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("informers never synced and watched")
        elector = leader.LeaderElector(api, "istio-system", "istiod-lite-leader", "pod-a")
        assert await asyncio.to_thread(elector.step)
        snap = snapshot_from_text(config)
        await asyncio.to_thread(WaypointApplier(api).apply, desired_objects(snap.waypoints()))
        written = await asyncio.to_thread(StatusWriter(api).write, compute_statuses(snap, []))
        assert written, "the status writer wrote something"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        api.close()
        fake.stop()
    used = set()
    for r in fake.requests:
        used |= _rbac_of(r.method, r.path, r.query, r.content_type)
    assert not used - _needed(), f"requests not declared in an RBAC_RULES table: {sorted(used - _needed())}"
    assert not used - _granted(), f"requests deploy/ does not grant: {sorted(used - _granted())}"
    unused = _needed() - used
    # declared but not exercised here: only the Lease update (a renewal) and the status verbs of kinds this
    # scenario does not write
    assert unused == {("coordination.k8s.io", "leases", "update"),
                      ("networking.istio.io", "destinationrules/status", "get"),
                      ("networking.istio.io", "destinationrules/status", "patch"),
                      ("security.istio.io", "authorizationpolicies/status", "get"),
                      ("security.istio.io", "authorizationpolicies/status", "patch")}, sorted(unused)


def _json_patch(doc: dict, ops: list[dict]) -> dict:
    """The `add` operations of RFC 6902 that deploy/ overlays use."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = [p for p in op["path"].split("/") if p]
        target = out
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target.append(copy.deepcopy(op["value"])) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return out


def test_beside_istio_overlay():
    """deploy/beside-istio: only our GatewayClass, Istio's plug-in CA mounted as --ca-dir, and no Namespace
    (istio-system belongs to Istio: `kubectl delete -k` must never remove it)."""
    overlay = ROOT / "deploy" / "beside-istio"
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../base"]
    [patch_ref, delete_ns] = kust["patches"]
    assert patch_ref["target"]["kind"] == "Deployment"
    assert yaml.safe_load(delete_ns["patch"])["kind"] == "Namespace"
    [dep] = by_kind("Deployment")
    patched = _json_patch(dep, yaml.safe_load((overlay / patch_ref["path"]).read_text()))
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
    [c] = patched["spec"]["template"]["spec"]["containers"]
    from istiod_lite.cli import _gateway_classes, _parser

    args = _parser().parse_args(c["args"])
    assert _gateway_classes(args.gateway_classes) == ("istiod-lite-waypoint",)
    [mount] = c["volumeMounts"]
    assert args.ca_dir == mount["mountPath"] and mount["readOnly"]
    [volume] = patched["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"] and volume["secret"]["secretName"] == "cacerts"


def test_beside_istio_overlay_builds_with_kustomize():
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (kustomize) not installed")
    for overlay in ("deploy/beside-istio", "e2e/ambient/overlay", "e2e/overlay"):
        proc = subprocess.run([kubectl, "kustomize", str(ROOT / overlay)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
        assert ("Namespace" in kinds) == (overlay == "e2e/overlay"), (overlay, kinds)
        assert "Deployment" in kinds


def test_e2e_scripts_parse_and_reference_existing_files():
    import re
    import subprocess

    for script in sorted((ROOT / "e2e").glob("*.sh")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        text = script.read_text()
        for ref in re.findall(r'"\$HERE/([\w./-]+)"', text):
            here = ROOT / "e2e" / ("ambient" if script.name == "ambient.sh" else "")
            assert (here / ref).exists(), f"{script.name} refers to missing {ref}"
    for manifest in sorted((ROOT / "e2e").rglob("*.yaml")):
        assert all(d for d in yaml.safe_load_all(manifest.read_text())), manifest
    from istiod_lite.model.store import snapshot_from_files

    ambient = ROOT / "e2e" / "ambient"
    snap = snapshot_from_files([ambient / "app.yaml", ambient / "waypoint.yaml", ambient / "config.yaml"])
    assert not [i for i in snap.issues if i.is_error], snap.issues
    [wp] = snap.waypoints()
    assert wp.class_name == "istiod-lite-waypoint"
    reviews = snap.service("reviews.ambient-e2e.svc.cluster.local")
    assert reviews is not None and reviews.waypoint == wp.key
