"""The HTTP filter chain of every waypoint HTTP listener: [authz RBAC filters, fault, cors, router].

Fault and CORS are present with empty configs (no-ops) so that VirtualService fault/corsPolicy can later be
added as per-route ``typed_per_filter_config`` without changing the listener.
"""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from istiod_lite.translate import authz, names


def _filter(name: str, msg) -> hcm.HttpFilter:
    cfg = any_pb2.Any()
    cfg.Pack(msg)
    return hcm.HttpFilter(name=name, typed_config=cfg)


def http_filters() -> list[hcm.HttpFilter]:
    return [
        *authz.http_filters(),
        _filter(names.FAULT_FILTER, fault_pb2.HTTPFault()),
        _filter(names.CORS_FILTER, cors_pb2.Cors()),
        _filter(names.ROUTER_FILTER, router_pb2.Router()),
    ]
