"""Hand-written protobuf wire encoding for ADS responses assembled from cached, already-serialized bytes.

Only what the discovery responses need: varints, field tags and length-delimited fields. Concatenating
encoded fields is a valid message encoding, so a response is the cached resource frames plus a few
small header fields, without re-serializing any resource.
"""

from __future__ import annotations

_LEN = 2  # wire type: length-delimited


ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))  # varint(n) for n < 0x80


def varint(value: int) -> bytes:
    if value < 0x80:
        return ONE_BYTE[value]
    if value < 0x4000:  # two bytes: most lengths
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def ld(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return varint((field_number << 3) | _LEN) + varint(len(payload)) + payload


def ld_str(field_number: int, text: str) -> bytes:
    return ld(field_number, text.encode()) if text else b""
