"""The Source protocol and the sink it feeds (implemented by model.store.ConfigStore)."""

from __future__ import annotations

from typing import Any, Protocol

from istiod_lite.model.meta import ConfigKey, Issue


class ConfigSink(Protocol):
    """Where sources put raw objects (Kubernetes-shaped dicts). The store parses and validates them."""

    def replace_origin(self, origin: str, objects: list[tuple[dict[str, Any], str | None]],
                       issues: list[Issue] = ...) -> None:
        """Replace everything previously received from `origin` (a file path, or "kube:<Kind>") by
        `objects` (each with the file it came from, or None), plus load-time issues of that origin."""

    def upsert(self, origin: str, obj: dict[str, Any], file: str | None = None) -> None:
        """Add or replace one object received from `origin`."""

    def delete(self, origin: str, key: ConfigKey) -> None:
        """Forget one object received from `origin`."""


class Source(Protocol):
    """A running source. `run` feeds the sink until cancelled; `synced` is set after the first full load."""

    async def run(self, sink: ConfigSink) -> None: ...

    @property
    def synced(self) -> bool: ...
