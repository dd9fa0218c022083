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
from istiod_lite.model.meta import Issue, warning
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
    (optional, one per snapshot and waypoint) keeps the policies attached to every service and each policy's
    classification across calls; the list returned is then shared: read-only."""
    if memo is None:
        return [p for p in candidates(wp, service)
                if any(_ref_matches(wp, p, ref, service) for _, ref in target_refs(p)) and not dry_run(p)]
    snap = wp.snapshot
    everywhere = memo.get("attached everywhere")
    if everywhere is None:  # the Gateway / GatewayClass candidates that attach to every service: the same for all
        found = [*snap.policies_targeting("Gateway", wp.namespace, wp.gateway.key.name),
                 *snap.policies_targeting("GatewayClass", snap.root_namespace, wp.gateway.class_name)]
        every = [p for p in sorted({id(p): p for p in found}.values(), key=snap.order_of) if _info(wp, memo, p)[1]]
        everywhere = memo["attached everywhere"] = (every, frozenset(id(p) for p in every))
    every, every_ids = everywhere
    skey = service.meta.key
    own = snap.policies_targeting(*skey)  # (kind, namespace, name): policies with a targetRef naming it
    if not own:
        return every
    if len(own) == 1 and len(every) == 1:  # (the usual: a root / waypoint policy and the service's own)
        p = own[0]
        simple = memo.get(_SIMPLE)
        if simple is not None and simple.get(id(p)) is p and id(p) not in every_ids and skey[0] in _SERVICE_GROUPS:
            a = every[0]  # (`p` attaches: a simple policy found by its targetRef, see attachment_issues)
            ta, tb = a.meta.creation_timestamp, p.meta.creation_timestamp  # (snapshot order, inline)
            return [a, p] if ta < tb or (ta == tb and a.meta.key <= p.meta.key) else [p, a]
    # A policy attaching everywhere is in `every`; any other attaches through a Service / ServiceEntry targetRef
    # (`_classify`), so it is indexed under the service's key: `own` holds every other candidate.
    kind, _, name = skey
    groups = _SERVICE_GROUPS.get(kind)
    if groups is None:
        return every
    if len(own) == 1:  # (the usual: the service's own policy)
        p = own[0]
        if id(p) in every_ids:
            return every
        simple = memo.get(_SIMPLE)
        if (simple is None or simple.get(id(p)) is not p) and not _names(p, kind, groups, name):
            return every
        mine = [p]
    else:
        mine = [p for p in own if id(p) not in every_ids and _names(p, kind, groups, name)]
        if not mine:
            return every
    if not every and len(mine) == 1:
        return mine
    if len(every) == 1 and len(mine) == 1:  # (the usual: a root / waypoint policy and the service's own)
        a, b = every[0], mine[0]
        ta, tb = a.meta.creation_timestamp, b.meta.creation_timestamp  # (snapshot order, inline)
        return [a, b] if ta < tb or (ta == tb and a.meta.key <= b.meta.key) else [b, a]
    return sorted({id(p): p for p in (*every, *mine)}.values(), key=snap.order_of)  # = candidates(), filtered


_SERVICE_GROUPS = {"Service": ("", "core"), "ServiceEntry": (NETWORKING_GROUP,)}


def _names(p: IstioConfig, kind: str, groups: tuple[str, ...], name: str) -> bool:
    """Whether `p` (in the service's namespace) attaches to the service `kind`/`name` through a targetRef:
    `_classify`'s service keys, for one key (a dry-run policy attaches nowhere)."""
    if p.meta.annotations and dry_run(p):
        return False
    spec = p.spec
    if not isinstance(spec, dict):
        return False
    ns = p.meta.key.namespace
    refs = spec.get("targetRefs")
    for r in refs if isinstance(refs, list) else ():
        if (isinstance(r, dict) and r.get("kind") == kind and r.get("name") == name
                and (r.get("group") or "") in groups and r.get("namespace") in (None, "", ns)):
            return True
    r = spec.get("targetRef")
    return (isinstance(r, dict) and r.get("kind") == kind and r.get("name") == name
            and (r.get("group") or "") in groups and r.get("namespace") in (None, "", ns))


def _info(wp: Waypoint, memo: dict, p: IstioConfig) -> tuple[IstioConfig, bool, frozenset]:
    info = memo[id(p)] = (p, *_classify(wp, p))
    return info


def _refs(p: IstioConfig) -> list[dict[str, Any]]:
    """`target_refs` without their field paths."""
    spec = p.spec if isinstance(p.spec, dict) else {}
    refs = spec.get("targetRefs")
    out = [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []
    ref = spec.get("targetRef")
    if isinstance(ref, dict):
        out.append(ref)
    return out


def _classify(wp: Waypoint, p: IstioConfig) -> tuple[bool, frozenset]:
    """(attaches to every service here, keys of the services it attaches to otherwise) of one policy: what
    `_ref_matches` decides, split into the part that does not depend on the service. A dry-run policy attaches
    nowhere. (Keys as plain (kind, namespace, name) tuples: equal to the ConfigKeys.)"""
    if dry_run(p):
        return False, frozenset()
    every = False
    keys = set()
    ns = p.namespace
    for ref in _refs(p):
        kind, group, name = ref.get("kind"), ref.get("group") or "", ref.get("name")
        if ref.get("namespace") not in (None, "", ns):
            continue
        if kind in ("Gateway", "GatewayClass") and group == GATEWAY_GROUP:
            every |= _ref_matches(wp, p, ref, None)  # type: ignore[arg-type]  (not read for these kinds)
        elif not isinstance(name, str):
            continue  # (never equal to a service name)
        elif kind == "Service" and group in ("", "core"):
            keys.add(("Service", ns, name))
        elif kind == "ServiceEntry" and group == NETWORKING_GROUP:
            keys.add(("ServiceEntry", ns, name))
    return every, frozenset(keys)


def dry_run(policy: IstioConfig) -> bool:
    return (policy.meta.annotation(DRY_RUN_ANNOTATION) or "").lower() == "true"


def attachment_issues(wp: Waypoint, memo: dict | None = None) -> list[Issue]:
    """Warnings on policies near this waypoint that it does not enforce (selector / no targetRefs / dry-run /
    targetRefs of kinds a waypoint does not support). `memo` (`attached`'s): the policies with nothing to report
    whose targetRef names are strings are noted there, so that `attached` need not check their targetRefs
    (`_names` of such a policy found by `policies_targeting(kind, namespace, name)` is True)."""
    near = {wp.namespace, wp.snapshot.root_namespace} | {s.meta.key.namespace for s in wp.services}
    out: list[Issue] = []
    simple: dict[int, IstioConfig] | None = None
    if memo is not None:
        simple = memo.setdefault(_SIMPLE, {})
    for ns in sorted(near):
        for p in wp.snapshot.policies_in(ns):
            if _clean(p):
                if simple is not None:
                    for r in p.spec["targetRefs"]:  # (a loop, not all(): no generator per policy)
                        if type(r.get("name")) is not str:
                            break
                    else:
                        simple[id(p)] = p
            else:
                out.extend(policy_issues(p))
    return out


_SIMPLE = "simple policies"  # attachment_issues' note in `attached`'s memo: id(policy) -> policy


_SUPPORTED = frozenset({("Gateway", GATEWAY_GROUP), ("GatewayClass", GATEWAY_GROUP), ("Service", ""),
                        ("Service", "core"), ("ServiceEntry", NETWORKING_GROUP)})


def _clean(p: IstioConfig) -> bool:
    """True when `policy_issues` has nothing to say: targetRefs of supported kinds in the policy's namespace, no
    targetRef, no dry-run (the common case, checked without building field paths)."""
    spec = p.spec
    if not isinstance(spec, dict) or "targetRef" in spec or (p.meta.annotations and dry_run(p)):
        return False
    refs = spec.get("targetRefs")
    if not isinstance(refs, list) or not refs:
        return False
    ns = p.meta.key.namespace
    for ref in refs:
        if not isinstance(ref, dict):
            return False
        if (ref.get("kind"), ref.get("group") or "") not in _SUPPORTED or ref.get("namespace") not in (None, "", ns):
            return False
    return True


def policy_issues(p: IstioConfig) -> list[Issue]:
    """The warnings attachment_issues reports for one policy (depends on the policy alone)."""
    if _clean(p):
        return []
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
        if (kind, group) not in _SUPPORTED:
            out.append(warning(p.key, path, f"targetRef kind {group + '/' if group else ''}{kind} is not "
                               "supported at a waypoint; it matches nothing", "TargetNotFound"))
        elif ref.get("namespace") not in (None, "", p.namespace):
            out.append(warning(p.key, f"{path}.namespace", "a targetRef namespace other than the policy's "
                               "never matches", "TargetNotFound"))
    return out
