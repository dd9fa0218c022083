"""Golden-file helpers: load a case (input.yaml -> snapshot, waypoint under test), render a TranslateResult to
the YAML files of expected/ (listeners, scoped_routes, routes, clusters, endpoints, issues), compare or rewrite them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.translate import TranslateResult, translate
from istiod_lite.xds import types

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
FILES = {"listeners": types.LISTENER, "scoped_routes": types.SCOPED_ROUTE, "routes": types.ROUTE,
         "clusters": types.CLUSTER, "endpoints": types.ENDPOINT}
_WAYPOINT_COMMENT = re.compile(r"^#\s*waypoint:\s*([\w.-]+)/([\w.-]+)\s*$", re.MULTILINE)


def cases() -> list[str]:
    return sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / "input.yaml").is_file())


def load_case(name: str) -> tuple[ConfigSnapshot, ConfigKey]:
    """The snapshot of tests/golden/<name>/input.yaml and the waypoint under test: `# waypoint: ns/name`, else
    the first waypoint Gateway in the file."""
    text = (GOLDEN_DIR / name / "input.yaml").read_text(encoding="utf-8")
    snapshot = snapshot_from_text(text, file="input.yaml")
    m = _WAYPOINT_COMMENT.search(text)
    if m:
        return snapshot, ConfigKey("Gateway", m.group(1), m.group(2))
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "Gateway" and \
                (doc.get("spec") or {}).get("gatewayClassName") in ("istio-waypoint", "istiod-lite-waypoint"):
            md = doc["metadata"]
            return snapshot, ConfigKey("Gateway", md.get("namespace") or "default", md["name"])
    raise AssertionError(f"golden case {name}: no waypoint Gateway in input.yaml")


def translate_case(name: str) -> tuple[ConfigSnapshot, TranslateResult]:
    snapshot, waypoint = load_case(name)
    return snapshot, translate(snapshot, waypoint)


def to_dict(msg) -> dict[str, Any]:
    """A resource (message or xds.types.Encoded) as a dict."""
    return json.loads(json_format.MessageToJson(types.as_message(msg), preserving_proto_field_name=True,
                                                sort_keys=True))


def _issue(i: Issue) -> dict[str, Any]:
    return {"object": str(i.key) if i.key else "", "path": i.path, "severity": i.severity.value,
            "reason": i.reason, "message": i.message}


def render(snapshot: ConfigSnapshot, result: TranslateResult) -> dict[str, str]:
    """file name -> YAML text, for every expected file."""
    out = {}
    for fname, type_url in FILES.items():
        res = result.resources.of_type(type_url)
        docs = [to_dict(res[name]) for name in sorted(res)]
        out[f"{fname}.yaml"] = yaml.safe_dump(docs, sort_keys=False, width=120) if docs else "[]\n"
    issues = {
        "parse": [_issue(i) for i in snapshot.issues],
        "translate": [_issue(i) for i in result.issues],
        "sources": {f"{types.SHORT_NAMES[t]} {n}": list(v) for (t, n), v in sorted(result.resources.sources.items())},
    }
    out["issues.yaml"] = yaml.safe_dump(issues, sort_keys=False, width=120)
    return out


def expected(name: str) -> dict[str, str]:
    folder = GOLDEN_DIR / name / "expected"
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()}


def write(name: str, files: dict[str, str]) -> None:
    """Rewrite expected/ with exactly `files` (stale files removed)."""
    folder = GOLDEN_DIR / name / "expected"
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        if p.is_file() and p.name not in files:
            p.unlink()
    for fname, text in files.items():
        (folder / fname).write_text(text, encoding="utf-8")
