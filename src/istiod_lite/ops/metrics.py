"""Prometheus metrics (prometheus-client), in a registry owned by one App (nothing built at import time).

Fed by the ADS server's events (connect, disconnect, push, ack, nack, ack_timeout, refused), by each push of
the app (duration, changed waypoints, pinned rejections), by each snapshot (objects by kind and validity) and by
the sources (events).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

from istiod_lite.model.meta import Issue
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.xds.types import SHORT_NAMES

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connected = Gauge("istiod_lite_xds_connected_proxies", "Connected proxies",
                               ["waypoint", "flavour"], registry=r)
        self.pushes = Counter("istiod_lite_xds_pushes_total", "xDS responses sent", ["type", "reason"], registry=r)
        self.resources_sent = Counter("istiod_lite_xds_resources_sent_total", "Resources sent", ["type"], registry=r)
        self.bytes_sent = Counter("istiod_lite_xds_bytes_sent_total", "Bytes of xDS responses sent", ["type"],
                                  registry=r)
        self.refused = Counter("istiod_lite_xds_refused_streams_total",
                               "ADS streams refused (client identity not entitled to the waypoint)", ["waypoint"],
                               registry=r)
        self.rejected = Gauge("istiod_lite_rejected_resources",
                              "Resources pinned to their last good version after Envoy rejected them",
                              ["waypoint", "type"], registry=r)
        self.rejected_objects = Gauge("istiod_lite_rejected_objects",
                                      "Input objects whose generated config Envoy rejects", ["kind"], registry=r)
        self.acks = Counter("istiod_lite_xds_acks_total", "ACKs received", ["type"], registry=r)
        self.nacks = Counter("istiod_lite_xds_nacks_total", "NACKs received", ["type", "waypoint"], registry=r)
        self.ack_timeouts = Counter("istiod_lite_xds_ack_timeouts_total", "Pushes whose ACK never came", ["type"],
                                    registry=r)
        self.push_duration = Histogram("istiod_lite_push_duration_seconds",
                                       "Snapshot -> translate -> cache, per push", buckets=_LATENCY_BUCKETS,
                                       registry=r)
        self.convergence = Histogram("istiod_lite_convergence_seconds",
                                     "Config change seen -> ACK from a proxy, per type", ["type"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.objects = Gauge("istiod_lite_config_objects", "Config objects by kind and validity",
                             ["kind", "valid"], registry=r)
        self.issues = Gauge("istiod_lite_config_issues", "Current issues by kind and severity",
                            ["kind", "severity"], registry=r)
        self.source_events = Counter("istiod_lite_source_events_total", "Objects changed by sources",
                                     ["source"], registry=r)
        self._changed_at: dict[str, float] = {}
        self._push_reason: dict[str, str] = {}
        self._observed: set[tuple[str, str, str]] = set()  # (group, node, type) already measured
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # memoized labels() children (_child)
        self._series: dict[int, dict[tuple[str, ...], float]] = {}  # id(gauge) -> the values last set
        self._issues_seen: list[Issue] | None = None
        self._invalid: dict[tuple[str, ...], float] = {}

    # ---- app hooks ---------------------------------------------------------------------------------
    def waypoints_changed(self, groups: Iterable[str], reason: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        for g in groups:
            self._changed_at[g] = t
            self._push_reason[g] = reason
            self._observed = {k for k in self._observed if k[0] != g}

    def snapshot_seen(self, snapshot: ConfigSnapshot, issues: Iterable[Issue]) -> None:
        """Objects by kind and validity, issues by kind and severity. O(gateways + issues) per push: each
        snapshot collection holds one kind (its length is the count), the issue tallies are recomputed only
        when the issue list differs from the previous push, and only changed series are touched."""
        valid = Tally(g.key.kind for g in snapshot.gateways)
        valid.update({"Service/ServiceEntry": len(snapshot.services)})
        for configs in (snapshot.virtual_services, snapshot.destination_rules, snapshot.authorization_policies):
            if configs:
                valid.update({configs[0].key.kind: len(configs)})
        issues = list(issues)
        if issues != self._issues_seen:
            self._issues_seen = issues
            invalid = Tally(i.key.kind for i in issues if i.is_error and i.key is not None)
            self._invalid = {(kind, "false"): float(n) for kind, n in invalid.items()}
            tally = Tally((i.key.kind if i.key else "file", i.severity.value) for i in issues)
            _set_series(self.issues, self._series, {k: float(n) for k, n in tally.items()})
        _set_series(self.objects, self._series,
                    {(kind, "true"): float(n) for kind, n in valid.items()} | self._invalid)

    # ---- ADS server events -------------------------------------------------------------------------
    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoized: prometheus_client's labels() costs a lock and a tuple build per
        call, and the ADS server reports push/ack events per stream (thousands per change at 500 proxies)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        group = data.get("group", "")
        t = _short(data.get("type_url", ""))
        if name == "push":  # the most frequent events first
            self._child(self.pushes, t, self._push_reason.get(group, "request")).inc()
            self._child(self.resources_sent, t).inc(data.get("resources", 0))
            self._child(self.bytes_sent, t).inc(data.get("bytes", 0))
            return
        if name == "ack":
            self._child(self.acks, t).inc()
            changed = self._changed_at.get(group)
            if changed is not None:
                seen = (group, data.get("node_id", ""), t)
                if seen not in self._observed:
                    self._observed.add(seen)
                    self._child(self.convergence, t).observe(max(0.0, time.monotonic() - changed))
            return
        if name == "connect":
            self.connected.labels(group, data.get("flavour", "")).inc()
        elif name == "disconnect":
            self.connected.labels(group, data.get("flavour", "")).dec()
        elif name == "nack":
            self.nacks.labels(t, group).inc()
        elif name == "ack_timeout":
            self.ack_timeouts.labels(t).inc()
        elif name == "refused":
            self.refused.labels(group).inc()

    def pins_changed(self, pins: Iterable[Any]) -> None:
        """The current pins (ops.nack.Pin): resources held at their last good version, objects blamed."""
        pins = list(pins)
        tally = Tally((p.group, _short(p.type_url)) for p in pins)
        _set_series(self.rejected, self._series, {k: float(n) for k, n in tally.items()})
        blamed = {src for p in pins for src in p.sources}
        kinds = Tally(src.split("/", 1)[0] for src in blamed)
        _set_series(self.rejected_objects, self._series, {(k,): float(n) for k, n in kinds.items()})

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _set_series(gauge: Gauge, last: dict[int, dict[tuple[str, ...], float]],
                values: dict[tuple[str, ...], float]) -> None:
    """Make `gauge` hold exactly `values` (label values -> value), touching only the series that differ from
    what this function set last time (the same result as clear() and setting every series)."""
    before = last.get(id(gauge), {})
    if values == before:
        return
    for labels in before.keys() - values.keys():
        gauge.remove(*labels)
    for labels, value in values.items():
        if before.get(labels) != value:
            gauge.labels(*labels).set(value)
    last[id(gauge)] = dict(values)
