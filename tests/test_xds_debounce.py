"""Debouncer with a fake clock: quiet period, max delay, merging; no real time passes."""

from __future__ import annotations

import asyncio

import pytest

from istiod_lite.xds.debounce import Debouncer


class FakeClock:
    """now() + sleep() that only return when the test advances time."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleepers: list[tuple[float, asyncio.Future]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.t + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        self.t += seconds
        for wake_at, fut in list(self.sleepers):
            if wake_at <= self.t + 1e-9 and not fut.done():
                fut.set_result(None)
                self.sleepers.remove((wake_at, fut))
        for _ in range(5):  # let woken tasks run
            await asyncio.sleep(0)


async def test_quiet_period_merges_keys():
    clock = FakeClock()
    d = Debouncer(quiet=0.1, max_delay=1.0, clock=clock)
    task = asyncio.create_task(d.next_batch())
    d.add(["a"])
    await clock.advance(0.05)
    d.add(["b", "a"])
    await clock.advance(0.06)  # 0.11 after first, 0.06 after last: still quiet-waiting
    assert not task.done()
    await clock.advance(0.05)
    assert task.done() and task.result() == {"a", "b"}
    assert d.pending() == frozenset()


async def test_max_delay_bounds_a_continuous_stream():
    clock = FakeClock()
    d = Debouncer(quiet=0.1, max_delay=0.3, clock=clock)
    task = asyncio.create_task(d.next_batch())
    for i in range(10):
        d.add([i])
        await clock.advance(0.05)
        if task.done():
            break
    assert task.done() and task.result() == set(range(6))  # keys at t=0..0.25
    assert clock.t == pytest.approx(0.3)
    # the next batch starts fresh with the keys added after
    task2 = asyncio.create_task(d.next_batch())
    d.add(["late"])
    await clock.advance(0.1)
    assert task2.done() and task2.result() == {"late"}


async def test_waits_for_first_key_and_ignores_empty_adds():
    clock = FakeClock()
    d = Debouncer(quiet=0.1, max_delay=1.0, clock=clock)
    task = asyncio.create_task(d.next_batch())
    d.add([])
    await clock.advance(5)
    assert not task.done()
    d.add(["x"])
    await clock.advance(0.1)
    assert task.result() == {"x"}


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        Debouncer(quiet=2, max_delay=1)
