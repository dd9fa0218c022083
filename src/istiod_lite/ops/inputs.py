"""/debug/inputs?waypoint=NS/NAME: which input objects contributed to a waypoint's config, per resource,
from ResourceSet.sources ((type URL, resource name) -> input objects)."""

from __future__ import annotations

from typing import Mapping

from istiod_lite.xds.types import PUSH_ORDER, SHORT_NAMES, ResourceSet


def inputs_of(resources: ResourceSet) -> dict:
    """{"objects": [every contributing object], "resources": {"CDS": {name: [objects]}, ...}}."""
    by_type: dict[str, dict[str, list[str]]] = {}
    objects: set[str] = set()
    order = {t: i for i, t in enumerate(PUSH_ORDER)}
    for (type_url, name), srcs in sorted(resources.sources.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        by_type.setdefault(SHORT_NAMES.get(type_url, type_url), {})[name] = sorted(srcs)
        objects.update(srcs)
    return {"objects": sorted(objects), "resources": by_type}


def inputs_report(all_resources: Mapping[str, ResourceSet], waypoint: str | None) -> tuple[int, dict]:
    """(HTTP status, body): one waypoint's inputs, or every waypoint's when `waypoint` is None."""
    if waypoint is None:
        return 200, {name: inputs_of(rs) for name, rs in sorted(all_resources.items())}
    rs = all_resources.get(waypoint)
    if rs is None:
        return 404, {"error": f"unknown waypoint {waypoint!r}", "waypoints": sorted(all_resources)}
    return 200, {"waypoint": waypoint, **inputs_of(rs)}
