"""ConfigStore: the raw objects received from sources, grouped by origin, and the snapshots built from them.

Sources call `replace_origin` / `upsert` / `delete`; the store records which keys changed and calls
`on_change(keys)`. `snapshot()` parses (cached per object), joins services, resolves waypoint bindings and
returns an immutable ConfigSnapshot. Each snapshot says which model-level objects changed since the previous one
(`ConfigSnapshot.changed`, relative to `base_version`): raw keys as the sources reported them, except that an
EndpointSlice or Pod change is reported as a change of the Service(s) whose endpoints it feeds (the translator
reads services, not slices). The same store serves the directory source and the Kubernetes source,
so the translator cannot tell where config came from.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from istiod_lite.model import manifests
from istiod_lite.model.builder import SnapshotBuilder
from istiod_lite.model.meta import ConfigKey, Issue, error
from istiod_lite.model.parse import Parsed, object_key, parse_object
from istiod_lite.model.parse_core import KubeEndpointSlice
from istiod_lite.model.snapshot import ConfigSnapshot

ChangeCallback = Callable[[set[ConfigKey]], None]


class ConfigStore:
    def __init__(self, *, root_namespace: str = "istio-system", domain_suffix: str = "cluster.local",
                 on_change: ChangeCallback | None = None) -> None:
        self.root_namespace = root_namespace
        self.domain_suffix = domain_suffix
        self._on_change = on_change
        self._lock = threading.Lock()
        self._objects: dict[str, dict[ConfigKey, tuple[dict[str, Any], str | None]]] = {}
        self._origin_issues: dict[str, list[Issue]] = {}
        self._parsed: dict[tuple[str, ConfigKey], tuple[Parsed | None, tuple[Issue, ...]]] = {}
        self._version = 0
        self._snapshot: ConfigSnapshot | None = None
        self._pending: set[ConfigKey] = set()  # raw keys changed since the last built snapshot
        self._built: ConfigSnapshot | None = None  # the last built snapshot (base of `changed`)
        self._resolved: dict[ConfigKey, Parsed] = {}  # the definition used for each key
        self._key_issues: dict[ConfigKey, list[Issue]] = {}  # parse/duplicate issues of each key
        self._builder = SnapshotBuilder(root_namespace, domain_suffix)

    # ---- sink API (sources.base.ConfigSink) -----------------------------------------------------------
    def replace_origin(self, origin: str, objects: list[tuple[dict[str, Any], str | None]],
                       issues: list[Issue] | tuple[Issue, ...] = ()) -> None:
        new: dict[ConfigKey, tuple[dict[str, Any], str | None]] = {}
        load_issues = list(issues)
        for obj, file in objects:
            key = object_key(obj)
            if key is None:
                _, problems = parse_object(obj, file)
                load_issues.extend(problems)
                continue
            if key in new:
                load_issues.append(error(key, "metadata.name", f"duplicate object (also defined in "
                                                               f"{new[key][1] or origin}); the first one is used",
                                         "Duplicate").with_file(file))
                continue
            new[key] = (obj, file)
        with self._lock:
            old = self._objects.get(origin, {})
            changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            old_issues = self._origin_issues.get(origin, [])
            if new:
                self._objects[origin] = new
            else:
                self._objects.pop(origin, None)
            self._origin_issues[origin] = load_issues
            for k in changed:
                self._parsed.pop((origin, k), None)
            self._pending |= changed
            dirty = bool(changed) or old_issues != load_issues
            if dirty:
                self._bump()
        if dirty:
            self._notify(changed)

    def upsert(self, origin: str, obj: dict[str, Any], file: str | None = None) -> None:
        key = object_key(obj)
        if key is None:
            _, problems = parse_object(obj, file)
            with self._lock:
                self._origin_issues.setdefault(origin, []).extend(problems)
                self._bump()
            self._notify(set())
            return
        with self._lock:
            bucket = self._objects.setdefault(origin, {})
            if bucket.get(key) == (obj, file):
                return
            bucket[key] = (obj, file)
            self._parsed.pop((origin, key), None)
            self._pending.add(key)
            self._bump()
        self._notify({key})

    def delete(self, origin: str, key: ConfigKey) -> None:
        with self._lock:
            bucket = self._objects.get(origin, {})
            if bucket.pop(key, None) is None:
                return
            self._parsed.pop((origin, key), None)
            self._pending.add(key)
            self._bump()
        self._notify({key})

    # ---- snapshots ------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def keys(self) -> set[ConfigKey]:
        with self._lock:
            return {k for bucket in self._objects.values() for k in bucket}

    def snapshot(self) -> ConfigSnapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._build()
            return self._snapshot

    def _bump(self) -> None:
        self._version += 1
        self._snapshot = None

    def _notify(self, keys: set[ConfigKey]) -> None:
        if self._on_change is not None:
            self._on_change(keys)

    def _build(self) -> ConfigSnapshot:
        base = self._built
        if base is None:
            keys = {k for bucket in self._objects.values() for k in bucket}
            self._resolved, self._key_issues = {}, {}
        else:
            keys = self._pending
        previous = {k: self._resolved.get(k) for k in keys}
        for key in keys:
            self._resolve(key)
        parsed = self._resolved
        issues: list[Issue] = []
        for origin in sorted(self._origin_issues):
            issues.extend(self._origin_issues[origin])
        for key in sorted(self._key_issues):
            issues.extend(self._key_issues[key])
        for key in keys:
            if previous.get(key) is not parsed.get(key):
                self._builder.update(key, parsed.get(key))
        changed = None
        if base is not None:
            changed = frozenset(self._model_keys(keys, previous))
        snap = self._builder.build(issues, self._version,
                                   base_version=base.version if base is not None else None, changed=changed)
        if base is not None:
            snap.seed_indexes(base, lambda k: parsed[k].value if k in parsed else None)
        self._pending = set()
        self._built = snap
        return snap

    def _resolve(self, key: ConfigKey) -> None:
        """Which definition of `key` is used (the first, by origin, that parses) and its issues. O(origins)."""
        winner: Parsed | None = None
        found: list[Issue] = []
        for origin in sorted(o for o, bucket in self._objects.items() if key in bucket):
            obj, file = self._objects[origin][key]
            cache_key = (origin, key)
            if cache_key not in self._parsed:
                value, problems = parse_object(obj, file)
                self._parsed[cache_key] = (value, tuple(problems))  # mostly () (one shared empty tuple)
            value, problems = self._parsed[cache_key]
            found.extend(problems)
            if value is None:
                continue
            if winner is not None:
                found.append(error(key, "metadata.name", f"defined twice (in {winner.file or '?'} and "
                                                         f"{file or origin}); the first one is used",
                                   "Duplicate").with_file(file))
                continue
            winner = value
        if winner is None:
            self._resolved.pop(key, None)
        else:
            self._resolved[key] = winner
        if found:
            self._key_issues[key] = found
        else:
            self._key_issues.pop(key, None)

    def _model_keys(self, raw: set[ConfigKey], previous: dict[ConfigKey, Parsed | None]) -> set[ConfigKey]:
        """Raw changed keys -> the model objects they change (slices and pods -> their Services)."""
        out: set[ConfigKey] = set()
        for key in raw:
            if key.kind == "EndpointSlice":
                for p in (previous.get(key), self._resolved.get(key)):
                    if p is not None and isinstance(p.value, KubeEndpointSlice):
                        out.add(ConfigKey("Service", key.namespace, p.value.service))
            elif key.kind == "Pod":
                out |= self._builder.services_of_pod(key)
            else:
                out.add(key)
        return out


def snapshot_from_text(text: str, file: str = "input.yaml", *, root_namespace: str = "istio-system",
                       domain_suffix: str = "cluster.local") -> ConfigSnapshot:
    """Parse manifest text (one or more YAML documents) into a snapshot. For tests and `translate`."""
    store = ConfigStore(root_namespace=root_namespace, domain_suffix=domain_suffix)
    docs, issues = manifests.decode(text, file)
    store.replace_origin(file, [(d, file) for d in docs], issues)
    return store.snapshot()


def snapshot_from_files(paths: Iterable[Path | str], *, root_namespace: str = "istio-system",
                        domain_suffix: str = "cluster.local") -> ConfigSnapshot:
    store = ConfigStore(root_namespace=root_namespace, domain_suffix=domain_suffix)
    for path in paths:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            store.replace_origin(name, [], [error(None, "", f"cannot read file: {exc}", "Unreadable").with_file(name)])
            continue
        docs, issues = manifests.decode(text, name)
        store.replace_origin(name, [(d, name) for d in docs], issues)
    return store.snapshot()
