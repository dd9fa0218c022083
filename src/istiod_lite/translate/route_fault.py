"""VirtualService ``fault`` -> per-route ``envoy.filters.http.fault`` HTTPFault (Istio ``route.go TranslateFault``).

The listener always carries an empty fault filter (filters.py); a rule with ``fault`` overrides it on its routes
through ``typed_per_filter_config``, so fault changes are RDS-only.

- ``delay.fixedDelay`` -> FaultDelay.fixed_delay; ``delay.percentage.value`` -> FractionalPercent(value*10000,
  MILLION); without ``percentage`` the deprecated integer ``percent`` is used (HUNDRED) and, when that is absent
  too, **no request is delayed** (Istio's documented default) — reported as a warning because it is a common
  surprise. ``exponentialDelay`` is rejected by validation (Istio: not supported).
- ``abort.httpStatus`` -> http_status; ``abort.grpcStatus`` (name, e.g. UNAVAILABLE) -> grpc_status code;
  ``abort.percentage`` as above; without it no request is aborted (Envoy's default for an unset percentage, as
  Istio) — also reported. ``http2Error`` is rejected by validation (Istio: not supported).
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import warning
from istiod_lite.translate.durations import to_duration
from istiod_lite.translate.waypoint import Waypoint

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def fractional(value: float) -> percent_pb2.FractionalPercent:
    """Istio Percent (0..100, double) -> FractionalPercent per million."""
    return percent_pb2.FractionalPercent(numerator=int(round(float(value) * 10000)),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def _percent(spec: Mapping[str, Any]) -> percent_pb2.FractionalPercent | None:
    if spec.get("percentage") is not None:
        return fractional((spec["percentage"] or {}).get("value", 0) or 0)
    if spec.get("percent") is not None:
        return percent_pb2.FractionalPercent(numerator=int(spec["percent"]),
                                             denominator=percent_pb2.FractionalPercent.HUNDRED)
    return None


def fault_config(wp: Waypoint, vs: IstioConfig, spec: Mapping[str, Any], path: str) -> fault_pb2.HTTPFault | None:
    """None when nothing can be injected (the rule then has no fault override)."""
    out = fault_pb2.HTTPFault()
    delay = spec.get("delay")
    if delay and delay.get("fixedDelay") is not None:
        d = to_duration(delay["fixedDelay"])
        if d is not None:
            pct = _percent(delay)
            if pct is None:
                wp.report(warning(vs.key, f"{path}.delay.percentage", "percentage is not set: no request is delayed "
                                  "(Istio's default); set percentage.value: 100 to delay every request", "NoEffect"))
                pct = percent_pb2.FractionalPercent(denominator=percent_pb2.FractionalPercent.HUNDRED)
            out.delay.CopyFrom(common_fault.FaultDelay(fixed_delay=d, percentage=pct))
    abort = spec.get("abort")
    if abort:
        a = fault_pb2.FaultAbort()
        if abort.get("httpStatus") is not None:
            a.http_status = int(abort["httpStatus"])
        elif abort.get("grpcStatus") is not None and str(abort["grpcStatus"]) in GRPC_CODES:
            a.grpc_status = GRPC_CODES[str(abort["grpcStatus"])]
        else:
            a = None
        if a is not None:
            pct = _percent(abort)
            if pct is None:
                wp.report(warning(vs.key, f"{path}.abort.percentage", "percentage is not set: no request is aborted "
                                  "(Istio's default); set percentage.value: 100 to abort every request", "NoEffect"))
            else:
                a.percentage.CopyFrom(pct)
            out.abort.CopyFrom(a)
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out
