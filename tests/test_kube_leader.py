"""Leader election on a Lease in the fake API server, with fake clocks: acquire, renew, hand-over on
expiry and on release, step-down when renewals fail, optimistic concurrency."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone


from istiod_lite.ops.leader import LeaderElector

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/istiod-lite"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.t - 1000.0)


def elector(api, identity, clock):
    return LeaderElector(api, "istio-system", "istiod-lite", identity, clock=clock, wall=clock.wall)


def test_first_candidate_creates_the_lease_with_the_right_body(fake, api):
    clock = Clock()
    a = elector(api, "istiod-lite-a", clock)
    assert a.step() is True
    [create] = fake.requests_to("POST", "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases")
    assert create.body == {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": "istiod-lite", "namespace": "istio-system"},
                           "spec": {"holderIdentity": "istiod-lite-a", "leaseDurationSeconds": 15,
                                    "acquireTime": "2025-01-01T00:00:00.000000Z",
                                    "renewTime": "2025-01-01T00:00:00.000000Z", "leaseTransitions": 0}}
    clock.t += 2
    assert a.step() is True
    [renew] = fake.requests_to("PUT", LEASE_PATH)
    assert renew.body["spec"] == {"holderIdentity": "istiod-lite-a", "leaseDurationSeconds": 15,
                                  "acquireTime": "2025-01-01T00:00:00.000000Z",
                                  "renewTime": "2025-01-01T00:00:02.000000Z", "leaseTransitions": 0}
    assert renew.body["metadata"]["resourceVersion"]  # optimistic concurrency


def test_hand_over_after_the_leader_stops_renewing(fake, api):
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step() and not b.step()
    for _ in range(5):  # a renews every 2s, b keeps observing fresh renewals
        clock.t += 2
        assert a.step() and not b.step()
    # a dies. b must wait lease_duration (15s) after it last saw the record change.
    clock.t += 14
    assert not b.step()
    clock.t += 1.5
    assert b.step() is True
    lease = fake.get("Lease", "istio-system", "istiod-lite")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    # a comes back: it cannot renew (b holds a fresh lease), and steps down after renew_deadline
    # a's last successful renewal was 15.5s ago (more than the 10s renew deadline): it steps down
    assert a.step() is False and a.is_leader is False


def test_leader_steps_down_when_renewals_fail_past_the_deadline(fake, api):
    clock = Clock()
    a = elector(api, "a", clock)
    assert a.step()
    fake.fail("PUT", LEASE_PATH, 500, times=100)
    clock.t += 4
    assert a.step() is True  # one failed renewal within the 10s deadline: still leader
    clock.t += 6
    assert a.step() is False  # 10s without a renewal
    assert a.is_leader is False


def test_release_hands_over_immediately(fake, api):
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step() and not b.step()
    assert a.release() is True
    released = fake.requests_to("PUT", LEASE_PATH)[-1].body["spec"]
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert b.step() is True  # no waiting for expiry
    assert fake.get("Lease", "istio-system", "istiod-lite")["spec"]["holderIdentity"] == "b"


def test_conflicting_update_loses_the_round(fake, api):
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step()
    assert a.release()
    fake.fail("PUT", LEASE_PATH, 409)  # someone else updated first
    assert b.step() is False
    assert b.step() is True


async def test_run_reports_leadership_changes_and_releases_on_cancel(fake, api):
    clock = Clock()
    changes: list[bool] = []

    async def fast_sleep(_):
        await asyncio.sleep(0.01)

    a = LeaderElector(api, "istio-system", "istiod-lite", "a", clock=clock, wall=clock.wall, sleep=fast_sleep)
    task = asyncio.create_task(a.run(changes.append))
    try:
        for _ in range(500):
            if changes:
                break
            await asyncio.sleep(0.01)
        assert changes == [True]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert changes == [True, False]
    assert fake.get("Lease", "istio-system", "istiod-lite")["spec"]["holderIdentity"] == ""
