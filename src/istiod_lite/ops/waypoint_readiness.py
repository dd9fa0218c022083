"""Readiness of the waypoint Deployments istiod-lite owns: what decides a waypoint Gateway's `Programmed`
condition and `status.addresses` (istiod sends ambient traffic to a waypoint only once its Gateway has an
address, and expects that only once the waypoint's Deployment has at least one ready pod).

`DeploymentReadiness` is a `sources.base.ConfigSink` fed by a Kubernetes informer of the Deployments labelled
`app.kubernetes.io/managed-by=istiod-lite` (sources.kube_kinds.WAYPOINT_DEPLOYMENTS, normalized to metadata and
replica counts). It maps each one to its Gateway (same namespace, label `gateway.networking.k8s.io/gateway-name`)
and calls `on_change()` when a Gateway's ready-replica count changes. Only touched from the event loop.
"""

from __future__ import annotations

from typing import Any, Callable

from istiod_lite.model.meta import ConfigKey, Issue

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def _gateway_of(obj: dict[str, Any]) -> tuple[ConfigKey, int] | None:
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    labels = md.get("labels") if isinstance(md.get("labels"), dict) else {}
    name = labels.get(GATEWAY_NAME_LABEL)
    if not isinstance(name, str) or not name:
        return None
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    ready = status.get("readyReplicas")
    return ConfigKey("Gateway", md.get("namespace") or "default", name), ready if isinstance(ready, int) else 0


class ReadinessView:
    """An immutable copy of the readiness at one moment (handed to a status round running in a thread)."""

    def __init__(self, ready: dict[ConfigKey, int], ever: frozenset[ConfigKey]) -> None:
        self._ready, self._ever = dict(ready), ever

    def ready_replicas(self, gateway: ConfigKey) -> int:
        return self._ready.get(gateway, 0)

    def ever_ready(self, gateway: ConfigKey) -> bool:
        return gateway in self._ever


class DeploymentReadiness:
    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._on_change = on_change
        self._deployments: dict[ConfigKey, tuple[ConfigKey, int]] = {}  # Deployment key -> (Gateway, ready)
        self._ever_ready: set[ConfigKey] = set()
        self.synced = False

    # ---- queries ----------------------------------------------------------------------------------
    def ready_replicas(self, gateway: ConfigKey) -> int:
        return sum(ready for gw, ready in self._deployments.values() if gw == gateway)

    def ever_ready(self, gateway: ConfigKey) -> bool:
        """Whether the waypoint has had a ready pod since this replica started watching (its address, once
        published, stays: withdrawing it would make ztunnel bypass the waypoint and its policies)."""
        return gateway in self._ever_ready

    def frozen(self) -> ReadinessView:
        return ReadinessView(self.snapshot(), frozenset(self._ever_ready))

    def snapshot(self) -> dict[ConfigKey, int]:
        """Ready replicas per Gateway that has a Deployment."""
        out: dict[ConfigKey, int] = {}
        for gw, ready in self._deployments.values():
            out[gw] = out.get(gw, 0) + ready
        return out

    # ---- ConfigSink -------------------------------------------------------------------------------
    def replace_origin(self, origin: str, objects: list[tuple[dict[str, Any], str | None]],
                       issues: list[Issue] | None = None) -> None:
        before = self.snapshot()
        first = not self.synced
        self._deployments = {}
        for obj, _ in objects:
            self._put(obj)
        self.synced = True
        self._changed(before, force=first)  # the first sync wakes the duties that waited for it

    def upsert(self, origin: str, obj: dict[str, Any], file: str | None = None) -> None:
        before = self.snapshot()
        self._put(obj)
        self._changed(before)

    def delete(self, origin: str, key: ConfigKey) -> None:
        before = self.snapshot()
        self._deployments.pop(key, None)
        self._changed(before)

    def _put(self, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        if not isinstance(md.get("name"), str):
            return
        key = ConfigKey("Deployment", md.get("namespace") or "default", md["name"])
        gw = _gateway_of(obj)
        if gw is None:
            self._deployments.pop(key, None)
        else:
            self._deployments[key] = gw

    def _changed(self, before: dict[ConfigKey, int], force: bool = False) -> None:
        after = {gw: ready for gw, ready in self.snapshot().items() if ready > 0}
        self._ever_ready.update(after)
        if (force or after != {gw: ready for gw, ready in before.items() if ready > 0}) and self._on_change:
            self._on_change()
