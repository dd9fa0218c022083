"""Shared: work reused by the streams of one group and type (the replicas of a waypoint).

A stream in step with the cache builds a response that depends only on the cache's TypeResources (and a few
per-stream facts the caller puts in the key), so the server keeps one `Shared` per (flavour, group, type) and the
handlers (xds/delta.py, xds/sotw.py) store their results in it. It holds results for the latest TypeResources only:
when the cache moves on, the next build replaces them, so nothing older than the current content is kept alive.
"""

from __future__ import annotations

from typing import Any


class Shared:
    __slots__ = ("entries", "results", "hits")

    def __init__(self) -> None:
        self.entries: Any = None  # the TypeResources the results were computed for
        self.results: dict = {}
        self.hits = 0

    def get(self, entries: Any, key: Any) -> Any:
        """The result stored for (`entries`, `key`), or None."""
        if self.entries is not entries:
            self.entries, self.results = entries, {}
            return None
        found = self.results.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: Any, value: Any) -> Any:
        self.results[key] = value
        return value
