"""NACK attribution and last-good pinning: "never push what Envoy rejects, and say whose fault it is".

`RejectionTracker` remembers, per proxy group (waypoint), the messages handed to the xDS cache and which of
them proxies ACKed (the last good version of each resource). When a proxy NACKs a response, the resources
of that response that differ from their last good version are *pinned*: until one of the input objects that
produced them changes, the app keeps serving the last good message (or leaves the resource out if Envoy
never accepted any version of it), while every other resource keeps updating. Each pin becomes an Issue with
reason "RejectedByEnvoy" and Envoy's error text on every contributing input object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping


from istiod_lite.model.meta import ConfigKey, Issue, error
from istiod_lite.xds.server import NackInfo
from istiod_lite.xds.types import SHORT_NAMES, Resource

REASON = "RejectedByEnvoy"
_HISTORY = 4  # versions of each resource remembered between the push and its ACK
_MAX_ERROR = 2000  # Envoy's error text can embed whole resources: keep the report readable

ResourceMap = Mapping[str, Mapping[str, Resource]]  # type URL -> name -> message or Encoded (xds/types.py)


@dataclass(frozen=True)
class Pin:
    group: str
    type_url: str
    name: str
    rejected_version: str
    good: Resource | None  # last ACKed message (or Encoded); None: Envoy never accepted this resource (left out)
    good_version: str | None
    sources: tuple[str, ...]  # input objects ("Kind/ns/name") that produced the resource
    error: str
    node_id: str
    since: float

    def describe(self) -> dict:
        return {"waypoint": self.group, "type": SHORT_NAMES.get(self.type_url, self.type_url), "name": self.name,
                "rejected_version": self.rejected_version, "serving": self.good_version or "(left out)",
                "objects": list(self.sources), "error": self.error, "node": self.node_id}


def parse_key(text: str) -> ConfigKey | None:
    """"Kind/ns/name" or "Kind/name" (cluster-scoped) -> ConfigKey."""
    parts = text.split("/")
    if len(parts) == 3:
        return ConfigKey(*parts)
    if len(parts) == 2:
        return ConfigKey(parts[0], "", parts[1])
    return None


class RejectionTracker:
    """Per-push cost is O(changed): `apply` is free for a group without pins (the very mapping comes back) and
    overlays only the pinned names otherwise; `served` keeps references to the cache's immutable per-type
    TypeResources (xds/cache.py) and the served name -> message mappings instead of copying every resource."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        # group -> type URL -> the last _HISTORY distinct (versions, messages) pairs handed to the cache, newest
        # last: `versions` is the cache's immutable TypeResources (or a name -> version mapping), `messages` the
        # name -> message mapping served with it. References only: no per-resource copies (a 15,000-cluster
        # waypoint used to cost a dict per resource here).
        self._sent: dict[str, dict[str, list[tuple[Mapping[str, Any], Mapping[str, Resource]]]]] = {}
        self._good: dict[str, dict[tuple[str, str], tuple[str, Resource]]] = {}
        self._sources: dict[str, Mapping[tuple[str, str], tuple[str, ...]]] = {}
        self._applied: dict[str, frozenset[tuple[str, str]]] = {}  # group -> (type, name) pinned by the last apply
        self._touched: dict[str, frozenset[tuple[str, str]]] = {}
        self.pins: dict[tuple[str, str, str], Pin] = {}

    # ---- what was served / accepted ----------------------------------------------------------------
    def served(self, group: str, resources: ResourceMap, versions: Mapping[str, Mapping[str, Any]],
               sources: Mapping[tuple[str, str], tuple[str, ...]]) -> None:
        """The messages just handed to the cache for `group`, with the cache's version of each: `versions` is
        type URL -> name -> version string, or the cache's own `SnapshotCache.get(group)` (type URL ->
        TypeResources of CacheEntry). O(types): a type whose versions mapping is the one recorded last time
        costs nothing; a new one is remembered by reference (the cache's TypeResources are immutable)."""
        sent = self._sent.setdefault(group, {})
        for type_url in [t for t in sent if t not in versions]:
            del sent[type_url]
        for type_url, by_version in versions.items():
            history = sent.setdefault(type_url, [])
            by_name = resources.get(type_url, {})
            if history and history[-1][0] is by_version and history[-1][1] is by_name:
                continue
            history.append((by_version, by_name))
            if len(history) > _HISTORY:
                del history[0]
        self._sources[group] = sources

    def acked(self, group: str, type_url: str, upserts: Mapping[str, str], removed: Iterable[str] = ()) -> None:
        history = self._sent.get(group, {}).get(type_url, ())
        good = self._good.setdefault(group, {})
        for name, version in upserts.items():
            for by_version, by_name in reversed(history):  # newest first: the ACK is for a recent response
                value = by_version.get(name)
                if value is not None and (value if isinstance(value, str) else value.version) == version:
                    message = by_name.get(name)
                    if message is not None:
                        good[(type_url, name)] = (version, message)
                        break
        for name in removed:
            good.pop((type_url, name), None)

    def forget_group(self, group: str) -> list[Pin]:
        for state in (self._sent, self._good, self._sources, self._applied, self._touched):
            state.pop(group, None)
        gone = [k for k in self.pins if k[0] == group]
        return [self.pins.pop(k) for k in gone]

    # ---- rejections --------------------------------------------------------------------------------
    def rejected(self, nack: NackInfo) -> list[Pin]:
        """Pin the resources of a NACKed response that differ from their last good version."""
        good = self._good.get(nack.group, {})
        sources = self._sources.get(nack.group, {})
        changed = {n: v for n, v in nack.versions.items()
                   if good.get((nack.type_url, n), ("", None))[0] != v}
        candidates = changed or dict(nack.versions)
        out = []
        for name, version in sorted(candidates.items()):
            key = (nack.group, nack.type_url, name)
            previous = good.get((nack.type_url, name))
            pin = Pin(nack.group, nack.type_url, name, version, previous[1] if previous else None,
                      previous[0] if previous else None, tuple(sources.get((nack.type_url, name), ())),
                      nack.error_detail[:_MAX_ERROR], nack.node_id, self.clock())
            self.pins[key] = pin
            out.append(pin)
        return out

    def release(self, changed: Iterable[ConfigKey | str]) -> list[Pin]:
        """Drop the pins one of whose input objects changed (the next push tries the new content)."""
        names = {str(c) for c in changed}
        gone = [k for k, p in self.pins.items() if names & set(p.sources)]
        return [self.pins.pop(k) for k in gone]

    def apply(self, group: str, resources: ResourceMap) -> ResourceMap:
        """`resources` with every pinned name replaced by its last good message (or left out). Without pins
        for `group` the very same mapping comes back; with pins, the pinned types are overlays (O(pins))."""
        pins = [p for (g, _, _), p in self.pins.items() if g == group]
        now = frozenset((p.type_url, p.name) for p in pins)
        before = self._applied.get(group, frozenset())
        self._touched[group] = now | before
        if now:
            self._applied[group] = now
        else:
            self._applied.pop(group, None)
        if not pins:
            return resources
        by_type: dict[str, dict[str, Resource | None]] = {}
        for pin in pins:
            by_type.setdefault(pin.type_url, {})[pin.name] = pin.good
        out = dict(resources)
        for type_url, overrides in by_type.items():
            out[type_url] = _Overlay(resources.get(type_url, {}), overrides)
        return out

    def touched(self, group: str) -> frozenset[tuple[str, str]]:
        """(type URL, name) whose served message the last `apply` for `group` may have changed compared with
        the apply before it: the names pinned then or now (a pin appeared, stayed or was released)."""
        return self._touched.get(group, frozenset())

    def pinned(self, group: str | None = None) -> list[Pin]:
        return [p for k, p in sorted(self.pins.items()) if group is None or k[0] == group]

    def issues(self) -> list[Issue]:
        out = []
        for pin in self.pinned():
            short = SHORT_NAMES.get(pin.type_url, pin.type_url)
            serving = "the last accepted version" if pin.good is not None else "nothing (never accepted)"
            message = (f"Envoy ({pin.node_id}, waypoint {pin.group}) rejected {short} {pin.name}; serving "
                       f"{serving} until this object changes: {pin.error}")
            keys = [k for k in map(parse_key, pin.sources) if k is not None] or [None]
            out.extend(error(k, "", message, REASON) for k in keys)
        return out


class _Overlay(Mapping):
    """A read-only view of `base` with `overrides` (name -> message, or None: left out) applied."""

    def __init__(self, base: Mapping[str, Resource], overrides: Mapping[str, Resource | None]) -> None:
        self._base = base
        self._over = overrides

    def __getitem__(self, name: str) -> Resource:
        if name in self._over:
            value = self._over[name]
            if value is None:
                raise KeyError(name)
            return value
        return self._base[name]

    def __contains__(self, name: object) -> bool:
        if name in self._over:
            return self._over[name] is not None  # type: ignore[index]
        return name in self._base

    def __iter__(self) -> Iterator[str]:
        over = self._over
        for name in self._base:
            if name not in over or over[name] is not None:
                yield name
        for name, value in over.items():
            if value is not None and name not in self._base:
                yield name

    def __len__(self) -> int:
        n = len(self._base)
        for name, value in self._over.items():
            present = name in self._base
            n += (value is not None) - present
        return n
