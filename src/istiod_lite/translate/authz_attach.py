"""Which AuthorizationPolicies apply to a service behind a waypoint (Istio's ``ShouldAttachPolicy`` for
waypoints, ISTIO-REFERENCE §1.5).

A policy attaches through ``targetRefs`` (or the older single ``targetRef``):
- ``Gateway`` (group gateway.networking.k8s.io) naming the waypoint, policy in the waypoint's namespace: every
  service on the waypoint;
- ``Service`` (group "" / core) or ``ServiceEntry`` (group networking.istio.io) in the policy's namespace: that
  service's virtual hosts only;
- ``GatewayClass`` naming the waypoint's class, policy in the root namespace: every waypoint of the class.
A ``targetRef.namespace`` other than the policy's never matches. Policies with a ``selector`` or without
targetRefs are enforced by ztunnel in Istio, never by a waypoint: a warning says so (for policies in a namespace
this waypoint or one of its services lives in, or in the root namespace).
"""

from __future__ import annotations

from typing import Any

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, warning
from istiod_lite.model.service import Service
from istiod_lite.translate.waypoint import Waypoint

GATEWAY_GROUP = "gateway.networking.k8s.io"
NETWORKING_GROUP = "networking.istio.io"
DRY_RUN_ANNOTATION = "istio.io/dry-run"


def target_refs(policy: IstioConfig) -> list[tuple[str, dict[str, Any]]]:
    """(field path, targetRef) pairs; tolerant of malformed specs (an invalid policy is still attached so that
    it can fail closed)."""
    spec = policy.spec if isinstance(policy.spec, dict) else {}
    out = []
    refs = spec.get("targetRefs")
    if isinstance(refs, list):
        out += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(refs) if isinstance(r, dict)]
    ref = spec.get("targetRef")
    if isinstance(ref, dict):
        out.append(("spec.targetRef", ref))
    return out


def _ref_matches(wp: Waypoint, policy: IstioConfig, ref: dict[str, Any], service: Service) -> bool:
    kind, group, name = ref.get("kind"), ref.get("group") or "", ref.get("name")
    if ref.get("namespace") not in (None, "", policy.namespace):
        return False
    if kind == "Gateway" and group == GATEWAY_GROUP:
        return policy.namespace == wp.namespace and name == wp.gateway.key.name
    if kind == "GatewayClass" and group == GATEWAY_GROUP:
        return policy.namespace == wp.snapshot.root_namespace and name == wp.gateway.class_name
    if kind == "Service" and group in ("", "core"):
        return service.key.kind == "Service" and service.key.namespace == policy.namespace and service.key.name == name
    if kind == "ServiceEntry" and group == NETWORKING_GROUP:
        return (service.key.kind == "ServiceEntry" and service.key.namespace == policy.namespace
                and service.key.name == name)
    return False


def candidates(wp: Waypoint, service: Service) -> list[IstioConfig]:
    """Policies that may attach to `service` here (snapshot index by targetRef), snapshot order."""
    snap = wp.snapshot
    found = [*snap.policies_targeting("Gateway", wp.namespace, wp.gateway.key.name),
             *snap.policies_targeting("GatewayClass", snap.root_namespace, wp.gateway.class_name),
             *snap.policies_targeting(service.key.kind, service.namespace, service.key.name)]
    unique = {id(p): p for p in found}
    return sorted(unique.values(), key=snap.order_of)


def attached(wp: Waypoint, service: Service, memo: dict | None = None) -> list[IstioConfig]:
    """The policies that apply to `service` on this waypoint, in snapshot order (creation time, key). `memo`
    (optional, one per snapshot) keeps each policy's targetRefs and dry-run flag across calls."""
    if memo is None:
        return [p for p in candidates(wp, service)
                if any(_ref_matches(wp, p, ref, service) for _, ref in target_refs(p)) and not dry_run(p)]
    snap = wp.snapshot
    common = memo.get("waypoint candidates")
    if common is None:  # the Gateway / GatewayClass candidates: the same for every service
        found = [*snap.policies_targeting("Gateway", wp.namespace, wp.gateway.key.name),
                 *snap.policies_targeting("GatewayClass", snap.root_namespace, wp.gateway.class_name)]
        common = memo["waypoint candidates"] = sorted({id(p): p for p in found}.values(), key=snap.order_of)
    own = snap.policies_targeting(service.key.kind, service.namespace, service.key.name)
    if not own:
        cands = common
    elif not common and len(own) == 1:
        cands = own
    elif len(common) == 1 and len(own) == 1:  # (the usual: a root / waypoint policy and the service's own)
        a, b = common[0], own[0]
        cands = [a] if a is b else [a, b] if snap.order_of(a) <= snap.order_of(b) else [b, a]
    else:
        cands = sorted({id(p): p for p in (*common, *own)}.values(), key=snap.order_of)  # = candidates()
    skey = service.key
    out = []
    for p in cands:
        info = memo.get(id(p))
        if info is None or info[0] is not p:
            info = memo[id(p)] = (p, *_classify(wp, p))
        if info[1] or skey in info[2]:
            out.append(p)
    return out


def _classify(wp: Waypoint, p: IstioConfig) -> tuple[bool, frozenset]:
    """(attaches to every service here, keys of the services it attaches to otherwise) of one policy: what
    `_ref_matches` decides, split into the part that does not depend on the service. A dry-run policy attaches
    nowhere."""
    if dry_run(p):
        return False, frozenset()
    every = False
    keys = set()
    for _, ref in target_refs(p):
        kind, group, name = ref.get("kind"), ref.get("group") or "", ref.get("name")
        if ref.get("namespace") not in (None, "", p.namespace):
            continue
        if kind in ("Gateway", "GatewayClass") and group == GATEWAY_GROUP:
            every |= _ref_matches(wp, p, ref, None)  # type: ignore[arg-type]  (not read for these kinds)
        elif not isinstance(name, str):
            continue  # (never equal to a service name)
        elif kind == "Service" and group in ("", "core"):
            keys.add(ConfigKey("Service", p.namespace, name))
        elif kind == "ServiceEntry" and group == NETWORKING_GROUP:
            keys.add(ConfigKey("ServiceEntry", p.namespace, name))
    return every, frozenset(keys)


def dry_run(policy: IstioConfig) -> bool:
    return (policy.meta.annotation(DRY_RUN_ANNOTATION) or "").lower() == "true"


def attachment_issues(wp: Waypoint) -> list[Issue]:
    """Warnings on policies near this waypoint that it does not enforce (selector / no targetRefs / dry-run /
    targetRefs of kinds a waypoint does not support)."""
    near = {wp.namespace, wp.snapshot.root_namespace} | {s.namespace for s in wp.services}
    out: list[Issue] = []
    for p in (p for ns in sorted(near) for p in wp.snapshot.policies_in(ns)):
        out.extend(policy_issues(p))
    return out


def policy_issues(p: IstioConfig) -> list[Issue]:
    """The warnings attachment_issues reports for one policy (depends on the policy alone)."""
    refs = target_refs(p)
    spec = p.spec if isinstance(p.spec, dict) else {}
    out: list[Issue] = []
    if not refs:
        where = "spec.selector" if spec.get("selector") else "spec"
        return [warning(p.key, where, "not applied at the waypoint: use targetRefs (a policy with a "
                        "selector or without targetRefs is enforced by ztunnel, not by a waypoint)",
                        "NotAppliedAtWaypoint")]
    if dry_run(p):
        out.append(warning(p.key, f"metadata.annotations[{DRY_RUN_ANNOTATION}]",
                           "dry-run policies are not supported yet: this policy is not enforced"))
    for path, ref in refs:
        kind, group = ref.get("kind"), ref.get("group") or ""
        if (kind, group) not in {("Gateway", GATEWAY_GROUP), ("GatewayClass", GATEWAY_GROUP),
                                 ("Service", ""), ("Service", "core"), ("ServiceEntry", NETWORKING_GROUP)}:
            out.append(warning(p.key, path, f"targetRef kind {group + '/' if group else ''}{kind} is not "
                               "supported at a waypoint; it matches nothing", "TargetNotFound"))
        elif ref.get("namespace") not in (None, "", p.namespace):
            out.append(warning(p.key, f"{path}.namespace", "a targetRef namespace other than the policy's "
                               "never matches", "TargetNotFound"))
    return out
