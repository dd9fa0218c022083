"""VirtualService ``redirect`` and ``directResponse`` -> Envoy RedirectAction / DirectResponseAction
(Istio ``route.go ApplyRedirect`` / ``ApplyDirectResponse``).

redirect: ``uri`` -> path_redirect, ``authority`` -> host_redirect, ``scheme`` -> scheme_redirect, ``port`` ->
port_redirect, ``derivePort: FROM_REQUEST_PORT`` -> the listener port (Envoy cannot derive it; the route is built
for one listener port), ``FROM_PROTOCOL_DEFAULT`` -> no port; with a port, ``:80`` for http and ``:443`` for
https are left out. ``redirectCode``: unset/301 MOVED_PERMANENTLY, 302 FOUND, 303 SEE_OTHER, 307
TEMPORARY_REDIRECT, 308 PERMANENT_REDIRECT; any other 3xx (accepted by Istio's validation) is not supported by
Envoy: Istio leaves the route without action, we report it and answer 500 instead of sending an invalid route.

directResponse: ``status`` -> status; ``body.string`` -> inline_string, ``body.bytes`` (base64 in YAML) ->
inline_bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import error
from istiod_lite.translate.waypoint import Waypoint

REDIRECT_CODES = {
    0: rc.RedirectAction.MOVED_PERMANENTLY,
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def apply_redirect(wp: Waypoint, vs: IstioConfig, spec: Mapping[str, Any], path: str, r: rc.Route,
                   listener_port: int) -> None:
    code = int(spec.get("redirectCode", 0) or 0)
    if code not in REDIRECT_CODES:
        wp.report(error(vs.key, f"{path}.redirectCode", f"redirect code {code} is not supported by Envoy (use 301, "
                        "302, 303, 307 or 308); the route answers 500", "UnsupportedRedirectCode"))
        r.direct_response.status = 500
        return
    red = rc.RedirectAction(response_code=REDIRECT_CODES[code])
    if spec.get("authority"):
        red.host_redirect = str(spec["authority"])
    if spec.get("uri"):
        red.path_redirect = str(spec["uri"])
    scheme = str(spec.get("scheme") or "")
    if scheme:
        red.scheme_redirect = scheme
    port = 0
    has_port = "port" in spec or "derivePort" in spec
    if spec.get("port"):
        port = int(spec["port"])
    elif spec.get("derivePort") == "FROM_REQUEST_PORT":
        port = listener_port
    if has_port:
        effective_scheme = scheme or "http"  # waypoint HTTP listeners are plain text
        if (port == 80 and effective_scheme == "http") or (port == 443 and effective_scheme == "https"):
            port = 0
        if port:
            red.port_redirect = port
    r.redirect.CopyFrom(red)


def apply_direct_response(wp: Waypoint, vs: IstioConfig, spec: Mapping[str, Any], path: str, r: rc.Route) -> None:
    r.direct_response.status = int(spec.get("status", 0))
    body = spec.get("body") or {}
    if "string" in body:
        r.direct_response.body.inline_string = str(body["string"])
    elif "bytes" in body:
        try:
            r.direct_response.body.inline_bytes = base64.b64decode(str(body["bytes"]), validate=True)
        except (binascii.Error, ValueError):
            wp.report(error(vs.key, f"{path}.body.bytes", "body.bytes must be base64", "InvalidBody"))
