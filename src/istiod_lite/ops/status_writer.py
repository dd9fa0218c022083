"""Object status in the cluster: what istiod-lite tells users on the objects they applied.

`compute_statuses(snapshot, issues)` is pure: for each waypoint Gateway, conditions Accepted / Programmed
(reasons, observedGeneration), listener conditions and `status.addresses` (the waypoint Service's hostname,
once it exists); for each VirtualService / DestinationRule / AuthorizationPolicy a `WaypointAccepted`
condition saying whether the object applies to a waypoint, or why not (its validation errors with field
paths, no matching service bound to a waypoint, no targetRefs). Bodies carry no timestamps.

`StatusWriter.write(statuses)` patches the `status` subresource (JSON merge patch) of each object whose
computed status differs from what this writer last wrote, stamping `lastTransitionTime` only when a
condition's status flips. Only the leader calls it (ops.leader). Blocking: call it in a thread.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from istiod_lite.model.hosts import host_matches, kubernetes_short_names, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.snapshot import ConfigSnapshot

log = logging.getLogger(__name__)

WAYPOINT_ACCEPTED = "WaypointAccepted"
GATEWAY_GROUP = "gateway.networking.k8s.io"
# kind -> (group, version, plural) of the objects whose status we write
STATUS_KINDS: dict[str, tuple[str, str, str]] = {
    "Gateway": (GATEWAY_GROUP, "v1", "gateways"),
    "VirtualService": ("networking.istio.io", "v1", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "v1", "destinationrules"),
    "AuthorizationPolicy": ("security.istio.io", "v1", "authorizationpolicies"),
}
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (group, f"{plural}/status", ("patch",)) for group, _, plural in STATUS_KINDS.values()
)
MAX_LISTED = 5


def _cond(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}
    if generation:
        c["observedGeneration"] = generation
    return c


def _describe(issues: list[Issue]) -> str:
    parts = [f"{i.path}: {i.message}" if i.path else i.message for i in issues[:MAX_LISTED]]
    if len(issues) > MAX_LISTED:
        parts.append(f"and {len(issues) - MAX_LISTED} more")
    return "; ".join(parts)


def compute_statuses(snapshot: ConfigSnapshot, issues: Iterable[Issue]) -> dict[ConfigKey, dict[str, Any]]:
    """The status body (the value of `.status`) of every object istiod-lite reports on."""
    by_key: dict[ConfigKey, list[Issue]] = {}
    for issue in sorted(set(issues), key=str):
        if issue.key is not None:
            by_key.setdefault(issue.key, []).append(issue)
    out: dict[ConfigKey, dict[str, Any]] = {}
    for gw in snapshot.waypoints():
        out[gw.key] = _gateway_status(snapshot, gw, by_key.get(gw.key, []))
    seen: set[ConfigKey] = set()
    for cfg in (*snapshot.virtual_services, *snapshot.destination_rules, *snapshot.authorization_policies):
        seen.add(cfg.key)
        out[cfg.key] = _config_status(snapshot, cfg, by_key.get(cfg.key, []))
    for key, problems in by_key.items():  # objects rejected by the parser: only their issues are known
        if key.kind in STATUS_KINDS and key.kind != "Gateway" and key not in seen:
            errors = [i for i in problems if i.is_error]
            if errors:
                out[key] = {"conditions": [_cond(WAYPOINT_ACCEPTED, False, "Invalid", _describe(errors), 0)]}
    return out


def _gateway_status(snapshot: ConfigSnapshot, gw: Any, problems: list[Issue]) -> dict[str, Any]:
    gen = gw.meta.generation
    errors = [i for i in problems if i.is_error]
    gw_errors = [i for i in errors if not i.path.startswith("spec.listeners")]
    hostname = f"{gw.key.name}.{gw.key.namespace}.svc.{snapshot.domain_suffix}"
    svc = next((s for s in snapshot.services_matching(hostname) if s.key == ConfigKey("Service", gw.key.namespace,
                                                                                          gw.key.name)), None)
    conditions = []
    if gw_errors:
        conditions.append(_cond("Accepted", False, "Invalid", _describe(gw_errors), gen))
        conditions.append(_cond("Programmed", False, "Invalid", "the Gateway is not accepted", gen))
    else:
        conditions.append(_cond("Accepted", True, "Accepted", "Resource accepted", gen))
        if svc is None:
            conditions.append(_cond("Programmed", False, "AddressNotAssigned",
                                    f"waiting for the waypoint Service {gw.key.namespace}/{gw.key.name}", gen))
        else:
            ports = ", ".join(f"{hostname}:{p.number}" for p in svc.ports) or hostname
            conditions.append(_cond("Programmed", True, "Programmed",
                                    f"Resource programmed, assigned to service(s) {ports}", gen))
    listeners = []
    for i, ln in enumerate(gw.listeners):
        mine = [p for p in errors if p.path.startswith(f"spec.listeners[{i}]")]
        ok = not mine and not gw_errors
        reason = mine[0].reason if mine and mine[0].reason in ("UnsupportedProtocol", "PortUnavailable") else \
            ("Invalid" if not ok else "Accepted")
        listeners.append({
            "name": ln.name,
            "attachedRoutes": 0,
            "supportedKinds": [],
            "conditions": [
                _cond("Accepted", ok, reason, _describe(mine) if mine else ("Accepted" if ok else "Gateway invalid"),
                      gen),
                _cond("Conflicted", False, "NoConflicts", "No conflicts", gen),
                _cond("Programmed", ok and svc is not None, "Programmed" if ok and svc is not None else "Pending",
                      "Programmed" if ok and svc is not None else "waiting for the waypoint Service", gen),
                _cond("ResolvedRefs", True, "ResolvedRefs", "No unresolved references", gen),
            ],
        })
    return {"addresses": [{"type": "Hostname", "value": hostname}] if svc is not None and not gw_errors else [],
            "conditions": conditions, "listeners": listeners}


def _config_status(snapshot: ConfigSnapshot, cfg: IstioConfig, problems: list[Issue]) -> dict[str, Any]:
    gen = cfg.meta.generation
    errors = [i for i in problems if i.is_error]
    warnings = [i for i in problems if not i.is_error]
    if errors:
        cond = _cond(WAYPOINT_ACCEPTED, False, "Invalid", _describe(errors), gen)
    else:
        reason, waypoints, why = _waypoints_of(snapshot, cfg)
        if waypoints:
            msg = "bound to waypoint " + ", ".join(f"{k.namespace}/{k.name}" for k in sorted(waypoints))
            if warnings:
                msg += "; ignored: " + _describe(warnings)
            cond = _cond(WAYPOINT_ACCEPTED, True, "Accepted", msg, gen)
        else:
            cond = _cond(WAYPOINT_ACCEPTED, False, reason, why, gen)
    body: dict[str, Any] = {"conditions": [cond]}
    if gen:
        body["observedGeneration"] = gen
    return body


def _services_for_host(snapshot: ConfigSnapshot, host: str, namespace: str) -> list[Any]:
    fqdn = resolve_short_name(host, namespace, snapshot.domain_suffix)
    out = []
    for s in snapshot.services:
        names = {s.hostname}
        if s.key.kind == "Service" and s.key.namespace == namespace:
            names.update(kubernetes_short_names(s.hostname, snapshot.domain_suffix))
        if any(host_matches(fqdn, n) or n == host for n in names):
            out.append(s)
    return out


def _waypoints_of(snapshot: ConfigSnapshot, cfg: IstioConfig) -> tuple[str, set[ConfigKey], str]:
    """(reason if none, waypoints the object applies to, message if none)."""
    spec = cfg.spec if isinstance(cfg.spec, Mapping) else {}
    kind = cfg.key.kind
    if kind == "AuthorizationPolicy":
        refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if spec.get("targetRef") else [])
        if not refs:
            return ("NotWaypointTargeted", set(), "the policy has no targetRefs: waypoints enforce only policies "
                    "that target a waypoint Gateway, its GatewayClass or a Service bound to a waypoint")
        found: set[ConfigKey] = set()
        for ref in refs:
            name, rkind = ref.get("name"), ref.get("kind")
            if rkind == "Gateway":
                g = snapshot.gateway(ConfigKey("Gateway", cfg.key.namespace, name))
                if g is not None and g.is_waypoint:
                    found.add(g.key)
            elif rkind == "GatewayClass" and cfg.key.namespace == snapshot.root_namespace:
                found.update(g.key for g in snapshot.waypoints() if g.class_name == name)
            elif rkind in ("Service", "ServiceEntry"):
                found.update(s.waypoint for s in snapshot.services
                             if s.key == ConfigKey(rkind, cfg.key.namespace, name) and s.waypoint is not None)
        if not found:
            return ("TargetNotFound", set(), "no targetRef names a waypoint or a service bound to a waypoint")
        return "", found, ""
    hosts = spec.get("hosts") if kind == "VirtualService" else [spec.get("host")]
    hosts = [h for h in hosts or [] if isinstance(h, str)]
    matched = [s for h in hosts for s in _services_for_host(snapshot, h, cfg.key.namespace)]
    if not matched:
        return ("HostNotFound", set(), f"no service matches host(s) {', '.join(hosts)}")
    waypoints = {s.waypoint for s in matched if s.waypoint is not None}
    if not waypoints:
        return ("NoWaypoint", set(), "no matching service is bound to a waypoint (label istio.io/use-waypoint on "
                                     "the service or its namespace)")
    return "", waypoints, ""


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StatusWriter:
    """Writes computed statuses with `patch_namespaced_custom_object_status` (merge patch), only on change."""

    def __init__(self, api_client: Any, clock: Callable[[], datetime] = _now) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._clock = clock
        self._written: dict[ConfigKey, dict[str, Any]] = {}
        self._transitions: dict[tuple[ConfigKey, str, str], tuple[str, str]] = {}
        self.patches = 0
        self.failures = 0

    def reset(self) -> None:
        """Forget what was written (a new leader term re-writes everything once)."""
        self._written.clear()

    def write(self, statuses: Mapping[ConfigKey, dict[str, Any]]) -> list[ConfigKey]:
        written = []
        for key in list(self._written):
            if key not in statuses:
                del self._written[key]
        for key, body in sorted(statuses.items()):
            if key.kind not in STATUS_KINDS or self._written.get(key) == body:
                continue
            if self._patch(key, self._stamp(key, body)):
                self._written[key] = copy.deepcopy(body)
                written.append(key)
        return written

    def _stamp(self, key: ConfigKey, body: dict[str, Any]) -> dict[str, Any]:
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        out = copy.deepcopy(body)

        def stamp(conditions: list[dict[str, Any]], scope: str) -> None:
            for c in conditions:
                prev = self._transitions.get((key, scope, c["type"]))
                if prev is not None and prev[0] == c["status"]:
                    c["lastTransitionTime"] = prev[1]
                else:
                    c["lastTransitionTime"] = now
                    self._transitions[(key, scope, c["type"])] = (c["status"], now)

        stamp(out.get("conditions", []), "")
        for ln in out.get("listeners", []):
            stamp(ln.get("conditions", []), f"listener/{ln['name']}")
        return out

    def _patch(self, key: ConfigKey, status: dict[str, Any]) -> bool:
        group, version, plural = STATUS_KINDS[key.kind]
        try:
            self._api.patch_namespaced_custom_object_status(
                group, version, key.namespace, plural, key.name, {"status": status},
                _content_type="application/merge-patch+json")
        except Exception as exc:  # noqa: BLE001 - the API server's answer; retried on the next push
            if getattr(exc, "status", None) == 404:
                log.debug("status of %s not written: object gone", key)
            else:
                self.failures += 1
                log.warning("writing status of %s failed: %s", key, getattr(exc, "reason", None) or exc)
            return False
        self.patches += 1
        return True
