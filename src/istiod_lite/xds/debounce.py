"""Debouncer: merges keys added in bursts into batches, with an injectable clock.

A batch is released `quiet` seconds after the last `add`, or at most `max_delay` after the batch's first
key, whichever comes first. Tests pass a fake clock (`now()` + `async sleep()`) so no real time passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Hashable, Iterable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Debouncer:
    def __init__(self, quiet: float = 0.1, max_delay: float = 1.0, clock: Clock | None = None):
        if quiet < 0 or max_delay < quiet:
            raise ValueError("need 0 <= quiet <= max_delay")
        self.quiet = quiet
        self.max_delay = max_delay
        self.clock: Clock = clock or MonotonicClock()
        self._keys: set[Hashable] = set()
        self._first_at = 0.0
        self._last_at = 0.0
        self._arrived = asyncio.Event()
        self.batches_emitted = 0

    def add(self, keys: Iterable[Hashable]) -> None:
        keys = set(keys)
        if not keys:
            return
        now = self.clock.now()
        if not self._keys:
            self._first_at = now
        self._keys |= keys
        self._last_at = now
        self._arrived.set()

    def pending(self) -> frozenset[Hashable]:
        return frozenset(self._keys)

    def _deadline(self) -> float:
        return min(self._last_at + self.quiet, self._first_at + self.max_delay)

    async def next_batch(self) -> set[Hashable]:
        """Wait for keys, then for the batch to settle; return the merged keys."""
        while not self._keys:
            self._arrived.clear()
            await self._arrived.wait()
        while True:
            remaining = self._deadline() - self.clock.now()
            if remaining <= 0:
                break
            await self.clock.sleep(remaining)
        batch, self._keys = self._keys, set()
        self.batches_emitted += 1
        return batch

    async def batches(self) -> AsyncIterator[set[Hashable]]:
        while True:
            yield await self.next_batch()
