"""NACK attribution and last-good pinning: "never push what Envoy rejects, and say whose fault it is".

`RejectionTracker` remembers, per proxy group (waypoint), the messages handed to the xDS cache and which of
them proxies ACKed (the last good version of each resource). When a proxy NACKs a response, the resources
of that response that differ from their last good version are *pinned*: until one of the input objects that
produced them changes, the app keeps serving the last good message (or leaves the resource out if Envoy
never accepted any version of it), while every other resource keeps updating. Each pin becomes an Issue with
reason "RejectedByEnvoy" and Envoy's error text on every contributing input object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from google.protobuf.message import Message

from istiod_lite.model.meta import ConfigKey, Issue, error
from istiod_lite.xds.server import NackInfo
from istiod_lite.xds.types import SHORT_NAMES

REASON = "RejectedByEnvoy"
_HISTORY = 4  # versions of each resource remembered between the push and its ACK
_MAX_ERROR = 2000  # Envoy's error text can embed whole resources: keep the report readable

ResourceMap = Mapping[str, Mapping[str, Message]]  # type URL -> name -> message


@dataclass(frozen=True)
class Pin:
    group: str
    type_url: str
    name: str
    rejected_version: str
    good: Message | None  # last ACKed message; None: Envoy never accepted this resource (left out)
    good_version: str | None
    sources: tuple[str, ...]  # input objects ("Kind/ns/name") that produced the resource
    error: str
    node_id: str
    since: float

    def describe(self) -> dict:
        return {"waypoint": self.group, "type": SHORT_NAMES.get(self.type_url, self.type_url), "name": self.name,
                "rejected_version": self.rejected_version, "serving": self.good_version or "(left out)",
                "objects": list(self.sources), "error": self.error, "node": self.node_id}


def parse_key(text: str) -> ConfigKey | None:
    """"Kind/ns/name" or "Kind/name" (cluster-scoped) -> ConfigKey."""
    parts = text.split("/")
    if len(parts) == 3:
        return ConfigKey(*parts)
    if len(parts) == 2:
        return ConfigKey(parts[0], "", parts[1])
    return None


class RejectionTracker:
    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        # group -> (type, name) -> {version: message} (recent versions handed to the cache)
        self._sent: dict[str, dict[tuple[str, str], dict[str, Message]]] = {}
        self._good: dict[str, dict[tuple[str, str], tuple[str, Message]]] = {}
        self._sources: dict[str, Mapping[tuple[str, str], tuple[str, ...]]] = {}
        self.pins: dict[tuple[str, str, str], Pin] = {}

    # ---- what was served / accepted ----------------------------------------------------------------
    def served(self, group: str, resources: ResourceMap, versions: Mapping[str, Mapping[str, str]],
               sources: Mapping[tuple[str, str], tuple[str, ...]]) -> None:
        """The messages just handed to the cache for `group`, with the cache's version of each."""
        sent = self._sent.setdefault(group, {})
        live = set()
        for type_url, by_name in resources.items():
            for name, message in by_name.items():
                version = versions.get(type_url, {}).get(name)
                if version is None:
                    continue
                live.add((type_url, name))
                history = sent.setdefault((type_url, name), {})
                history.pop(version, None)
                history[version] = message
                while len(history) > _HISTORY:
                    history.pop(next(iter(history)))
        for gone in [k for k in sent if k not in live]:
            del sent[gone]
        self._sources[group] = sources

    def acked(self, group: str, type_url: str, upserts: Mapping[str, str], removed: Iterable[str] = ()) -> None:
        sent = self._sent.get(group, {})
        good = self._good.setdefault(group, {})
        for name, version in upserts.items():
            message = sent.get((type_url, name), {}).get(version)
            if message is not None:
                good[(type_url, name)] = (version, message)
        for name in removed:
            good.pop((type_url, name), None)

    def forget_group(self, group: str) -> list[Pin]:
        self._sent.pop(group, None)
        self._good.pop(group, None)
        self._sources.pop(group, None)
        gone = [k for k in self.pins if k[0] == group]
        return [self.pins.pop(k) for k in gone]

    # ---- rejections --------------------------------------------------------------------------------
    def rejected(self, nack: NackInfo) -> list[Pin]:
        """Pin the resources of a NACKed response that differ from their last good version."""
        good = self._good.get(nack.group, {})
        sources = self._sources.get(nack.group, {})
        changed = {n: v for n, v in nack.versions.items()
                   if good.get((nack.type_url, n), ("", None))[0] != v}
        candidates = changed or dict(nack.versions)
        out = []
        for name, version in sorted(candidates.items()):
            key = (nack.group, nack.type_url, name)
            previous = good.get((nack.type_url, name))
            pin = Pin(nack.group, nack.type_url, name, version, previous[1] if previous else None,
                      previous[0] if previous else None, tuple(sources.get((nack.type_url, name), ())),
                      nack.error_detail[:_MAX_ERROR], nack.node_id, self.clock())
            self.pins[key] = pin
            out.append(pin)
        return out

    def release(self, changed: Iterable[ConfigKey | str]) -> list[Pin]:
        """Drop the pins one of whose input objects changed (the next push tries the new content)."""
        names = {str(c) for c in changed}
        gone = [k for k, p in self.pins.items() if names & set(p.sources)]
        return [self.pins.pop(k) for k in gone]

    def apply(self, group: str, resources: ResourceMap) -> dict[str, dict[str, Message]]:
        """`resources` with every pinned name replaced by its last good message (or left out)."""
        out = {t: dict(by_name) for t, by_name in resources.items()}
        for (g, type_url, name), pin in self.pins.items():
            if g != group:
                continue
            by_name = out.setdefault(type_url, {})
            if pin.good is None:
                by_name.pop(name, None)
            else:
                by_name[name] = pin.good
        return out

    def pinned(self, group: str | None = None) -> list[Pin]:
        return [p for k, p in sorted(self.pins.items()) if group is None or k[0] == group]

    def issues(self) -> list[Issue]:
        out = []
        for pin in self.pinned():
            short = SHORT_NAMES.get(pin.type_url, pin.type_url)
            serving = "the last accepted version" if pin.good is not None else "nothing (never accepted)"
            message = (f"Envoy ({pin.node_id}, waypoint {pin.group}) rejected {short} {pin.name}; serving "
                       f"{serving} until this object changes: {pin.error}")
            keys = [k for k in map(parse_key, pin.sources) if k is not None] or [None]
            out.extend(error(k, "", message, REASON) for k in keys)
        return out
