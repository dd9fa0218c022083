"""Reporting of Issues: each distinct issue is logged once when it appears and once when it is resolved;
the current set is kept for /debug/issues (and, later, for object status)."""

from __future__ import annotations

import logging
from typing import Iterable

from istiod_lite.model.meta import Issue

log = logging.getLogger("istiod_lite.issues")


class IssueReporter:
    def __init__(self) -> None:
        self._current: set[Issue] = set()
        self._last: list[Issue] = []  # the list given last time (mostly the same objects push after push)

    def update(self, issues: Iterable[Issue]) -> tuple[list[Issue], list[Issue]]:
        """Replace the current set; log what is new and what went away. Returns (new, resolved).
        The same list as last time (compared element by element, identity first) costs no set or sort."""
        given = list(issues)
        if given == self._last:
            return [], []
        self._last = given
        latest = set(given)
        new = sorted(latest - self._current, key=str)
        resolved = sorted(self._current - latest, key=str)
        for issue in new:
            level = logging.ERROR if issue.is_error else logging.WARNING
            log.log(level, "%s", issue, extra={"fields": _fields(issue)})
        for issue in resolved:
            log.info("resolved: %s", issue, extra={"fields": _fields(issue)})
        self._current = latest
        return new, resolved

    def current(self) -> list[Issue]:
        return sorted(self._current, key=str)

    def as_json(self) -> list[dict]:
        return [_fields(i) | {"message": i.message} for i in self.current()]


def _fields(issue: Issue) -> dict:
    return {
        "object": str(issue.key) if issue.key else None,
        "file": issue.file,
        "path": issue.path,
        "reason": issue.reason,
        "severity": issue.severity.value,
    }
