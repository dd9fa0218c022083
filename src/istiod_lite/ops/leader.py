"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica serves xDS from its own informers; only the leader writes status and owns waypoint objects.
A candidate takes the Lease when it does not exist, when it is released (empty holder), or when the
holder has not renewed it for `lease_duration` seconds *as observed on this replica's clock* (the record
last changed at local time t: expired at t + lease_duration; no trust in other replicas' wall clocks).
The leader renews every `retry_period`; if it cannot renew for `renew_deadline` it steps down. Updates are
optimistic (PUT with metadata.resourceVersion): a concurrent writer gets 409 and loses the round.

`LeaderElector.step()` is one blocking attempt (tests drive it with a fake clock); `run()` loops it in a
thread and calls `on_change(is_leader)` on the event loop; `release()` hands the Lease over at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "coordination.k8s.io", "v1", "leases"
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = ((GROUP, PLURAL, ("get", "create", "update")),)


def micro_time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wall() -> datetime:
    return datetime.now(timezone.utc)


class LeaderElector:
    def __init__(self, api_client: Any, namespace: str, name: str, identity: str, *, lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _wall, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        from kubernetes import client

        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self._api = client.CustomObjectsApi(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew: float | None = None
        self.is_leader = False

    # ---- one attempt ----------------------------------------------------------------------------------
    def step(self) -> bool:
        """Try to acquire or renew once; update and return `is_leader`."""
        ok = self._try_acquire_or_renew()
        now = self._clock()
        if ok:
            self._last_renew = now
            if not self.is_leader:
                log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
            self.is_leader = True
        elif self.is_leader and (self._last_renew is None or now - self._last_renew >= self.renew_deadline):
            log.warning("lost leadership: lease %s/%s not renewed for %.1fs", self.namespace, self.name,
                        now - (self._last_renew or now))
            self.is_leader = False
        return self.is_leader

    def _try_acquire_or_renew(self) -> bool:
        now_wall = micro_time(self._wall())
        try:
            lease = self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) != 404:
                log.warning("reading lease %s/%s failed: %s", self.namespace, self.name, _reason(exc))
                return False
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now_wall, now_wall, 0)}
            return self._call(lambda: self._api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body), "creating")
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        now = self._clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False  # held by another, not expired
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquire = spec.get("acquireTime") or now_wall
        else:
            acquire, transitions = now_wall, transitions + 1
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": self._spec(acquire, now_wall, transitions)}
        ok = self._call(lambda: self._api.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, body), "updating")
        if ok:
            self._observed = (self.identity, now_wall, int(self.lease_duration), transitions)
            self._observed_at = now
        return ok

    def _spec(self, acquire: str, renew: str, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": acquire, "renewTime": renew, "leaseTransitions": transitions}

    def _call(self, fn: Callable[[], Any], what: str) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) != 409:
                log.warning("%s lease %s/%s failed: %s", what, self.namespace, self.name, _reason(exc))
            return False

    def release(self) -> bool:
        """Give the Lease up (empty holder, 1s duration) so another replica takes over at once."""
        if not self.is_leader:
            return False
        self.is_leader = False
        try:
            lease = self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except Exception:  # noqa: BLE001
            return False
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        now_wall = micro_time(self._wall())
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now_wall,
                         "renewTime": now_wall, "leaseTransitions": int(spec.get("leaseTransitions") or 0)}}
        ok = self._call(lambda: self._api.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, body), "releasing")
        if ok:
            log.info("released lease %s/%s", self.namespace, self.name)
        return ok

    # ---- loop -------------------------------------------------------------------------------------
    async def run(self, on_change: Callable[[bool], Any]) -> None:
        """Campaign forever; `on_change(True/False)` on each change of leadership. Releases on cancel."""
        was = False
        try:
            while True:
                now = await asyncio.to_thread(self.step)
                if now != was:
                    was = now
                    result = on_change(now)
                    if asyncio.iscoroutine(result):
                        await result
                await self._sleep(self.retry_period)
        finally:
            if self.is_leader:
                await asyncio.shield(asyncio.to_thread(self.release))
                if was:
                    result = on_change(False)
                    if asyncio.iscoroutine(result):
                        await result


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status} {getattr(exc, 'reason', '')}" if status else f"{type(exc).__name__}: {exc}"


class LeaderDuties:
    """What only the leader does, after each push: server-side-apply the managed GatewayClasses and the objects
    of their waypoint Gateways, and write object status. `submit()` never blocks the push loop: the latest
    (snapshot, issues) wins and is handled by `run()`'s worker when this replica leads.

    `readiness_source` (an informer of the waypoint Deployments, anything with `run(sink)`) feeds `readiness`
    (ops.waypoint_readiness); a change in a waypoint's ready replicas re-runs the duties, so its Gateway becomes
    Programmed with an address as soon as a waypoint pod is ready. `classes`: the GatewayClasses managed."""

    def __init__(self, elector: LeaderElector, api_client: Any, waypoint_options: Any = None, *,
                 classes: tuple[str, ...] | None = None, readiness_source: Any = None) -> None:
        from istiod_lite.ops.status_writer import StatusWriter
        from istiod_lite.ops.waypoint_objects import DEFAULT_CLASSES, WaypointApplier, WaypointOptions
        from istiod_lite.ops.waypoint_readiness import DeploymentReadiness

        self.elector = elector
        self.writer = StatusWriter(api_client, classes=classes or DEFAULT_CLASSES)
        self.applier = WaypointApplier(api_client)
        self.waypoint_options = waypoint_options or WaypointOptions()
        self.classes = tuple(classes or DEFAULT_CLASSES)
        self.readiness = DeploymentReadiness(on_change=self._readiness_changed)
        self.readiness_source = readiness_source
        self._latest: tuple[Any, list[Any]] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0

    def submit(self, snapshot: Any, issues: list[Any]) -> None:
        self._latest = (snapshot, list(issues))
        self._wake.set()

    def _readiness_changed(self) -> None:
        self._wake.set()

    def _on_change(self, leading: bool) -> None:
        self.writer.reset()
        self.applier.reset()
        if leading:
            self._wake.set()

    async def run(self) -> None:
        election = asyncio.create_task(self.elector.run(self._on_change), name="leader-election")
        tasks = [election]
        if self.readiness_source is not None:
            tasks.append(asyncio.create_task(self.readiness_source.run(self.readiness), name="waypoint-readiness"))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for t in tasks:
                    if t.done():
                        t.result()
                if not self.elector.is_leader or self._latest is None:
                    continue
                if self.readiness_source is not None and not self.readiness.synced:
                    continue  # never judge a waypoint unready (and withdraw its address) before we have looked
                snapshot, issues = self._latest
                # the readiness as of now, taken on the event loop (the round runs in a thread)
                ready = self.readiness.frozen() if self.readiness_source is not None else None
                await asyncio.to_thread(self._duties, snapshot, issues, ready)
                self.rounds += 1
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _duties(self, snapshot: Any, issues: list[Any], ready: Any) -> None:
        from istiod_lite.ops.status_writer import compute_statuses
        from istiod_lite.ops.waypoint_objects import desired_objects

        self.applier.apply(desired_objects(snapshot.waypoints(), self.waypoint_options, self.classes))
        self.writer.write(compute_statuses(snapshot, issues, classes=self.classes, readiness=ready))

