"""Go/protobuf-style durations as Istio accepts them ("1s", "500ms", "1m30s", "1.5h")."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError with a readable message when malformed."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    s = text.strip()
    if s == "0":
        return 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 500ms, 1s, 1m30s")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def to_proto_fields(seconds: float) -> tuple[int, int]:
    """(seconds, nanos) for google.protobuf.Duration."""
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return whole, nanos
