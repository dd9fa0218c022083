"""Structural validation of manifests against the official CRD schemas (openAPIV3Schema).

The schemas of the kinds istiod-lite reads are extracted from the upstream CRDs (shared/crds) into the
package data file `crd_schemas.json.gz` by `python -m istiod_lite.model.schema PATH...` (`make crd-schemas`).

The walker reports errors with Istio-style field paths (`spec.http[0].route[0].weight`). Unknown fields are
reported as warnings: a Kubernetes API server silently prunes them, we say so instead. CEL rules
(`x-kubernetes-validations`) are not evaluated here; the semantic checks in `validate.py` cover the ones
that matter for translation (durations, regexes, ports).
"""

from __future__ import annotations

import gzip
import json
import sys
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

from istiod_lite.model.meta import ConfigKey, Issue, error, warning

_DATA_FILE = "crd_schemas.json.gz"
# group -> kinds we read (everything else in the CRD files is skipped)
KINDS = {
    "networking.istio.io": {"VirtualService", "DestinationRule", "ServiceEntry"},
    "security.istio.io": {"AuthorizationPolicy"},
    "gateway.networking.k8s.io": {"Gateway", "GatewayClass"},
}


@lru_cache(maxsize=1)
def _schemas() -> dict[str, Any]:
    raw = resources.files("istiod_lite.model").joinpath(_DATA_FILE).read_bytes()
    return json.loads(gzip.decompress(raw))


def schema_for(api_version: str, kind: str) -> dict[str, Any] | None:
    """The openAPIV3Schema for `group/version` + kind, or None if we have none."""
    return _schemas().get(f"{api_version}/{kind}")


def known_versions(kind: str) -> list[str]:
    return sorted(k.rsplit("/", 1)[0] for k in _schemas() if k.rsplit("/", 1)[1] == kind)


def validate(obj: dict[str, Any], key: ConfigKey, schema: dict[str, Any]) -> list[Issue]:
    """Check `spec` (and only spec: metadata/status are not ours) of obj against the schema."""
    spec_schema = schema.get("properties", {}).get("spec")
    if spec_schema is None or "spec" not in obj:
        return []
    return list(_walk(obj["spec"], spec_schema, "spec", key))


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if t is None:
        return True
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(t, object))


def _matches(value: Any, schema: dict[str, Any]) -> bool:
    """Shallow structural match used for oneOf/anyOf/not branches (required + type only)."""
    if "not" in schema and _matches(value, schema["not"]):
        return False
    if "anyOf" in schema and not any(_matches(value, s) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(1 for s in schema["oneOf"] if _matches(value, s)) != 1:
        return False
    if "required" in schema:
        if not isinstance(value, dict) or any(r not in value for r in schema["required"]):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "properties" in schema and isinstance(value, dict):
        if any(k in value and not _matches(value[k], s) for k, s in schema["properties"].items()):
            return False
    return True


def _walk(value: Any, schema: dict[str, Any], path: str, key: ConfigKey) -> Iterator[Issue]:
    if not _type_ok(value, schema):
        want = "int or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        yield error(key, path, f"expected {want}, got {type(value).__name__}")
        return
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(e) for e in schema["enum"])
        yield error(key, path, f"unsupported value {value!r}: must be one of {allowed}")
    if "oneOf" in schema and isinstance(value, dict):
        n = sum(1 for s in schema["oneOf"] if _matches(value, s))
        if n != 1:
            names = sorted({r for s in schema["oneOf"] for r in s.get("required", [])})
            yield error(key, path, f"only one of {', '.join(names)} may be set")
    if "anyOf" in schema and isinstance(value, dict) and not any(_matches(value, s) for s in schema["anyOf"]):
        names = sorted({r for s in schema["anyOf"] for r in s.get("required", [])})
        yield error(key, path, f"one of {', '.join(names)} must be set")
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if "minimum" in schema and value < schema["minimum"]:
            yield error(key, path, f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            yield error(key, path, f"must be <= {schema['maximum']}")
        if schema.get("format") == "int32" and not (-(2**31) <= value < 2**31):
            yield error(key, path, "out of int32 range")
        if schema.get("format") == "uint32" and not (0 <= value < 2**32):
            yield error(key, path, "out of uint32 range")
        return
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield error(key, path, f"longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield error(key, path, f"shorter than {schema['minLength']} characters")
        return
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield error(key, path, f"more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield error(key, path, f"at least {schema['minItems']} item(s) required")
        items = schema.get("items")
        if items:
            for i, item in enumerate(value):
                yield from _walk(item, items, f"{path}[{i}]", key)
        return
    if isinstance(value, dict):
        for req in schema.get("required", ()):
            if req not in value:
                yield error(key, f"{path}.{req}", "required field is missing")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            yield error(key, path, f"more than {schema['maxProperties']} entries")
        for name, sub in value.items():
            child = f"{path}.{name}"
            if not isinstance(name, str):
                yield error(key, child, "field names must be strings")
                continue
            if props is not None and name in props:
                yield from _walk(sub, props[name], child, key)
            elif isinstance(extra, dict):
                yield from _walk(sub, extra, f"{path}[{name}]", key)
            elif props is not None and not preserve:
                yield warning(key, child, "unknown field (ignored; Kubernetes would prune it)", "UnknownField")


def extract(paths: list[str]) -> dict[str, Any]:
    """Read CRD YAML files and return {"group/version/Kind": openAPIV3Schema} for the kinds we read."""
    import yaml  # only needed when regenerating the data file

    out: dict[str, Any] = {}
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            for doc in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                group = doc["spec"]["group"]
                kind = doc["spec"]["names"]["kind"]
                if kind not in KINDS.get(group, ()):
                    continue
                for v in doc["spec"]["versions"]:
                    if v.get("served", True):
                        out[f"{group}/{v['name']}/{kind}"] = _strip(v["schema"]["openAPIV3Schema"])
    return out


def _strip(schema: Any) -> Any:
    """Drop descriptions to keep the data file small."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


if __name__ == "__main__":  # python -m istiod_lite.model.schema CRD.yaml... > writes the package data file
    data = extract(sys.argv[1:])
    target = resources.files("istiod_lite.model").joinpath(_DATA_FILE)
    with open(str(target), "wb") as fh:
        fh.write(gzip.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), mtime=0))
    print(f"wrote {len(data)} schemas to {target}")
