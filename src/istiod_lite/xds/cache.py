"""SnapshotCache: per-group (per-waypoint) resources, serialized once per change, with content-hash versions.

`set_resources(group, {type_url: {name: Message | Encoded}}, changes=None)` serializes each changed resource once
(an `Encoded` resource, xds/types.py, comes serialized: its bytes object becomes the entry's, no copy, no message
kept), hashes it into a version, and pre-builds the small frame heads both ADS flavours need (SotW: repeated Any; Delta:
repeated Resource), so that responses to any number of streams are byte concatenations of cached pieces
(`head + any_bytes`: one copy of each serialized resource is kept, not one per frame).

Serialize once per change: the cache remembers, per group, the object (message or Encoded) each entry was last
built or confirmed from. When `set_resources` is handed the very same object again (identity, as incremental translation
does for resources a change did not touch), the entry is reused without serializing or hashing. With the
`changes` hint (type URL -> names that may differ since the previous call; absent type = unchanged), only those
names are looked at, so a push costs O(changed), not O(resources).

Versions: an entry's version is the hash of its bytes; a type's aggregate `version` is the XOR of its entries'
64-bit (name, version) hashes: order-independent and maintained in O(changed). Each `TypeResources` derived from
the previous one records `base` (that previous one, kept ONE step deep: deriving a newer one drops the older
link), `changed` (names added or whose entry differs) and `removed`, so that a stream in sync with `base` can
diff in O(changed) (xds/delta.py, xds/sotw.py).
Contract: a message handed to the cache is never mutated afterwards (translation builds new messages).
An equal but different object is serialized and hashed as before (the version still decides "changed").
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from istiod_lite.xds import wire
from istiod_lite.xds.types import CLUSTER, Encoded, Resource


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _mix(name: str, version: str) -> int:
    """The entry's share of its type's aggregate version (64 bits)."""
    digest = hashlib.blake2b(name.encode() + b"\0" + version.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _head(field_number: int, payload_len: int) -> bytes:
    """Tag and length of a length-delimited field whose payload follows."""
    return wire.varint((field_number << 3) | 2) + wire.varint(payload_len)


_SOTW_HEADS: dict[int, bytes] = {}  # payload length -> DiscoveryResponse.resources head: one object per length


def _sotw_head(payload_len: int) -> bytes:
    head = _SOTW_HEADS.get(payload_len)
    if head is None:
        if len(_SOTW_HEADS) >= 1 << 16:  # (bounded: resource sizes vary, but not unboundedly)
            _SOTW_HEADS.clear()
        head = _SOTW_HEADS[payload_len] = _head(2, payload_len)
    return head


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One serialized resource: version (content hash), the `google.protobuf.Any` bytes, and frame heads.

    A response carries `sotw_head + any_bytes` (DiscoveryResponse.resources, field 2) or `delta_head + any_bytes`
    (DeltaDiscoveryResponse.resources, field 2: Resource{name, version, resource})."""

    name: str
    version: str
    any_bytes: bytes
    sotw_head: bytes
    delta_head: bytes
    mix: int  # 64-bit hash of (name, version): XORed into the type's aggregate version
    eds_name: str | None = None  # clusters: the ClusterLoadAssignment name their endpoints come from

    @property
    def sotw_frame(self) -> bytes:
        return self.sotw_head + self.any_bytes

    @property
    def delta_frame(self) -> bytes:
        return self.delta_head + self.any_bytes


def make_entry(type_url: str, name: str, message: Resource, previous: CacheEntry | None = None) -> CacheEntry:
    """Serialize `message` once (an `Encoded` is already serialized: its `any_bytes` object is kept as is, not
    copied); reuse `previous` when the content (hence the version) is unchanged.

    (`SnapshotCache.set_resources` skips this call entirely for the very object it was last given.)"""
    if isinstance(message, Encoded):
        value: bytes | memoryview = message.value_view()
        version = content_hash(value)
        if previous is not None and previous.version == version and previous.name == name:
            return previous
        any_bytes = message.any_bytes
    else:
        value = message.SerializeToString(deterministic=True)
        version = content_hash(value)
        if previous is not None and previous.version == version and previous.name == name:
            return previous
        any_bytes = wire.ld(1, type_url.encode()) + wire.ld(2, value)
    fields = wire.ld_str(3, name) + wire.ld_str(1, version)
    inner = _head(2, len(any_bytes))  # Resource.resource (field 2) = the Any
    delta_head = _head(2, len(fields) + len(inner) + len(any_bytes)) + fields + inner
    eds_name = None
    if type_url == CLUSTER:
        eds_name = _eds_service_name(value) or name
    return CacheEntry(name, version, any_bytes, _sotw_head(len(any_bytes)), delta_head, _mix(name, version),
                      eds_name)


def _varint(data: bytes | memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _field(data: bytes | memoryview, number: int) -> bytes | memoryview | None:
    """The payload of the last length-delimited field `number` of a serialized message (None: absent)."""
    found = None
    i, end = 0, len(data)
    while i < end:
        tag, i = _varint(data, i)
        kind = tag & 7
        if kind == 0:
            _, i = _varint(data, i)
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        elif kind == 2:
            n, i = _varint(data, i)
            if tag >> 3 == number:
                found = data[i:i + n]
            i += n
        else:  # groups: not used by Envoy's API
            raise ValueError(f"unsupported wire type {kind}")
    return found


def _eds_service_name(cluster: bytes | memoryview) -> str:
    """Cluster.eds_cluster_config (3).service_name (2), read from the wire (no parse)."""
    eds = _field(cluster, 3)
    name = _field(eds, 2) if eds is not None else None
    return bytes(name).decode() if name is not None else ""


class TypeResources(Mapping[str, CacheEntry]):
    """Immutable name -> CacheEntry for one type URL, with an aggregate `version` over all entries and the
    one-step change record (`base`, `changed`, `removed`) relative to the TypeResources it was derived from."""

    __slots__ = ("_entries", "_hash", "version", "base", "changed", "removed")

    def __init__(self, entries: Mapping[str, CacheEntry]):
        self._entries = dict(sorted(entries.items()))
        h = 0
        for e in self._entries.values():
            h ^= e.mix
        self._set_hash(h)
        self.base: TypeResources | None = None
        self.changed: frozenset[str] = frozenset(self._entries)
        self.removed: frozenset[str] = frozenset()

    def _set_hash(self, h: int) -> None:
        self._hash = h
        self.version = f"{h:016x}"

    def evolve(self, upserts: Mapping[str, CacheEntry], removed: Iterable[str] = ()) -> TypeResources:
        """A new TypeResources: this one with `upserts` set and `removed` dropped (names not present are
        ignored). Returns `self` when nothing differs. The new one's `base` is self; self's own `base` link is
        dropped (the chain stays one step deep, so old versions are not kept alive)."""
        entries = self._entries
        changed = [n for n, e in upserts.items() if entries.get(n) is not e]
        gone = [n for n in removed if n in entries and n not in upserts]
        if not changed and not gone:
            return self
        new_entries = dict(entries)
        h = self._hash
        for name in changed:
            old = new_entries.get(name)
            if old is not None:
                h ^= old.mix
            e = new_entries[name] = upserts[name]
            h ^= e.mix
        for name in gone:
            h ^= new_entries.pop(name).mix
        new = TypeResources.__new__(TypeResources)
        new._entries = new_entries
        new._set_hash(h)
        self.base = None
        new.base = self
        new.changed = frozenset(changed)
        new.removed = frozenset(gone)
        return new

    def __getitem__(self, name: str) -> CacheEntry:
        return self._entries[name]

    def get(self, name: str, default=None):  # type: ignore[override]
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TypeResources(version={self.version!r}, names={list(self._entries)!r})"


def aggregate_version(entries: Iterable[CacheEntry]) -> str:
    """The aggregate version of any set of entries (equals `TypeResources(...).version` for the same set)."""
    h = 0
    for e in entries:
        h ^= e.mix
    return f"{h:016x}"


EMPTY = TypeResources({})


class SnapshotCache:
    """Resources per group; thread-safe for the set/get pair (the app may translate in a worker thread)."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, TypeResources]] = {}
        # group -> type URL -> name -> the message object the entry was last built or confirmed from
        self._messages: dict[str, dict[str, dict[str, Resource]]] = {}
        self._lock = threading.Lock()
        self.serializations = 0  # resources serialized so far (tests and metrics read it)

    def set_resources(self, group: str, resources: Mapping[str, Mapping[str, Resource]],
                      changes: Mapping[str, Iterable[str]] | None = None) -> set[str]:
        """Replace the group's resources; return the type URLs whose content changed.

        A type URL absent from `resources` but present before is treated as now empty (all removed).
        `changes` (optional): type URL -> names that may have changed (added, replaced or removed) since the
        previous call for this group; a type URL not in it is unchanged. Only valid when this group's previous
        call described the state the hint is relative to; without it every name is checked.
        """
        with self._lock:
            old = self._groups.get(group, {})
            old_messages = self._messages.get(group)
        if changes is not None and old_messages is not None and set(old) <= set(resources) \
                and set(old_messages) == set(resources):
            return self._apply_changes(group, resources, changes, old, old_messages)
        new: dict[str, TypeResources] = {}
        changed: set[str] = set()
        messages: dict[str, dict[str, Resource]] = {}
        for type_url, by_name in resources.items():
            previous = old.get(type_url, EMPTY)
            seen = (old_messages or {}).get(type_url, {})
            typed = self._update_type(type_url, previous, seen, by_name, by_name.keys(),
                                      [n for n in previous if n not in by_name])
            if typed is not previous:
                changed.add(type_url)
            new[type_url] = typed
            messages[type_url] = dict(by_name)
        for type_url, previous in old.items():
            if type_url not in new and len(previous):
                changed.add(type_url)
        with self._lock:
            self._groups[group] = new
            self._messages[group] = messages
        return changed

    def _apply_changes(self, group: str, resources: Mapping[str, Mapping[str, Resource]],
                       changes: Mapping[str, Iterable[str]], old: dict[str, TypeResources],
                       old_messages: dict[str, dict[str, Resource]]) -> set[str]:
        new = dict(old)
        changed: set[str] = set()
        for type_url, names in changes.items():
            if type_url not in resources:
                continue
            by_name = resources[type_url]
            previous = old.get(type_url, EMPTY)
            seen = old_messages[type_url]  # updated in place: this cache owns these dicts
            names = list(names)
            typed = self._update_type(type_url, previous, seen, by_name,
                                      [n for n in names if n in by_name],
                                      [n for n in names if n not in by_name])
            for name in names:
                message = by_name.get(name)
                if message is None:
                    seen.pop(name, None)
                else:
                    seen[name] = message
            if typed is not previous:
                changed.add(type_url)
            new[type_url] = typed
        with self._lock:
            self._groups[group] = new
        return changed

    def _update_type(self, type_url: str, previous: TypeResources, seen: Mapping[str, Resource],
                     by_name: Mapping[str, Resource], names: Iterable[str], gone: list[str]) -> TypeResources:
        upserts: dict[str, CacheEntry] = {}
        serialized = 0
        for name in names:
            message = by_name[name]
            before = previous.get(name)
            if before is not None and (seen.get(name) is message or (
                    isinstance(message, Encoded) and message.any_bytes is before.any_bytes)):
                continue  # same object (or the very bytes this entry serves): same bytes, no serialization
            entry = make_entry(type_url, name, message, before)
            serialized += 1
            if entry is not before:
                upserts[name] = entry
        self.serializations += serialized
        if not len(previous):  # first content of the type: built sorted, from scratch (no base)
            return TypeResources(upserts) if upserts else previous
        return previous.evolve(upserts, gone)

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
