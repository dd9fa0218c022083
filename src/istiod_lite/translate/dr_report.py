"""Warnings for DestinationRule fields that are not applied at this waypoint, reported once per DR at their
field path (docs/destinationrule.md has the full table and the reasons). Errors Istio's validation would reject
are in model/validate_dr.py; this module only reports what is valid but not (or differently) applied.
"""

from __future__ import annotations

from typing import Any, Mapping

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, warning
from istiod_lite.translate.waypoint import Waypoint

DR_FIELDS = frozenset({"host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"})
POLICY_FIELDS = frozenset({"connectionPool", "outlierDetection", "loadBalancer", "portLevelSettings", "tls",
                           "retryBudget", "proxyProtocol", "port"})
_NOTHING_TO_REPORT = frozenset({"connectionPool", "retryBudget", "proxyProtocol", "port"})  # (no checks below)
LB_FIELDS = frozenset({"simple", "consistentHash", "localityLbSetting", "warmup", "warmupDurationSecs"})
WARMUP_POLICIES = frozenset({"ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "UNSPECIFIED", None})
NOT_APPLICABLE = {
    "tunnel": "tunnel (CONNECT/POST egress tunnelling) applies to TCP traffic; this waypoint serves HTTP "
              "listeners only; ignored",
}
LB_UNSUPPORTED = {
    "zoneAwareLbSetting": "zoneAwareLbSetting is not supported yet (needs the waypoint's zone-aware Envoy "
                          "local cluster); ignored",
    "backendUtilization": "backendUtilization (client-side weighted round robin from ORCA load reports) is not "
                          "supported yet; ignored",
}


def _lb_issues(wp: Waypoint, key: ConfigKey, lb: Mapping[str, Any], path: str) -> None:
    for f in sorted(set(lb) - LB_FIELDS):
        msg = LB_UNSUPPORTED.get(f, f"loadBalancer.{f} is not supported yet; ignored")
        wp.report(warning(key, f"{path}.{f}", msg))
    simple = lb.get("simple")
    if simple == "PASSTHROUGH":
        wp.report(warning(key, f"{path}.simple", "PASSTHROUGH forwards to the request's original destination "
                          "(ORIGINAL_DST, as Istio); at this waypoint's plain HTTP listener that is the waypoint "
                          "itself, so only clients that reach it through HBONE/ztunnel get useful routing",
                          "Passthrough"))
    has_warmup = lb.get("warmup") or lb.get("warmupDurationSecs")
    if has_warmup and (simple not in WARMUP_POLICIES or lb.get("consistentHash")):
        wp.report(warning(key, f"{path}.warmup", "warmup (slow start) applies to ROUND_ROBIN and LEAST_REQUEST "
                          "only; ignored for this load balancer", "Ignored"))


def _tls_issues(wp: Waypoint, key: ConfigKey, tls: Mapping[str, Any], path: str) -> None:
    mode = tls.get("mode")
    if mode == "ISTIO_MUTUAL":
        wp.report(warning(key, f"{path}.mode", "ISTIO_MUTUAL is ignored at a waypoint, as Istio does (the HBONE "
                          "hop is already mutual TLS); istiod-lite has no mesh identity yet, so the upstream hop "
                          "is plain text", "NeedsMeshIdentity"))
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        wp.report(warning(key, f"{path}.credentialName", "credentialName needs a secret source (SDS) that "
                          "istiod-lite does not provide; TLS is originated without those credentials",
                          "Unsupported"))


def _policy_issues(wp: Waypoint, key: ConfigKey, policy: Mapping[str, Any] | None, path: str) -> None:
    if not policy or policy.keys() <= _NOTHING_TO_REPORT:
        return
    for f in () if policy.keys() <= POLICY_FIELDS else sorted(set(policy) - POLICY_FIELDS):
        wp.report(warning(key, f"{path}.{f}", NOT_APPLICABLE.get(f, f"{f} is not supported yet; ignored"),
                          "NotApplicable" if f in NOT_APPLICABLE else "Unsupported"))
    if policy.get("loadBalancer"):
        _lb_issues(wp, key, policy["loadBalancer"], f"{path}.loadBalancer")
    if policy.get("tls"):
        _tls_issues(wp, key, policy["tls"], f"{path}.tls")
    od = policy.get("outlierDetection") or {}
    if "consecutiveErrors" in od:
        wp.report(warning(key, f"{path}.outlierDetection.consecutiveErrors", "consecutiveErrors is deprecated and "
                          "ignored, as Istio does; use consecutive5xxErrors or consecutiveGatewayErrors",
                          "Deprecated"))
    for i, pls in enumerate(policy.get("portLevelSettings") or ()):
        _policy_issues(wp, key, pls, f"{path}.portLevelSettings[{i}]")


def report_destination_rule(wp: Waypoint, dr: IstioConfig) -> None:
    spec = dr.spec
    for f in () if spec.keys() <= DR_FIELDS else sorted(set(spec) - DR_FIELDS):
        wp.report(warning(dr.key, f"spec.{f}", f"{f} is not supported yet; ignored"))
    _policy_issues(wp, dr.key, spec.get("trafficPolicy"), "spec.trafficPolicy")
    for i, s in enumerate(spec.get("subsets") or ()):
        if s.get("trafficPolicy"):
            _policy_issues(wp, dr.key, s["trafficPolicy"], f"spec.subsets[{i}].trafficPolicy")
