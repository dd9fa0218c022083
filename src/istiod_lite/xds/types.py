"""xDS type URLs, the ADS push order, ResourceSet (what the translator produces for one waypoint) and Encoded (a
resource kept serialized, in the `google.protobuf.Any` bytes the xds cache serves, instead of as a message)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Union

from google.protobuf.message import Message

from istiod_lite.xds import wire

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make before break: clusters, then their endpoints, then listeners, then their route scopes, then the routes the
# scopes name (removals in reverse).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)
# Types Envoy subscribes as (legacy) wildcard: SotW responses carry every resource, and a Delta first request with
# no names is a wildcard subscription. Envoy 1.40 subscribes LDS, CDS and SRDS (scoped_rds without
# srds_resources_locator) that way; EDS, RDS and SDS by name.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})

SHORT_NAMES: Mapping[str, str] = {
    LISTENER: "LDS",
    ROUTE: "RDS",
    SCOPED_ROUTE: "SRDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
}


_ANY_HEADS: dict[str, bytes] = {}  # type URL -> Any.type_url field + the value field's key
_LEN = wire.ONE_BYTE  # one-byte lengths
_new_object = object.__new__


class Encoded:
    """One resource as bytes: its `google.protobuf.Any` encoding (type URL + the message's deterministic
    serialization), the very bytes object the xds cache serves (xds/cache.py shares it, no copy). A kept upb
    message costs ~10x its serialized size (arena blocks, and arenas fused with whatever it was built from);
    this costs the bytes plus a small object. `.message` parses a fresh, independent message on each call
    (config_dump, tests): nothing parsed is kept. Immutable; equality compares bytes (with an Encoded, or with a
    message by its deterministic serialization)."""

    __slots__ = ("name", "any_bytes", "_at", "_cls")

    def __init__(self, type_url: str, name: str, value: bytes, cls: type) -> None:
        head = _ANY_HEADS.get(type_url)
        if head is None:
            head = _ANY_HEADS[type_url] = wire.ld(1, type_url.encode()) + wire.varint((2 << 3) | 2)
        head += wire.varint(len(value))
        self.name = name
        self.any_bytes = head + value
        self._at = len(head)
        self._cls = cls

    @classmethod
    def named(cls, type_url: str, name: str, rest: bytes, message_class: type) -> Encoded:
        """The Encoded of a message whose field 1 is its name: `name` as field 1 followed by `rest`, the
        deterministic serialization of every other field (a per-translation template shared by many resources).
        Fields in number order make that the deterministic serialization of the whole message. `__init__`'s
        result, built with one join (translate() makes tens of thousands)."""
        head = _ANY_HEADS.get(type_url)
        if head is None:
            head = _ANY_HEADS[type_url] = wire.ld(1, type_url.encode()) + wire.varint((2 << 3) | 2)
        raw = name.encode()
        n = len(raw)
        name_len = _LEN[n] if n < 0x80 else wire.varint(n)
        size = 1 + len(name_len) + n + len(rest)
        size_len = _LEN[size] if size < 0x80 else bytes(((size & 0x7F) | 0x80, size >> 7)) if size < 0x4000 \
            else wire.varint(size)
        obj = _new_object(cls)
        obj.name = name
        obj.any_bytes = b"".join((head, size_len, b"\n", name_len, raw, rest))  # b"\n": field 1, length-delimited
        obj._at = len(head) + len(size_len)
        obj._cls = message_class
        return obj

    @classmethod
    def of(cls, type_url: str, message: Message, name: str | None = None) -> Encoded:
        """Serialize `message` (deterministic: the bytes and hence the version the cache would compute)."""
        return cls(type_url, message.name if name is None else name,  # type: ignore[attr-defined]
                   message.SerializeToString(deterministic=True), type(message))

    @property
    def value(self) -> bytes:
        """The serialized message (a copy sliced out of `any_bytes`)."""
        return self.any_bytes[self._at:]

    def value_view(self) -> memoryview:
        """The serialized message without a copy (hashing, wire scans)."""
        return memoryview(self.any_bytes)[self._at:]

    @property
    def message(self) -> Message:
        """A freshly parsed message (not cached: keep it only as long as needed)."""
        return self._cls.FromString(self.value)

    def SerializeToString(self, deterministic: bool = False) -> bytes:  # noqa: N802 (the Message method's name)
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Encoded):
            return self.any_bytes == other.any_bytes  # (the type URL is part of them)
        if isinstance(other, Message):
            return type(other) is self._cls and other.SerializeToString(deterministic=True) == self.value
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Encoded({self._cls.__name__} {self.name!r}, {len(self.any_bytes) - self._at} bytes)"

    def __str__(self) -> str:
        return str(self.message)


Resource = Union[Message, Encoded]


def as_message(resource: Any) -> Message:
    """The message of a resource value: an Encoded is parsed (fresh), a message is returned as is."""
    return resource.message if isinstance(resource, Encoded) else resource


def encode(type_url: str, resource: Any, name: str | None = None) -> Encoded:
    """An Encoded of a resource value (an Encoded is returned as is)."""
    return resource if isinstance(resource, Encoded) else Encoded.of(type_url, resource, name)


class SourcesByType(Mapping):
    """A `ResourceSet.sources` mapping kept as type URL -> resource name -> the input objects' keys (any objects
    whose str() is "Kind/ns/name"; strings as they are), turned into the sorted distinct strings of the
    `ResourceSet.sources` contract only when looked up (a NACK, a debug page): a full translation has 40,000
    resources and no reader for most of them. A collection object shared by several resources is converted once.
    Iterates in key order. Read-only; the dicts given are not copied (the translator hands them over)."""

    def __init__(self, by_type: Mapping[str, Mapping[str, Iterable[Any]]]) -> None:
        self._by_type = by_type
        self._text: dict[int, tuple[Any, tuple[str, ...]]] = {}  # id(collection) -> (it, its strings)

    def __getitem__(self, key: tuple[str, str]) -> tuple[str, ...]:
        keys = self._by_type[key[0]][key[1]]
        hit = self._text.get(id(keys))
        if hit is None or hit[0] is not keys:
            hit = self._text[id(keys)] = (keys, tuple(sorted({str(k) for k in keys})))
        return hit[1]

    def __contains__(self, key: object) -> bool:
        try:
            return key[1] in self._by_type[key[0]]  # type: ignore[index]
        except (KeyError, TypeError, IndexError):
            return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for type_url in sorted(self._by_type):
            for name in sorted(self._by_type[type_url]):
                yield (type_url, name)

    def __len__(self) -> int:
        return sum(map(len, self._by_type.values()))

    def __repr__(self) -> str:
        return f"SourcesByType({dict(self)!r})"


@dataclass(frozen=True)
class ResourceSet:
    """Envoy resources for one waypoint: type URL -> resource name -> protobuf message, or `Encoded` (the
    incremental translator's results: use `as_message` where a message is needed).

    `sources` maps (type URL, resource name) -> the input objects (as strings "Kind/ns/name") that the
    resource was built from, so that a NACK can be attributed to the objects that caused it.
    """

    resources: Mapping[str, Mapping[str, Resource]] = field(default_factory=dict)
    sources: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})

    def messages(self, type_url: str) -> dict[str, Message]:
        """`of_type` with every value as a message (an Encoded is parsed: fresh messages, for reading)."""
        return {name: as_message(value) for name, value in self.of_type(type_url).items()}

    def names(self, type_url: str) -> list[str]:
        return sorted(self.of_type(type_url))
