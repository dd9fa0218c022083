"""SnapshotCache: per-group (per-waypoint) resources, serialized once per change, with content-hash versions.

`set_resources(group, {type_url: {name: Message}})` serializes each resource once, hashes it into a version,
and pre-builds the wire frames both ADS flavours need (SotW: repeated Any; Delta: repeated Resource), so
that responses to any number of streams are byte concatenations of these frames. Unchanged resources keep
their existing entry object (no re-serialization downstream).

Serialize once per change: the cache remembers, per group, the message object each entry was last built or
confirmed from. When `set_resources` is handed the very same object again (identity, as incremental translation
does for resources a change did not touch), the entry is reused without serializing or hashing; when every
entry of a type is unchanged the type's `TypeResources` (and its aggregate version) is reused too, so an
unchanged push costs O(dict lookups).
Contract: a message handed to the cache is never mutated afterwards (translation builds new messages).
An equal but different object is serialized and hashed as before (the version still decides "changed").
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from istiod_lite.xds import wire
from istiod_lite.xds.types import CLUSTER


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One serialized resource: version (content hash), the `google.protobuf.Any` bytes, and the frames."""

    name: str
    version: str
    any_bytes: bytes
    sotw_frame: bytes  # DiscoveryResponse.resources (field 2) entry
    delta_frame: bytes  # DeltaDiscoveryResponse.resources (field 2) entry: Resource{name, version, resource}
    eds_name: str | None = None  # clusters: the ClusterLoadAssignment name their endpoints come from


def make_entry(type_url: str, name: str, message: Message, previous: CacheEntry | None = None) -> CacheEntry:
    """Serialize `message` once; reuse `previous` when the content (hence the version) is unchanged.

    (`SnapshotCache.set_resources` skips this call entirely for the very object it was last given.)"""
    value = message.SerializeToString(deterministic=True)
    version = content_hash(value)
    if previous is not None and previous.version == version and previous.name == name:
        return previous
    any_bytes = wire.ld(1, type_url.encode()) + wire.ld(2, value)
    resource = wire.ld_str(3, name) + wire.ld_str(1, version) + wire.ld(2, any_bytes)
    eds_name = None
    if type_url == CLUSTER:
        eds_name = message.eds_cluster_config.service_name or name  # type: ignore[attr-defined]
    return CacheEntry(name, version, any_bytes, wire.ld(2, any_bytes), wire.ld(2, resource), eds_name)


class TypeResources(Mapping[str, CacheEntry]):
    """Immutable name -> CacheEntry for one type URL, with an aggregate `version` over all entries."""

    __slots__ = ("_entries", "version")

    def __init__(self, entries: Mapping[str, CacheEntry]):
        self._entries = dict(sorted(entries.items()))
        self.version = aggregate_version(self._entries.values())

    def __getitem__(self, name: str) -> CacheEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TypeResources(version={self.version!r}, names={list(self._entries)!r})"


def aggregate_version(entries) -> str:
    h = hashlib.blake2b(digest_size=8)
    for e in sorted(entries, key=lambda e: e.name):
        h.update(e.name.encode())
        h.update(b"\0")
        h.update(e.version.encode())
        h.update(b"\n")
    return h.hexdigest()


EMPTY = TypeResources({})


class SnapshotCache:
    """Resources per group; thread-safe for the set/get pair (the app may translate in a worker thread)."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, TypeResources]] = {}
        # group -> type URL -> name -> the message object the entry was last built or confirmed from
        self._messages: dict[str, dict[str, dict[str, Message]]] = {}
        self._lock = threading.Lock()
        self.serializations = 0  # resources serialized so far (tests and metrics read it)

    def set_resources(self, group: str, resources: Mapping[str, Mapping[str, Message]]) -> set[str]:
        """Replace the group's resources; return the type URLs whose content changed.

        A type URL absent from `resources` but present before is treated as now empty (all removed).
        """
        with self._lock:
            old = self._groups.get(group, {})
            old_messages = self._messages.get(group, {})
        new: dict[str, TypeResources] = {}
        changed: set[str] = set()
        serialized = 0
        for type_url, by_name in resources.items():
            previous = old.get(type_url, EMPTY)
            seen = old_messages.get(type_url, {})
            entries: dict[str, CacheEntry] = {}
            identical = len(by_name) == len(previous)  # every entry the very same object as before?
            for name, message in by_name.items():
                before = previous.get(name)
                if before is not None and seen.get(name) is message:
                    entries[name] = before  # same object: same bytes, no serialization
                    continue
                entry = make_entry(type_url, name, message, before)
                serialized += 1
                identical = identical and entry is before
                entries[name] = entry
            if identical:
                new[type_url] = previous  # nothing to sort or hash again
                continue
            typed = TypeResources(entries)
            if typed.version == previous.version and len(typed) == len(previous):
                typed = previous
            else:
                changed.add(type_url)
            new[type_url] = typed
        for type_url, previous in old.items():
            if type_url not in new and len(previous):
                changed.add(type_url)
        messages = {type_url: dict(by_name) for type_url, by_name in resources.items()}
        with self._lock:
            self._groups[group] = new
            self._messages[group] = messages
            self.serializations += serialized
        return changed

    def remove_group(self, group: str) -> None:
        with self._lock:
            self._groups.pop(group, None)
            self._messages.pop(group, None)

    def get(self, group: str) -> Mapping[str, TypeResources]:
        """type URL -> TypeResources (name -> CacheEntry); empty mapping for an unknown group."""
        with self._lock:
            return self._groups.get(group, {})

    def of_type(self, group: str, type_url: str) -> TypeResources:
        return self.get(group).get(type_url, EMPTY)

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._groups)
