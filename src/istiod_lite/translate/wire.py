"""Protobuf wire-format fragments, for building hot resources as bytes and parsing them once.

Constructing a upb message field by field costs ~1 us per field access from Python (each submessage access
makes a wrapper object); concatenating wire fragments and parsing the result once (``Msg.FromString``) is several
times cheaper for resources built thousands of times (route configurations, virtual hosts, RBAC per-route
configs). Concatenated encodings of one message merge (protobuf semantics), so a fragment serialized from a
message (``SerializeToString``) can be followed by hand-encoded fields.

Only length-delimited fields (strings, bytes, submessages) and small varints are encoded here. An empty string
is always written (proto3 parsing then leaves the field unset, except in a oneof, where it is set: as the
message-based code does for a oneof string assigned "").
"""

from __future__ import annotations


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:  # two bytes (lengths of most encoded messages)
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_LD = tuple(varint((f << 3) | 2) for f in range(64))  # length-delimited tags of fields 0..63
LEN = tuple(bytes((n,)) for n in range(0x80))  # one-byte lengths (LEN[n] == varint(n) for n < 0x80)


def tag(field: int, wire_type: int = 2) -> bytes:
    return varint((field << 3) | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (submessage or bytes); an empty payload still marks a submessage present."""
    n = len(payload)
    return _LD[field] + (LEN[n] if n < 0x80 else varint(n)) + payload


def string(field: int, text: str) -> bytes:
    payload = text.encode()
    n = len(payload)
    return _LD[field] + (LEN[n] if n < 0x80 else varint(n)) + payload


def uint(field: int, value: int) -> bytes:
    """A varint field (omitted by the caller when it is a proto3 default 0)."""
    return varint(field << 3) + varint(value)


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """Decode the varint starting at `buf[i]`: (value, the offset after it)."""
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def strings(field: int, texts: list[str]) -> bytes:
    """`string(field, t)` for each of `texts`, concatenated (a repeated string field)."""
    tag = _LD[field]
    out = []
    for t in texts:
        payload = t.encode()
        n = len(payload)
        out.append(tag + (LEN[n] if n < 0x80 else varint(n)) + payload)
    return b"".join(out)


def lds(field: int, payloads: list[bytes]) -> bytes:
    """`ld(field, p)` for each of `payloads`, concatenated (a repeated submessage field)."""
    tag = _LD[field]
    out = []
    for p in payloads:
        n = len(p)
        out.append(tag + (LEN[n] if n < 0x80 else varint(n)) + p)
    return b"".join(out)
