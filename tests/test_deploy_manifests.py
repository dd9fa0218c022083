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
    assert {k.plural for k in kube_kinds.KINDS} == {r for _, r, _ in kube_kinds.RBAC_RULES}
    assert {f"{p}/status" for _, _, p in status_writer.STATUS_KINDS.values()} == \
        {r for _, r, _ in status_writer.RBAC_RULES}


def test_dockerfile_runs_the_cli():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["istiod-lite"]' in text and "EXPOSE 15010 15014" in text
