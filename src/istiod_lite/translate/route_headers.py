"""VirtualService ``headers`` (rule level and per destination) -> Envoy header operations
(Istio ``route.go TranslateHeadersOperations``).

- ``request.set`` / ``response.set`` -> ``*_headers_to_add`` with OVERWRITE_IF_EXISTS_OR_ADD, ``add`` ->
  APPEND_IF_EXISTS_OR_ADD; each map sorted by header name, set before add (as Istio);
- ``remove`` -> ``*_headers_to_remove``;
- pseudo headers (``:...``) and ``host`` are never edited by Envoy header operations: they are dropped, except
  that a request ``:authority``/``host`` set (else add) becomes the authority rewrite
  (``host_rewrite_literal``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from envoy.config.core.v3 import base_pb2

SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def is_internal(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


@dataclass
class HeaderOps:
    request_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    request_remove: list[str] = field(default_factory=list)
    response_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    response_remove: list[str] = field(default_factory=list)
    authority: str = ""

    def is_empty(self) -> bool:
        """No header operation (the authority rewrite is not one: route_action applies it)."""
        return not (self.request_add or self.request_remove or self.response_add or self.response_remove)

    def apply(self, target: Any) -> None:
        """`target`: an Envoy Route or WeightedCluster.ClusterWeight (same field names)."""
        target.request_headers_to_add.extend(self.request_add)
        target.request_headers_to_remove.extend(self.request_remove)
        target.response_headers_to_add.extend(self.response_add)
        target.response_headers_to_remove.extend(self.response_remove)


def _options(values: Mapping[str, Any] | None, action: int) -> tuple[list[base_pb2.HeaderValueOption], str]:
    out = []
    authority = ""
    for key, value in sorted((values or {}).items()):
        if is_authority(key):
            authority = str(value)
        if is_internal(key):
            continue
        out.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=str(value)),
                                              append_action=action))
    return out, authority


def header_ops(spec: Mapping[str, Any] | None) -> HeaderOps:
    """An Istio ``Headers`` value -> HeaderOps (empty when `spec` is None)."""
    spec = spec or {}
    req = spec.get("request") or {}
    resp = spec.get("response") or {}
    ops = HeaderOps()
    set_req, set_auth = _options(req.get("set"), SET)
    add_req, add_auth = _options(req.get("add"), ADD)
    ops.request_add = set_req + add_req
    ops.authority = set_auth or add_auth
    set_resp, _ = _options(resp.get("set"), SET)
    add_resp, _ = _options(resp.get("add"), ADD)
    ops.response_add = set_resp + add_resp
    ops.request_remove = [str(h) for h in req.get("remove") or () if not is_internal(str(h))]
    ops.response_remove = [str(h) for h in resp.get("remove") or () if not is_internal(str(h))]
    return ops
