"""Object status in the cluster: what istiod-lite tells users on the objects they applied.

`compute_statuses(snapshot, issues, classes=, readiness=)` is pure: for each waypoint Gateway of the managed
GatewayClasses, conditions Accepted / Programmed (reasons, observedGeneration), listener conditions and
`status.addresses` (the waypoint Service's hostname, as Istio writes it, once the waypoint Deployment has a ready
replica); `Accepted` on the managed GatewayClasses; for each VirtualService / DestinationRule /
AuthorizationPolicy that concerns one of those waypoints, a `WaypointAccepted` condition saying whether it
applies to it, or why not (validation errors with field paths, no service bound to a waypoint, no targetRefs).
Objects for Istio's own waypoints, or unrelated to ours, get nothing from us. Bodies carry no timestamps.
The condition's type is Istio's `WaypointAccepted` when istiod-lite manages Istio's own class `istio-waypoint`
(it replaces istiod for waypoints, so nobody else writes it); beside istiod (only our class
`istiod-lite-waypoint`), istiod writes `WaypointAccepted` on the same AuthorizationPolicies, so ours is
`istiod-lite.io/WaypointAccepted` and the two controllers never overwrite each other (`condition_type`).

`StatusWriter.write(statuses)` writes each object whose computed status differs from what it last wrote,
without clobbering other controllers (Istio writes conditions on the same objects): it GETs the current
status, replaces only the condition types istiod-lite owns (OWNED_CONDITIONS; on Gateways of our classes also
`addresses` and `listeners`), keeps every other condition and field, keeps `lastTransitionTime` of a
condition whose status did not flip, and sends a JSON merge patch carrying `metadata.resourceVersion` as a
precondition: a concurrent writer makes it 409, and it re-reads and retries. An object that stops concerning
us loses our condition. Only the leader calls it (ops.leader). Blocking: call it in a thread.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Iterable, Mapping, Protocol

from istiod_lite.model.gateway import WAYPOINT_CLASSES
from istiod_lite.model.hosts import host_matches, kubernetes_short_names, resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.snapshot import ConfigSnapshot

log = logging.getLogger(__name__)

WAYPOINT_ACCEPTED = "WaypointAccepted"  # Istio's condition type on AuthorizationPolicies
OUR_WAYPOINT_ACCEPTED = "istiod-lite.io/WaypointAccepted"  # ours, beside istiod
GATEWAY_GROUP = "gateway.networking.k8s.io"
# kind -> (group, version, plural) of the objects whose status we write
STATUS_KINDS: dict[str, tuple[str, str, str]] = {
    "Gateway": (GATEWAY_GROUP, "v1", "gateways"),
    "VirtualService": ("networking.istio.io", "v1", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "v1", "destinationrules"),
    "AuthorizationPolicy": ("security.istio.io", "v1", "authorizationpolicies"),
}
STATUS_KINDS["GatewayClass"] = (GATEWAY_GROUP, "v1", "gatewayclasses")  # cluster-scoped
CONFIG_KINDS = frozenset({"VirtualService", "DestinationRule", "AuthorizationPolicy"})
# condition types istiod-lite owns, per kind: all others on the object belong to someone else and are kept
OWNED_CONDITIONS: dict[str, frozenset[str]] = {
    "GatewayClass": frozenset({"Accepted"}),
    "Gateway": frozenset({"Accepted", "Programmed"}),
    **{k: frozenset({WAYPOINT_ACCEPTED}) for k in CONFIG_KINDS},  # see condition_type / StatusWriter
}
# status fields other than conditions that istiod-lite writes wholesale (it is the Gateway's controller)
OWNED_FIELDS: dict[str, tuple[str, ...]] = {"Gateway": ("addresses", "listeners")}
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (group, f"{plural}/status", ("get", "patch")) for group, _, plural in STATUS_KINDS.values()
)
MAX_RETRIES = 3
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


class Readiness(Protocol):
    """Ready replicas of each waypoint's Deployment (ops.waypoint_readiness.DeploymentReadiness)."""

    def ready_replicas(self, gateway: ConfigKey) -> int: ...

    def ever_ready(self, gateway: ConfigKey) -> bool: ...


def condition_type(classes: Collection[str]) -> str:
    """The config objects' condition type: Istio's name when we manage `istio-waypoint` (istiod does not run
    waypoints then), a prefixed one of ours when only our own class is managed (istiod writes Istio's)."""
    return WAYPOINT_ACCEPTED if "istio-waypoint" in classes else OUR_WAYPOINT_ACCEPTED


def compute_statuses(snapshot: ConfigSnapshot, issues: Iterable[Issue], *,
                     classes: Collection[str] = WAYPOINT_CLASSES,
                     readiness: Readiness | None = None) -> dict[ConfigKey, dict[str, Any]]:
    """The status body (the value of `.status`) of every object istiod-lite reports on: the waypoint Gateways
    of `classes` (and those GatewayClasses), and the VirtualServices / DestinationRules / AuthorizationPolicies
    that concern them (see `_concerns`). With `readiness`, a waypoint is Programmed and gets its address only
    once its Deployment has a ready replica; without it (files, tests) the Service alone suffices."""
    by_key: dict[ConfigKey, list[Issue]] = {}
    for issue in sorted(set(issues), key=str):
        if issue.key is not None:
            by_key.setdefault(issue.key, []).append(issue)
    ours = {g.key: g for g in snapshot.waypoints() if g.class_name in classes}
    ctype = condition_type(classes)
    out: dict[ConfigKey, dict[str, Any]] = {}
    for name in sorted(set(classes)):
        out[ConfigKey("GatewayClass", "", name)] = {"conditions": [
            _cond("Accepted", True, "Accepted", "Handled by istiod-lite", 0)]}
    for gw in ours.values():
        out[gw.key] = _gateway_status(snapshot, gw, by_key.get(gw.key, []), readiness)
    namespaces = _our_namespaces(snapshot, ours)
    seen: set[ConfigKey] = set()
    for cfg in (*snapshot.virtual_services, *snapshot.destination_rules, *snapshot.authorization_policies):
        seen.add(cfg.key)
        reason, waypoints, why = _waypoints_of(snapshot, cfg)
        mine = waypoints & ours.keys()
        if mine or (not waypoints and cfg.key.namespace in namespaces):
            out[cfg.key] = _config_status(cfg, by_key.get(cfg.key, []), (reason, mine, why), ctype)
    for key, problems in by_key.items():  # objects rejected by the parser: only their issues are known
        if key.kind in CONFIG_KINDS and key not in seen and key.namespace in namespaces:
            errors = [i for i in problems if i.is_error]
            if errors:
                out[key] = {"conditions": [_cond(ctype, False, "Invalid", _describe(errors), 0)]}
    return out


def _our_namespaces(snapshot: ConfigSnapshot, ours: Mapping[ConfigKey, Any]) -> set[str]:
    """Namespaces holding one of our waypoints or a service bound to one: there, an object that reaches no
    waypoint, or is invalid, was probably meant for ours, and saying why not is useful."""
    out = {k.namespace for k in ours}
    for key in ours:
        out.update(s.key.namespace for s in snapshot.services_for_waypoint(key))
    return out


def _gateway_status(snapshot: ConfigSnapshot, gw: Any, problems: list[Issue],
                    readiness: Readiness | None) -> dict[str, Any]:
    gen = gw.meta.generation
    errors = [i for i in problems if i.is_error]
    gw_errors = [i for i in errors if not i.path.startswith("spec.listeners")]
    hostname = f"{gw.key.name}.{gw.key.namespace}.svc.{snapshot.domain_suffix}"
    svc = next((s for s in snapshot.services_matching(hostname) if s.key == ConfigKey("Service", gw.key.namespace,
                                                                                          gw.key.name)), None)
    ready = readiness.ready_replicas(gw.key) if readiness is not None else 1
    ever_ready = ready > 0 or (readiness is not None and readiness.ever_ready(gw.key))
    conditions = []
    programmed = False
    pending = "waiting for the waypoint Service"
    if gw_errors:
        conditions.append(_cond("Accepted", False, "Invalid", _describe(gw_errors), gen))
        conditions.append(_cond("Programmed", False, "Invalid", "the Gateway is not accepted", gen))
    else:
        conditions.append(_cond("Accepted", True, "Accepted", "Resource accepted", gen))
        if svc is None:
            conditions.append(_cond("Programmed", False, "AddressNotAssigned",
                                    f"waiting for the waypoint Service {gw.key.namespace}/{gw.key.name}", gen))
        elif ready <= 0:
            pending = (f"waiting for a ready replica of the waypoint Deployment {gw.key.namespace}/{gw.key.name} "
                       f"(0 ready)")
            conditions.append(_cond("Programmed", False, "NoResources", pending, gen))
        else:
            programmed = True
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
                _cond("Programmed", ok and programmed, "Programmed" if ok and programmed else "Pending",
                      "Programmed" if ok and programmed else pending, gen),
                _cond("ResolvedRefs", True, "ResolvedRefs", "No unresolved references", gen),
            ],
        })
    # The address is what makes istiod send bound traffic to the waypoint: published once it has a ready pod,
    # and kept if the pods go away later (withdrawing it would let ztunnel bypass the waypoint's policies). When
    # only readiness is missing, `addresses` is left out of the body: the writer keeps what the server has
    # (nothing on a new waypoint; the address published before a restart of istiod-lite).
    body: dict[str, Any] = {"conditions": conditions, "listeners": listeners}
    if svc is None or gw_errors:
        body["addresses"] = []
    elif ever_ready:
        body["addresses"] = [{"type": "Hostname", "value": hostname}]
    return body


def _config_status(cfg: IstioConfig, problems: list[Issue],
                   binding: tuple[str, set[ConfigKey], str], ctype: str) -> dict[str, Any]:
    gen = cfg.meta.generation
    errors = [i for i in problems if i.is_error]
    warnings = [i for i in problems if not i.is_error]
    if errors:
        cond = _cond(ctype, False, "Invalid", _describe(errors), gen)
    else:
        reason, waypoints, why = binding
        if waypoints:
            msg = "bound to waypoint " + ", ".join(f"{k.namespace}/{k.name}" for k in sorted(waypoints))
            if warnings:
                msg += "; ignored: " + _describe(warnings)
            cond = _cond(ctype, True, "Accepted", msg, gen)
        else:
            cond = _cond(ctype, False, reason, why, gen)
    return {"conditions": [cond]}


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


def merge_status(kind: str, current: Mapping[str, Any], body: Mapping[str, Any], now: str,
                 config_condition: str = WAYPOINT_ACCEPTED) -> dict[str, Any]:
    """The new `.status`: `current` with our condition types (and owned fields) replaced by `body`'s, other
    conditions kept in place, `lastTransitionTime` kept for a condition whose status did not change.
    `config_condition`: the condition type we own on VirtualServices/DestinationRules/AuthorizationPolicies."""
    owned = frozenset({config_condition}) if kind in CONFIG_KINDS else OWNED_CONDITIONS[kind]
    out = copy.deepcopy(dict(current))
    out["conditions"] = _merge_conditions(current.get("conditions"), body.get("conditions") or [], owned, now)
    for name in OWNED_FIELDS.get(kind, ()):
        if name == "listeners":
            before = {ln.get("name"): ln for ln in current.get("listeners") or [] if isinstance(ln, dict)}
            out["listeners"] = [
                {**copy.deepcopy(ln), "conditions": _merge_conditions(
                    (before.get(ln["name"]) or {}).get("conditions"), ln.get("conditions") or [],
                    {c["type"] for c in ln.get("conditions") or []}, now)}
                for ln in body.get("listeners") or []]
        elif name in body:
            out[name] = copy.deepcopy(body[name])
    if not out["conditions"] and "conditions" not in current:
        del out["conditions"]
    return out


def _merge_conditions(current: Any, ours: list[dict[str, Any]], owned: Collection[str],
                      now: str) -> list[dict[str, Any]]:
    existing = [c for c in current or [] if isinstance(c, dict)]
    by_type = {c.get("type"): c for c in existing}
    stamped = {}
    for c in ours:
        prev = by_type.get(c["type"])
        new = dict(c)
        same = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        new["lastTransitionTime"] = prev["lastTransitionTime"] if same else now
        stamped[c["type"]] = new
    out = []
    for c in existing:
        t = c.get("type")
        if t in stamped:
            out.append(stamped.pop(t))
        elif t not in owned:
            out.append(c)  # another controller's condition
    out.extend(stamped[t] for t in (c["type"] for c in ours) if t in stamped)
    return out


class StatusWriter:
    """Writes computed statuses to the status subresource, merged by condition type, only on change."""

    def __init__(self, api_client: Any, clock: Callable[[], datetime] = _now,
                 classes: Collection[str] = WAYPOINT_CLASSES) -> None:
        """`classes`: the managed GatewayClasses (they decide the config objects' condition type)."""
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._clock = clock
        self.config_condition = condition_type(classes)
        self._written: dict[ConfigKey, dict[str, Any]] = {}
        self.patches = 0
        self.conflicts = 0
        self.failures = 0

    def reset(self) -> None:
        """Forget what was written (a new leader term re-checks everything once)."""
        self._written.clear()

    def write(self, statuses: Mapping[ConfigKey, dict[str, Any]]) -> list[ConfigKey]:
        """Write what changed; returns the keys whose status was written (or already right on the server)."""
        written = []
        for key in sorted(k for k in self._written if k not in statuses):
            del self._written[key]
            if key.kind in CONFIG_KINDS:  # no longer concerns our waypoints: take our condition back
                self._write_one(key, {"conditions": []})
        for key, body in sorted(statuses.items()):
            if key.kind not in STATUS_KINDS or self._written.get(key) == body:
                continue
            if self._write_one(key, body):
                self._written[key] = copy.deepcopy(body)
                written.append(key)
        return written

    def _write_one(self, key: ConfigKey, body: dict[str, Any]) -> bool:
        for _ in range(MAX_RETRIES):
            try:
                current = self._get(key)
            except Exception as exc:  # noqa: BLE001 - the API server's answer; retried on the next push
                return self._failed(key, "reading", exc)
            status = current.get("status") if isinstance(current.get("status"), dict) else {}
            merged = merge_status(key.kind, status, body, self._clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  self.config_condition)
            if merged == status:
                return True  # already what we would write: no patch, no watch event
            rv = (current.get("metadata") or {}).get("resourceVersion")
            try:
                self._patch(key, {"metadata": {"resourceVersion": rv}, "status": merged})
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) == 409:
                    self.conflicts += 1
                    continue  # someone else wrote in between: read again
                return self._failed(key, "writing", exc)
            self.patches += 1
            return True
        self.failures += 1
        log.warning("writing status of %s: still conflicting after %d attempts; retried on the next push",
                    key, MAX_RETRIES)
        return False

    def _failed(self, key: ConfigKey, what: str, exc: BaseException) -> bool:
        if getattr(exc, "status", None) == 404:
            log.debug("status of %s not written: object gone", key)
        else:
            self.failures += 1
            log.warning("%s status of %s failed: %s", what, key, getattr(exc, "reason", None) or exc)
        return False

    def _get(self, key: ConfigKey) -> dict[str, Any]:
        group, version, plural = STATUS_KINDS[key.kind]
        if not key.namespace:
            return self._api.get_cluster_custom_object_status(group, version, plural, key.name)
        return self._api.get_namespaced_custom_object_status(group, version, key.namespace, plural, key.name)

    def _patch(self, key: ConfigKey, patch: dict[str, Any]) -> None:
        group, version, plural = STATUS_KINDS[key.kind]
        kw = {"_content_type": "application/merge-patch+json"}
        if not key.namespace:
            self._api.patch_cluster_custom_object_status(group, version, plural, key.name, patch, **kw)
        else:
            self._api.patch_namespaced_custom_object_status(group, version, key.namespace, plural, key.name,
                                                            patch, **kw)
