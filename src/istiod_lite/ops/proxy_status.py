"""`istiod-lite proxy-status`: fetch /debug/syncz and print one row per connected proxy, like
`istioctl proxy-status` (NAME, WAYPOINT, FLAVOUR, then CDS/EDS/LDS/RDS: SYNCED, STALE, NACKED, NOT SENT)."""

from __future__ import annotations

import json
import urllib.request

COLUMNS = ("CDS", "EDS", "LDS", "RDS")


def fetch(http_address: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://{http_address}/debug/syncz", timeout=timeout) as resp:
        return json.loads(resp.read())


def table(syncz: dict) -> str:
    header = ("NAME", "WAYPOINT", "FLAVOUR", *COLUMNS)
    rows = []
    for proxy in syncz.get("proxies", []):
        by_type = {t["type"]: t for t in proxy.get("types", [])}
        cells = []
        for col in COLUMNS:
            t = by_type.get(col)
            cells.append("NOT SENT" if t is None else t["status"])
        rows.append((proxy["node_id"], proxy["waypoint"], proxy["flavour"], *cells))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in (header, *rows)]
    for pin in syncz.get("rejected", []):
        lines.append(f"REJECTED {pin['type']} {pin['name']} (waypoint {pin['waypoint']}, serving "
                     f"{pin['serving']}; objects: {', '.join(pin['objects']) or '?'}): {pin['error'][:200]}")
    return "\n".join(lines) + "\n"
