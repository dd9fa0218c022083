"""AuthorizationPolicy RBAC configs as protobuf wire bytes (no message built; translate/wire.py's approach).

What authz.py hands routes.py per virtual host and filter: the serialized ``RBACPerRoute`` (an Any's value) and
the virtual host's ``typed_per_filter_config`` map entry (VirtualHost field 15) carrying it. Both are the bytes
deterministic protobuf serialization gives (map entries in key order, fields in number order;
tests/test_authz_wire.py compares them with the messages).

`Shape`: the configs of one policy content (its rules built for one action, namespace, port and peer identity)
with the policy's name left open. Policies with equal rules differ only in their RBAC map keys
``ns[<ns>]-policy[<name>]-<suffix>``, a common prefix; the encoding around it depends only on the prefix's
length, so it is computed once per content and length, and a policy's bytes are that encoding joined with its
prefix (`Shape.encode`).
"""

from __future__ import annotations

from istiod_lite.translate import wire

_VH_FILTER_CONFIG = 15  # VirtualHost.typed_per_filter_config (checked against the descriptor in the tests)


def ld(field: int, payload: bytes) -> bytes:
    """wire.ld, with two-byte lengths inline (RBAC configs are mostly 128 bytes .. 16 KiB)."""
    n = len(payload)
    if n < 0x80:
        return bytes(((field << 3) | 2, n)) + payload
    if n < 0x4000:
        return bytes(((field << 3) | 2, (n & 0x7F) | 0x80, n >> 7)) + payload
    return wire.ld(field, payload)


def entry(name: str, tail: bytes) -> bytes:
    """One ``map<string, Policy>`` entry of RBAC.policies (field 2): key (1) `name`, value (2) (`tail`: the
    value already encoded as field 2)."""
    return ld(2, ld(1, name.encode()) + tail)


def packed(action: bytes, entries: list[tuple[str, bytes]]) -> bytes:
    """The serialized ``RBACPerRoute`` from the RBAC action field (`action`, empty for ALLOW) and its map entries
    (name, encoded entry) in name order."""
    rules = action + b"".join([e[1] for e in entries]) if entries else action  # config.v3.RBAC: action, policies
    return ld(2, ld(1, rules))  # RBACPerRoute.rbac (2) -> RBAC.rules (1)


def vh_entry(filter_key: bytes, value: bytes, type_url: bytes) -> bytes:
    """One ``typed_per_filter_config`` entry: key (1) (`filter_key`, encoded), value (2) the Any (`type_url`
    encoded as field 1, value (2) `value`)."""
    return ld(_VH_FILTER_CONFIG, filter_key + ld(2, type_url + ld(2, value)))


class Shape:
    """The configs of one policy content in one filter: `entries` (name suffix, encoded map value as field 2) in
    suffix order (= name order: every name of a policy starts with the same prefix)."""

    __slots__ = ("filter_key", "action", "type_url", "entries", "runs")

    def __init__(self, filter_key: bytes, action: bytes, type_url: bytes, entries: list[tuple[str, bytes]]) -> None:
        self.filter_key, self.action, self.type_url = filter_key, action, type_url
        self.entries = sorted(entries, key=_first)
        self.runs: dict[int, tuple[list[bytes], list[bytes]]] = {}  # prefix length -> `_split`

    def encode(self, prefix: str) -> tuple[bytes, bytes]:
        """(serialized RBACPerRoute, typed_per_filter_config entry) of the policy whose names start with `prefix`
        (`packed` and `vh_entry` of its entries)."""
        p = prefix.encode()
        segs = self.runs.get(len(p))
        if segs is None:
            segs = self.runs[len(p)] = self._split(len(p))
        return p.join(segs[0]), p.join(segs[1])

    def encode_vh(self, prefix: str) -> bytes:
        """`encode(prefix)[1]` alone (the typed_per_filter_config entry)."""
        p = prefix.encode()
        segs = self.runs.get(len(p))
        if segs is None:
            segs = self.runs[len(p)] = self._split(len(p))
        return p.join(segs[1])

    def _split(self, k: int) -> tuple[list[bytes], list[bytes]]:
        """Both encodings as the byte runs between the places of a k-byte prefix (a chunk None stands for it)."""
        chunks: list[bytes | None] = [self.action]
        for suffix, tail in self.entries:
            chunks += _ld(2, [*_ld(1, [None, suffix.encode()], k), tail], k)
        value = _ld(2, _ld(1, chunks, k), k)
        vh = _ld(_VH_FILTER_CONFIG, [self.filter_key, *_ld(2, [self.type_url, *_ld(2, value, k)], k)], k)
        return _runs(value), _runs(vh)


def _first(item: tuple[str, bytes]) -> str:
    return item[0]


def _ld(field: int, chunks: list[bytes | None], k: int) -> list[bytes | None]:
    n = sum(k if c is None else len(c) for c in chunks)
    return [wire.tag(field) + wire.varint(n), *chunks]


def _runs(chunks: list[bytes | None]) -> list[bytes]:
    out: list[bytes] = []
    run: list[bytes] = []
    for c in chunks:
        if c is None:
            out.append(b"".join(run))
            run = []
        else:
            run.append(c)
    out.append(b"".join(run))
    return out
