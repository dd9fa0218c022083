"""Benchmark `translate`: in-process full translation of N services (ServiceEntry + VirtualService +
DestinationRule with two subsets + AuthorizationPolicy each, plus a root-namespace policy), the re-translation
after one object changed, and the xds cache's cost per push (`SnapshotCache.set_resources`).

Targets (issue 6): full translation of 5,000 services <= 1.0 s; incremental re-translation of one object <= 5 ms.
"one object changed" is measured twice: a FULL translate() (with the file edit, scan and snapshot) and
IncrementalTranslator.translate() alone (what the app runs per push).
Baseline (same run): the smallest N scaled linearly to N ("scaling" = median / (median at smallest N x N/N0));
1.0 means linear in N, which is what full recomputation gives and incremental work must beat.
--hbone: the same mesh as an ambient waypoint (issue 8): the Gateway's only listener is HBONE, the namespace is
in the ambient mesh, every ServiceEntry has a VIP (so each service gets a main_internal chain, a RouteConfiguration
and inbound-vip clusters through connect_originate).
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import yaml  # noqa: E402

from istiod_lite.model.meta import ConfigKey  # noqa: E402
from istiod_lite.model.store import ConfigStore  # noqa: E402
from istiod_lite.sources.files import DirectorySource  # noqa: E402
from istiod_lite.translate import translate  # noqa: E402
from istiod_lite.translate.incremental import IncrementalTranslator  # noqa: E402
from istiod_lite.xds.cache import SnapshotCache  # noqa: E402

NS, WP = "bench", "waypoint"
PORTS = (10001, 10002)  # nothing listens: translation only
HBONE_PORT = 15008


def _ambient(docs: list[dict]) -> list[dict]:
    """common's manifests as an ambient waypoint: HBONE listener only, ambient namespace, a VIP per service."""
    for d in docs:
        if d["kind"] == "Gateway":
            d["spec"]["listeners"] = [{"name": "mesh", "port": HBONE_PORT, "protocol": "HBONE"}]
        elif d["kind"] == "Namespace" and d["metadata"]["name"] == NS:
            d["metadata"]["labels"]["istio.io/dataplane-mode"] = "ambient"
        elif d["kind"] == "ServiceEntry":
            i = int(d["metadata"]["name"].split("-")[1])
            d["spec"]["addresses"] = [f"240.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"]
    return docs


def write_mesh(config: Path, n: int, hbone: bool) -> None:
    common.write_mesh(config, [(NS, WP, 18080)], n, PORTS, authz=True, root_policy=True)
    if hbone:
        for f in sorted(config.glob("*.yaml")):
            common.write_docs(f, _ambient([d for d in yaml.safe_load_all(f.read_text()) if d]))


def edit_service(config: Path, step: int, hbone: bool) -> None:
    common.edit_service(config, NS, PORTS, step, authz=True)
    if hbone:
        f = config / f"{NS}-edit.yaml"
        common.write_docs(f, _ambient([d for d in yaml.safe_load_all(f.read_text()) if d]))


def timed(fn, runs: int) -> tuple[list[float], object]:
    out, result = [], None
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        out.append(time.perf_counter() - t)
    return out, result


def measure(n: int, runs: int, work: Path, hbone: bool = False) -> dict[str, list[float]]:
    config = work / f"mesh-{n}"
    write_mesh(config, n, hbone)
    store = ConfigStore(root_namespace=common.ROOT_NS)
    source = DirectorySource(config)
    source.scan(store)
    snapshot = store.snapshot()
    key = ConfigKey("Gateway", NS, WP)
    rows: dict[str, list[float]] = {}

    rows["translate (full)"], result = timed(lambda: translate(snapshot, key), runs)
    resources = result.resources.resources
    count = sum(len(v) for v in resources.values())
    problems = [str(i) for i in result.issues if i.is_error]
    if problems:
        raise SystemExit(f"translation issues at N={n}: {problems[:3]}")

    # One object changed (svc-0's VirtualService + DestinationRule): store update + snapshot + re-translation.
    edits = iter(range(10_000))

    def one_change():
        edit_service(config, next(edits), hbone)
        source.scan(store)
        return translate(store.snapshot(), key)

    rows["re-translate after 1 change (FULL translate(), incl. file edit + scan + snapshot)"], changed = timed(
        one_change, runs)

    # The same change through IncrementalTranslator (what the app runs per push): time the translation only.
    inc = IncrementalTranslator()
    inc.translate(store.snapshot(), key)
    inc_times = []
    for _ in range(runs):
        edit_service(config, next(edits), hbone)
        source.scan(store)
        snap = store.snapshot()
        gc.collect()
        t = time.perf_counter()
        inc.translate(snap, key)
        inc_times.append(time.perf_counter() - t)
    if inc.stats["incremental"] < runs:
        print(f"N={n}: incremental translator stats {dict(inc.stats)} (not all runs incremental)", file=sys.stderr)
    rows["re-translate after 1 change (IncrementalTranslator, translation only)"] = inc_times

    def fresh_cache():
        cache = SnapshotCache()
        t = time.perf_counter()
        cache.set_resources("g", resources)
        return time.perf_counter() - t

    rows[f"cache.set_resources, {count} new"] = [fresh_cache() for _ in range(runs)]
    cache = SnapshotCache()
    cache.set_resources("g", resources)
    rows[f"cache.set_resources, {count} unchanged (same objects)"], _ = timed(
        lambda: cache.set_resources("g", resources), runs)
    rows[f"cache.set_resources, {count} unchanged (equal new objects)"], _ = timed(
        lambda: cache.set_resources("g", translate(snapshot, key).resources.resources), 1)
    rows[f"cache.set_resources, {count} unchanged (equal new objects)"] = []
    for _ in range(runs):  # time only the cache call, not the translation that made the new objects
        fresh = translate(snapshot, key).resources.resources
        t = time.perf_counter()
        cache.set_resources("g", fresh)
        rows[f"cache.set_resources, {count} unchanged (equal new objects)"].append(time.perf_counter() - t)
    changed_res = changed.resources.resources
    rows[f"cache.set_resources, {count} after 1 change"], _ = timed(lambda: cache.set_resources("g", changed_res), 1)
    return {"resources": [count], **rows}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], sizes=(100, 1000, 5000))
    p.add_argument("--hbone", action="store_true", help="an ambient waypoint: HBONE listener, a VIP per service")
    args = p.parse_args()
    sizes, runs = (args.sizes, args.runs) if not args.smoke else ([5, 10], 1)
    with common.workdir(args.keep) as work:
        results = {n: measure(n, runs, work, args.hbone) for n in sizes}
    n0 = sizes[0]
    table = []
    for n in sizes:
        res = results[n]
        for label, values in res.items():
            if label == "resources":
                continue
            base_label = next((k for k in results[n0] if k.split(",")[0] == label.split(",")[0]), None)
            base = results[n0].get(base_label) if base_label else None
            scaled = [b * n / n0 for b in base] if base else None
            table.append([n, label, res["resources"][0], common.fmt_ms(values),
                          common.ratio(values, scaled) if scaled else "n/a"])
    common.print_table(
        f"translate{' (HBONE waypoint)' if args.hbone else ''} (in-process; {runs} runs; ms median (min-max))",
        ["N services", "what", "resources", "ms", f"scaling vs N={n0}"], table,
        ["Targets: full translation of 5,000 services <= 1000 ms; incremental re-translation of one object <= 5 ms "
         "(the IncrementalTranslator row; the FULL row is translate() from scratch plus the edit/scan/snapshot).",
         "'same objects': the very message objects of the cached entries (what incremental translation hands "
         "the cache for unchanged resources); 'equal new objects': a fresh full translation with equal content."])


if __name__ == "__main__":
    main()
