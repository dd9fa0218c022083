"""Every Kubernetes YAML document under examples/ and tests/ validates against the upstream CRD schemas
(Istio + Gateway API, /work/shared/crds, found as `<repo>/../shared/crds`); built-in kinds (Namespace,
Service, Pod, EndpointSlice, ServiceAccount, ConfigMap, Secret, Deployment) get a minimal shape check.
Unknown fields are errors (kubectl's strict validation), except where a schema says
`x-kubernetes-preserve-unknown-fields`.

Skipped: golden outputs (any `expected/` folder or `expected*.yaml` file), documents without apiVersion/kind
(not Kubernetes objects), and files whose first lines contain the marker `# schema: invalid-on-purpose`.

A golden input (`tests/golden/<case>/input.yaml`) may be invalid on purpose: a schema error there is accepted
when `expected/issues.yaml` reports an Error for the same object at that field or one enclosing it, so the test
also checks that istiod-lite catches what the CRD schema catches.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

from testsupport import manifests

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO.parent / "shared" / "crds"
MARKER = "schema: invalid-on-purpose"
CORE = {("v1", "Namespace"): False, ("v1", "Service"): True, ("v1", "Pod"): True,
        ("discovery.k8s.io/v1", "EndpointSlice"): True, ("v1", "ServiceAccount"): True, ("v1", "ConfigMap"): True,
        ("v1", "Secret"): True, ("apps/v1", "Deployment"): True}  # built-in kinds (minimal check) -> namespaced


def _strict(schema: Any) -> Any:
    """Copy of an openAPIV3Schema where objects with declared properties reject unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD."""
    if not CRD_DIR.is_dir():
        pytest.fail(f"CRD schemas not found at {CRD_DIR}: CI must copy shared/ next to the repository "
                    "(expected <repo>/../shared/crds/*.yaml)")
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader parses the CRDs 10x faster
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema and version.get("served", True):
                    root = copy.deepcopy(schema)
                    props = root.setdefault("properties", {})
                    for field in ("apiVersion", "kind"):
                        props.setdefault(field, {"type": "string"})
                    props.setdefault("metadata", {"type": "object"})
                    out[(f"{group}/{version['name']}", kind)] = _strict(root)
    if not out:
        pytest.fail(f"no CustomResourceDefinition found in {CRD_DIR}")
    return out


def field_path(parts: Any) -> str:
    """jsonschema's absolute_path -> our Issue path style: spec.http[0].route[1].destination."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems(doc: dict[str, Any]) -> list[str]:
    """Schema problems of one Kubernetes object ([] when valid)."""
    return [f"{obj}: {path or '<root>'}: {msg}" for obj, path, msg in located_problems(doc)]


def located_problems(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(Kind/namespace/name, field path, message) of each schema problem of one object."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return [(str(kind), "metadata.name", "metadata.name is required")]
    obj = f"{kind}/{meta.get('namespace', '')}/{meta['name']}" if meta.get("namespace") else f"{kind}/{meta['name']}"
    if (api, kind) in CORE:
        if CORE[(api, kind)] and "namespace" in meta and not isinstance(meta["namespace"], str):
            return [(obj, "metadata.namespace", "must be a string")]
        return []
    schema = crd_schemas().get((api, kind))
    if schema is None:
        return [(obj, "", f"{api} {kind}: no schema (unknown apiVersion/kind)")]
    validator = jsonschema.Draft7Validator(schema)
    return [(obj, _error_path(e), e.message)
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def _error_path(e: jsonschema.ValidationError) -> str:
    """The field an error is about: for `required` / `additionalProperties` the named child field."""
    parts = list(e.absolute_path)
    if e.validator == "required":
        match = re.match(r"'([^']+)' is a required property", e.message)
        parts += [match.group(1)] if match else []
    elif e.validator == "additionalProperties":
        match = re.search(r"\('([^']+)'", e.message)
        parts += [match.group(1)] if match else []
    return field_path(parts)


def expected_errors(path: Path) -> list[tuple[str, str]]:
    """(object, path) of the Error issues a golden case expects (empty for other files)."""
    issues_file = path.parent / "expected" / "issues.yaml"
    if path.name != "input.yaml" or "golden" not in path.parts or not issues_file.is_file():
        return []
    data = yaml.safe_load(issues_file.read_text()) or {}
    sections = data.values() if isinstance(data, dict) else [data]
    return [(str(i.get("object", "")), str(i.get("path", ""))) for section in sections if isinstance(section, list)
            for i in section if isinstance(i, dict) and i.get("severity") == "Error"]


def _related(schema_path: str, issue_path: str) -> bool:
    """The schema error is at the issue's field or inside it."""
    return (schema_path == issue_path or schema_path.startswith(issue_path + ".")
            or schema_path.startswith(issue_path + "["))


def unexpected_problems(path: Path, doc: dict[str, Any]) -> list[str]:
    expected = expected_errors(path)
    return [f"{obj}: {where or '<root>'}: {msg}" for obj, where, msg in located_problems(doc)
            if not any(obj == e_obj and _related(where, e_path) for e_obj, e_path in expected)]


def yaml_files() -> Iterator[Path]:
    for top in (REPO / "examples", REPO / "tests"):
        for path in sorted(top.rglob("*")):
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            if "expected" in path.relative_to(REPO).parts or path.stem.startswith("expected"):
                continue  # golden outputs
            head = "\n".join(path.read_text(errors="replace").splitlines()[:5])
            if MARKER in head:
                continue
            yield path


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return [d for d in docs if isinstance(d, dict) and "apiVersion" in d and "kind" in d]


FILES = list(yaml_files())


def test_the_examples_are_found():
    names = {p.name for p in FILES}
    assert {"waypoint.yaml", "reviews.yaml", "reviews-routing.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_yaml_file_validates(path):
    errors = [err for doc in k8s_documents(path) for err in unexpected_problems(path, doc)]
    assert not errors, f"{path.relative_to(REPO)}:\n" + "\n".join(errors)


def test_generated_test_manifests_validate():
    """The templates the behaviour tests write into tmp directories are valid too."""
    files = manifests.demo_files(18080, {"reviews-v1": 1, "reviews-v2": 2, "ratings": 3})
    docs = [d for docs in files.values() for d in docs]
    docs.append(manifests.weighted_virtual_service("reviews", {"v1": 0, "v2": 100}))
    errors = [err for doc in docs for err in problems(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("mutate, expected", [
    (lambda vs: vs["spec"]["http"][0]["route"][0]["destination"].pop("host"), "'host' is a required property"),
    (lambda vs: vs["spec"].__setitem__("hostz", ["reviews"]), "Additional properties"),
    (lambda vs: vs["spec"]["http"][0]["route"][0].__setitem__("weight", "eighty"), "is not of type 'integer'"),
    (lambda vs: vs.__setitem__("apiVersion", "networking.istio.io/v9"), "no schema"),
])
def test_the_checker_catches_mistakes(mutate, expected):
    vs = manifests.weighted_virtual_service("reviews", {"v1": 80, "v2": 20})
    assert problems(vs) == []
    mutate(vs)
    assert any(expected in p for p in problems(vs)), problems(vs)


def test_golden_inputs_may_be_invalid_only_where_an_error_issue_is_expected(tmp_path):
    case = tmp_path / "golden" / "bad-vs"
    (case / "expected").mkdir(parents=True)
    vs = manifests.weighted_virtual_service("reviews", {"v1": 100})
    vs["spec"]["http"][0]["route"][0]["destination"].pop("host")
    vs["spec"]["hostz"] = ["x"]
    (case / "input.yaml").write_text(yaml.safe_dump(vs))
    (case / "expected" / "issues.yaml").write_text(yaml.safe_dump({"parse": [
        {"object": "VirtualService/default/reviews", "path": "spec.http[0].route[0].destination.host",
         "severity": "Error"}]}))
    remaining = unexpected_problems(case / "input.yaml", vs)
    assert len(remaining) == 1 and "hostz" in remaining[0], remaining
