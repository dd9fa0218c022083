"""Istio duration strings (``1.5s``, ``100ms``, ``1h30m``; parsed by model.duration) -> protobuf Duration."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from istiod_lite.model.duration import parse_duration, to_proto_fields


def seconds_duration(seconds: float) -> Duration:
    whole, nanos = to_proto_fields(seconds)
    return Duration(seconds=whole, nanos=nanos)


def to_duration(text: object) -> Duration | None:
    """None when `text` is not a duration (the parser already rejects those, so this is defensive)."""
    try:
        return seconds_duration(parse_duration(text))  # type: ignore[arg-type]
    except ValueError:
        return None
