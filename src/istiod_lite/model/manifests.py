"""Decoding manifest text (multi-document YAML or JSON) into raw objects, with a clear Issue per broken
document (file and document index), never an exception."""

from __future__ import annotations

import json
from typing import Any

import yaml

from istiod_lite.model.meta import Issue, error

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        issues.append(error(None, "", f"invalid YAML{where}: {problem}", "InvalidYAML").with_file(file))
    except (RecursionError, ValueError, OverflowError) as exc:
        issues.append(error(None, "", f"invalid YAML: {type(exc).__name__}", "InvalidYAML").with_file(file))
    return docs, issues


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
