"""Identity of configuration objects (ConfigKey), user-facing problems (Issue) and status conditions."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import NamedTuple


class ConfigKey(NamedTuple):
    """kind/namespace/name of one input object. Cluster-scoped objects have namespace "".

    A NamedTuple (not a dataclass): keys are hashed and compared millions of times when large configurations
    are joined and indexed, and tuples of strings do that in C.
    """

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        # Interned: translation keeps "Kind/ns/name" strings per resource (NACK attribution); one shared copy per
        # key instead of one per resource (~5 MB at 5,000 services x 100 waypoints).
        if self.namespace:
            return sys.intern(f"{self.kind}/{self.namespace}/{self.name}")
        return sys.intern(f"{self.kind}/{self.name}")


class Severity(str, enum.Enum):
    ERROR = "Error"
    WARNING = "Warning"


@dataclass(frozen=True, order=True, slots=True)
class Issue:
    """A user mistake or an unsupported field, reported (status, log, metric) rather than raised.

    `path` is a field path inside the object (``spec.http[2].route[0].destination.host``);
    `file` is the source file when the object came from a directory.
    """

    key: ConfigKey | None
    path: str
    message: str
    reason: str = "Invalid"
    severity: Severity = Severity.ERROR
    file: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.key is not None:
            parts.append(str(self.key))
        if self.path:
            parts.append(self.path)
        where = ": ".join(parts)
        level = "warning" if self.severity is Severity.WARNING else "error"
        return f"{where}: {level}: {self.message}" if where else f"{level}: {self.message}"

    def with_file(self, file: str | None) -> "Issue":
        return Issue(self.key, self.path, self.message, self.reason, self.severity, file)


MAX_MESSAGE = 1000  # a message quoting a huge user value stays readable (and logs/status stay small)


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    if len(message) <= limit:
        return message
    return f"{message[:limit - 60]}... [{len(message) - (limit - 60)} more characters]"


def error(key: ConfigKey | None, path: str, message: str, reason: str = "Invalid") -> Issue:
    return Issue(key, path, shorten(message), reason, Severity.ERROR)


def warning(key: ConfigKey | None, path: str, message: str, reason: str = "Unsupported") -> Issue:
    return Issue(key, path, shorten(message), reason, Severity.WARNING)


@dataclass(frozen=True, slots=True)
class Condition:
    """A Kubernetes-style status condition computed for one object."""

    type: str
    status: bool
    reason: str
    message: str = ""
    observed_generation: int = 0


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The metadata fields istiod-lite reads from any object (one per object: slots, no per-instance dict)."""

    key: ConfigKey
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: str = ""
    file: str | None = None
    uid: str = ""

    def label(self, name: str) -> str | None:
        for k, v in self.labels:
            if k == name:
                return v
        return None

    def annotation(self, name: str) -> str | None:
        for k, v in self.annotations:
            if k == name:
                return v
        return None
