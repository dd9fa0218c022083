"""VirtualService ``corsPolicy`` -> per-route ``envoy.filters.http.cors`` CorsPolicy (Istio ``route.go
TranslateCORSPolicy``).

The listener always carries the CORS filter (filters.py); the policy rides on the route's
``typed_per_filter_config`` (RDS-only changes).

- ``allowOrigins[]`` exact/prefix/regex -> allow_origin_string_match (deprecated ``allowOrigin[]`` -> exact);
- ``allowMethods`` / ``allowHeaders`` / ``exposeHeaders`` -> comma-joined strings;
- ``maxAge`` -> max_age in whole seconds; ``allowCredentials`` -> allow_credentials (only when set);
- filter_enabled 100%; ``unmatchedPreflights: IGNORE`` -> forward_not_matching_preflights false, otherwise true
  (Istio's default FORWARD).
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from istiod_lite.model.duration import parse_duration
from istiod_lite.translate.route_match import string_matcher


def cors_policy(spec: Mapping[str, Any]) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy()
    origins = spec.get("allowOrigins")
    if origins is not None:
        for o in origins:
            sm = string_matcher(o or {})
            if sm is not None:
                out.allow_origin_string_match.append(sm)
    else:
        for o in spec.get("allowOrigin") or ():
            out.allow_origin_string_match.append(string_pb2.StringMatcher(exact=str(o)))
    out.filter_enabled.CopyFrom(base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
        numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)))
    if spec.get("allowCredentials") is not None:
        out.allow_credentials.value = bool(spec["allowCredentials"])
    out.allow_methods = ",".join(str(m) for m in spec.get("allowMethods") or ())
    out.allow_headers = ",".join(str(h) for h in spec.get("allowHeaders") or ())
    out.expose_headers = ",".join(str(h) for h in spec.get("exposeHeaders") or ())
    if spec.get("maxAge") is not None:
        out.max_age = str(int(parse_duration(spec["maxAge"])))
    out.forward_not_matching_preflights.value = spec.get("unmatchedPreflights") != "IGNORE"
    return out
