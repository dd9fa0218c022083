"""DestinationRule ``loadBalancer`` -> Cluster load-balancing fields (Istio ``applyLoadBalancer``,
``ApplyRingHashLoadBalancer``, ``setSlowStartConfig``). Endpoint-side locality settings are in dr_locality.py.

- ``simple``: unset / ``UNSPECIFIED`` / ``LEAST_REQUEST`` / ``LEAST_CONN`` -> LEAST_REQUEST (Istio's default);
  ``ROUND_ROBIN``; ``RANDOM``; ``PASSTHROUGH`` -> discovery ORIGINAL_DST + lb CLUSTER_PROVIDED (the request goes
  to the address the client connected to: at this waypoint's plain HTTP listener that is the listener itself, so
  it is reported as not useful here, but translated as Istio does);
- ``warmup{duration, minimumPercent, aggression}`` / deprecated ``warmupDurationSecs`` -> ``slow_start_config``
  of the round-robin / least-request lb config (other policies have no slow start: reported);
- ``consistentHash``: ``maglev{tableSize}`` -> MAGLEV (+ table_size when set); ``ringHash{minimumRingSize}`` ->
  RING_HASH (+ minimum_ring_size when set); neither -> RING_HASH with the deprecated ``minimumRingSize`` or
  1024. The hash key goes to routes (destination_rules.hash_policies).
- ``localityLbSetting`` with ``distribute``, or failover / failoverPriority together with outlier detection ->
  ``common_lb_config.locality_weighted_lb_config`` (Istio ``applyLocalityLoadBalancer``).
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.cluster.v3 import cluster_pb2

from istiod_lite.translate.durations import to_duration

LB_POLICIES = {
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}
DEFAULT_RING_SIZE = 1024
SLOW_START_AGGRESSION_KEY = "istiod_lite.slow_start.aggression"


def _slow_start(lb: Mapping[str, Any]) -> cluster_pb2.Cluster.SlowStartConfig | None:
    warmup = lb.get("warmup")
    if warmup:
        d = to_duration(warmup.get("duration")) if warmup.get("duration") else None
        if d is None:
            return None
        cfg = cluster_pb2.Cluster.SlowStartConfig(slow_start_window=d)
        if warmup.get("aggression") is not None:
            cfg.aggression.default_value = float(warmup["aggression"])
            cfg.aggression.runtime_key = SLOW_START_AGGRESSION_KEY
        if warmup.get("minimumPercent") is not None:
            cfg.min_weight_percent.value = float(warmup["minimumPercent"])
        return cfg
    if lb.get("warmupDurationSecs"):
        d = to_duration(lb["warmupDurationSecs"])
        return cluster_pb2.Cluster.SlowStartConfig(slow_start_window=d) if d is not None else None
    return None


def wants_locality_weighting(lb: Mapping[str, Any] | None, has_outlier: bool) -> bool:
    setting = locality_setting(lb)
    if setting is None:
        return False
    if setting.get("distribute"):
        return True
    return has_outlier and bool(setting.get("failover") or setting.get("failoverPriority"))


def locality_setting(lb: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The DR's localityLbSetting unless ``enabled: false`` (Istio ``GetLocalityLbSetting``; the mesh default
    setting is ``{enabled: true}`` with no distribute/failover)."""
    setting = (lb or {}).get("localityLbSetting")
    if setting is None:
        return {}
    if setting.get("enabled") is False:
        return None
    return setting


def apply_load_balancer(c: cluster_pb2.Cluster, lb: Mapping[str, Any] | None, has_outlier: bool = False) -> None:
    lb = lb or {}
    if wants_locality_weighting(lb, has_outlier):
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    if c.type == cluster_pb2.Cluster.ORIGINAL_DST:
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return
    simple = lb.get("simple") or "LEAST_REQUEST"
    if simple == "PASSTHROUGH":
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        c.ClearField("eds_cluster_config")
        c.ClearField("load_assignment")
        return
    c.lb_policy = LB_POLICIES.get(simple, cluster_pb2.Cluster.LEAST_REQUEST)
    slow = _slow_start(lb)
    if slow is not None:
        if c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN:
            c.round_robin_lb_config.slow_start_config.CopyFrom(slow)
        elif c.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
            c.least_request_lb_config.slow_start_config.CopyFrom(slow)
    ch = lb.get("consistentHash")
    if not ch:
        return
    if ch.get("maglev") is not None:
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        c.ClearField("lb_config")
        if int(ch["maglev"].get("tableSize") or 0):
            c.maglev_lb_config.table_size.value = int(ch["maglev"]["tableSize"])
    elif ch.get("ringHash") is not None:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        c.ClearField("lb_config")
        if int(ch["ringHash"].get("minimumRingSize") or 0):
            c.ring_hash_lb_config.minimum_ring_size.value = int(ch["ringHash"]["minimumRingSize"])
    else:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        c.ClearField("lb_config")
        c.ring_hash_lb_config.minimum_ring_size.value = int(ch.get("minimumRingSize") or 0) or DEFAULT_RING_SIZE
