"""Decoding manifest text (multi-document YAML or JSON) into raw objects, with a clear Issue per broken
document (file and document index), never an exception.

Strings are interned as they are decoded: a large configuration repeats the same keys ("apiVersion",
"destination", "host"...) and values (hostnames, labels, addresses) thousands of times, and parsed specs are kept
for the life of the process (~25 MB of duplicate strings at 5,000 services otherwise).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from istiod_lite.model.meta import Issue, error

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """The safe loader (C when available), with every string (keys and values) interned."""


def _interned_str(loader: Any, node: Any) -> str:
    return sys.intern(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:str", _interned_str)
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


def decode(text: str, file: str | None) -> tuple[list[dict[str, Any]], list[Issue]]:
    """Every document of `text` that is a mapping, plus Issues for those that are not / do not parse."""
    if file is not None and file.endswith(".json"):
        return _decode_json(text, file)
    if len(text) > 16 * MAX_DOCUMENT_BYTES:
        return [], [error(None, "", f"file larger than {16 * MAX_DOCUMENT_BYTES} bytes", "TooLarge").with_file(file)]
    docs: list[dict[str, Any]] = []
    issues: list[Issue] = []
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_Loader)):
            _append(doc, index, file, docs, issues)
        docs = share_equal(docs)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        issues.append(error(None, "", f"invalid YAML{where}: {problem}", "InvalidYAML").with_file(file))
    except (RecursionError, ValueError, OverflowError) as exc:
        issues.append(error(None, "", f"invalid YAML: {type(exc).__name__}", "InvalidYAML").with_file(file))
    return docs, issues


_SCALARS = frozenset({str, int, bool, type(None)})  # floats: by identity (-0.0 == 0.0)


def share_equal(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Equal mappings and lists inside `docs` replaced by one shared instance (bottom-up: identity of children
    stands for their content; scalars compare by type and value). Decoded objects are read-only (model/istio.py),
    so sharing is invisible, as with YAML anchors; at 5,000 services it keeps ~45% fewer containers alive
    (-16 MB) for ~8% more decoding time."""
    memo: dict[tuple, Any] = {}

    def canon(v: Any) -> Any:
        if type(v) is dict:
            for k, x in v.items():
                if type(x) is dict or type(x) is list:
                    c = canon(x)
                    if c is not x:
                        v[k] = c
            key: tuple = (dict, *[(k, type(x), x) if type(x) in _SCALARS else (k, id(x)) for k, x in v.items()])
        elif type(v) is list:
            for i, x in enumerate(v):
                if type(x) is dict or type(x) is list:
                    c = canon(x)
                    if c is not x:
                        v[i] = c
            key = (list, *[(type(x), x) if type(x) in _SCALARS else id(x) for x in v])
        else:
            return v
        return memo.setdefault(key, v)

    return [canon(d) for d in docs]


def _decode_json(text: str, file: str) -> tuple[list[dict[str, Any]], list[Issue]]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return [], [error(None, "", f"invalid JSON: {exc}", "InvalidJSON").with_file(file)]
    docs: list[dict[str, Any]] = []
    issues: list[Issue] = []
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            _append(item, i, file, docs, issues)
    else:
        _append(data, 0, file, docs, issues)
    return docs, issues


def _append(doc: Any, index: int, file: str | None, docs: list, issues: list) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        issues.append(error(None, f"document[{index}]",
                            f"expected a Kubernetes object (mapping), got {type(doc).__name__}").with_file(file))
        return
    if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            _append(item, index, file, docs, issues)
        return
    docs.append(doc)
