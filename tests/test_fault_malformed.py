"""1,000 malformed documents (truncated YAML, wrong types, huge strings, deep nesting, unknown kinds, bad
values): each is rejected with an error naming its file (and object and field path when it has them), no
exception escapes, and the valid objects next to them are served unchanged. In-process (ConfigStore +
translate) for speed, plus one check against a running istiod-lite and Envoy."""

from __future__ import annotations

import copy
import json
import itertools
from pathlib import Path

import pytest
import yaml

from istiod_lite.model import manifests as decode_manifests
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import translate
from testsupport import manifests
from testsupport.procs import wait_until
from testsupport.stack import Factories, Traffic, all_in_sync, get_json, start_stack

WAYPOINT = ConfigKey("Gateway", "default", "waypoint")
PORTS = {"reviews-v1": 20001, "reviews-v2": 20002, "ratings": 20003}
JUNK = "junk"  # the malformed objects' namespace


def good_vs(name: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": JUNK},
            "spec": {"hosts": ["reviews"], "http": [{"match": [{"uri": {"prefix": "/a"}}], "timeout": "1s",
                                                     "route": [{"destination": {"host": "reviews", "subset": "v1"},
                                                                "weight": 100}]}]}}


def good_dr(name: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": JUNK},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}


def good_ap(name: str) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": JUNK},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}}


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


# (template, field path, bad value): wrong types and invalid values at known places
_WRONG = [
    (good_vs, ("spec", "hosts"), 5), (good_vs, ("spec", "hosts"), "reviews"), (good_vs, ("spec", "http"), "x"),
    (good_vs, ("spec", "http", 0, "timeout"), 5), (good_vs, ("spec", "http", 0, "timeout"), "5 years"),
    (good_vs, ("spec", "http", 0, "route", 0, "weight"), "abc"), (good_vs, ("spec", "http", 0, "route", 0, "weight"), -3),
    (good_vs, ("spec", "http", 0, "route"), {"a": 1}), (good_vs, ("spec", "http", 0, "match", 0, "uri"), {"regex": "(a"}),
    (good_vs, ("spec", "http", 0, "route", 0, "destination"), None),
    (good_vs, ("spec", "http", 0, "route", 0, "destination", "port"), {"number": 70000}),
    (good_vs, ("metadata", "name"), "Not_A_Name"), (good_vs, ("metadata", "name"), ["x"]),
    (good_vs, ("spec",), []), (good_dr, ("spec", "host"), 7), (good_dr, ("spec", "subsets"), {"v1": 1}),
    (good_dr, ("spec", "subsets", 0, "labels"), ["version"]), (good_dr, ("spec", "trafficPolicy"), "fast"),
    (good_dr, ("spec", "subsets", 0, "name"), None),
    (good_ap, ("spec", "action"), "MAYBE"), (good_ap, ("spec", "rules"), "all"),
    (good_ap, ("spec", "rules", 0, "to", 0, "operation", "paths"), "/x"),
    (good_ap, ("spec", "rules", 0, "to"), 3),
]


def malformed(n: int = 1000) -> list[tuple[str, str]]:
    """`n` (category, text) documents, each invalid."""
    out: list[tuple[str, str]] = []
    templates = itertools.cycle([good_vs, good_dr, good_ap])
    i = 0
    while len(out) < n:
        i += 1
        tmpl = next(templates)
        name = f"bad-{i}"
        kind = i % 7
        if kind == 0:  # truncated YAML, cut inside an unterminated flow collection / quote
            text = yaml.safe_dump(tmpl(name), sort_keys=False)
            cut = (i * 37) % max(1, len(text) - 1)
            out.append(("truncated", text[:cut] + ("\n  oops: [1, 2" if i % 2 else '\n  oops: "unterminated')))
        elif kind == 1:  # wrong types / invalid values at known paths
            t, path, value = _WRONG[i % len(_WRONG)]
            out.append(("wrong-type", yaml.safe_dump(_set(t(name), path, value), sort_keys=False)))
        elif kind == 2:  # huge strings
            size = 70_000 + i
            where = [("metadata", "name"), ("spec", "hosts"), ("spec", "http", 0, "match", 0, "uri")][i % 3]
            value = {"metadata": "n" * size, "spec": ["h" * size]}.get(where[0]) if len(where) == 2 else \
                {"regex": "(" * size}
            doc = _set(good_vs(name), where, value)
            out.append(("huge", json.dumps(doc, indent=1)))  # JSON is YAML, and far faster to emit
        elif kind == 3:  # deep nesting
            depth = 300 + i
            out.append(("deep", f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: "
                                f"{{name: {name}, namespace: {JUNK}}}\nspec:\n  hosts: [reviews]\n  http: "
                        + "[" * depth + "]" * depth + "\n"))
        elif kind == 4:  # unknown kinds and apiVersions
            doc = tmpl(name)
            doc["kind"] = ["Frobnicator", "virtualservice", "VirtualServce"][i % 3]
            if i % 2:
                doc["apiVersion"] = "example.com/v9"
            out.append(("unknown-kind", yaml.safe_dump(doc, sort_keys=False)))
        elif kind == 5:  # not an object / missing identity
            out.append(("shape", ["- just\n- a list\n", "42\n", "kind: VirtualService\n",
                                  "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {}\nspec: {}\n",
                                  "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: default}\nspec: 3\n"
                                  ][i % 5]))
        else:  # required parts missing or empty
            doc = tmpl(name)
            spec = doc["spec"]
            if tmpl is good_vs:
                spec.pop("hosts") if i % 2 else spec["http"][0].pop("route")
            elif tmpl is good_dr:
                spec.pop("host") if i % 2 else spec["subsets"][0].pop("name")
            else:
                spec["rules"] = [{"to": [{"operation": {"methods": [7]}}]}] if i % 2 else {"rules": 1}
            out.append(("missing-required", yaml.safe_dump(doc, sort_keys=False)))
    return out


def valid_store(store: ConfigStore, directory: Path) -> None:
    files = manifests.demo_files(18080, PORTS)
    for name, docs in files.items():
        store.replace_origin(str(directory / name), [(d, str(directory / name)) for d in docs], [])


def test_1000_malformed_documents_are_each_rejected_and_the_valid_ones_served(tmp_path):
    store = ConfigStore()
    valid_store(store, tmp_path)
    baseline = translate(store.snapshot(), WAYPOINT).resources.resources
    bad = malformed(1000)
    assert len(bad) == 1000 and {c for c, _ in bad} == {"truncated", "wrong-type", "huge", "deep", "unknown-kind",
                                                       "shape", "missing-required"}
    for i, (category, text) in enumerate(bad):
        name = f"/config/bad-{i:04d}-{category}.yaml"
        docs, issues = decode_manifests.decode(text, name)
        store.replace_origin(name, [(d, name) for d in docs], issues)
    snapshot = store.snapshot()
    by_file: dict[str, list] = {}
    for issue in snapshot.issues:
        if issue.file:
            by_file.setdefault(issue.file, []).append(issue)
    missing = []
    for i, (category, _) in enumerate(bad):
        file = f"/config/bad-{i:04d}-{category}.yaml"
        found = by_file.get(file, [])
        if category == "unknown-kind":
            # kinds istiod-lite does not read are reported and ignored (a directory may hold Deployments...)
            ok = any(i.reason == "UnsupportedKind" and i.key and i.key.kind in i.message for i in found)
        else:
            ok = any(i.is_error for i in found)
        if not ok:
            missing.append((file, [str(i)[:200] for i in found]))
    assert not missing, f"{len(missing)} malformed files accepted, e.g. {missing[:5]}"
    for file, issues in by_file.items():
        for issue in issues:
            text = str(issue)
            assert text.startswith(file) and issue.message, text
            assert len(issue.message) < 2000, f"unreadable error ({len(issue.message)} chars): {text[:200]}..."
            if "wrong-type" in file or "missing-required" in file:
                assert issue.key is not None and issue.path, text  # names the object and the field
    # every malformed route/destination object is absent (an invalid AuthorizationPolicy is kept on purpose:
    # authz fails closed); the valid objects translate exactly as before
    assert not any(c.key.name.startswith("bad-") for c in (*snapshot.virtual_services, *snapshot.destination_rules))
    after = translate(snapshot, WAYPOINT)
    assert after.resources.resources == baseline


@pytest.mark.parametrize("count", [100])
def test_running_server_keeps_serving_next_to_malformed_files(tmp_path, count):
    f = Factories(tmp_path)
    try:
        stack = start_stack(f, tmp_path)
        istiod = stack.istiod
        before = istiod.config_dump("default/waypoint")
        with Traffic(stack.listener_port, host="reviews") as traffic:
            for i, (category, text) in enumerate(malformed(count)):
                (stack.config_dir / f"bad-{i:03d}-{category}.yaml").write_text(text)
            wait_until(lambda: len({i["file"] for i in get_json(istiod, "/debug/issues")
                                    if i["file"] and "/bad-" in i["file"]}) == count, 30, message=stack.diagnostics)
            traffic.wait_more(30)
        assert traffic.failures == [], traffic.failures[:5]
        istiod.proc.check_alive()
        assert istiod.config_dump("default/waypoint") == before
        assert all_in_sync(istiod)
    finally:
        f.stop_all()
