"""Benchmark `memory`: peak RSS (VmHWM) of the istiod-lite process with 5,000 services and 100 connected
waypoints (Delta load-client streams from bench/load_client.py, ACKing everything), after every stream is in sync
and one VirtualService edit has been pushed.

Shapes: "spread" = 100 waypoints x 50 services, one connection each; "one waypoint" = 5,000 services on one
waypoint, 100 connections (replicas). Baseline (same run, same process): the peak before any connection (config
loaded, translated, cached). Target (issue 6): <= 250 MB.

`--breakdown`: instead, for each shape, run the real App in a fresh process stage by stage (bench/memory_stages.py:
imports, directory scan, snapshot, translation, start-up push) and print RSS per stage; `--trace` adds
tracemalloc's top files/lines per stage (slow, and inflates RSS).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def one_run(work: Path, waypoints: int, per_waypoint: int, connections: int) -> tuple[float, float]:
    with common.Procs(work) as procs:
        ports = (common.free_port(), common.free_port())  # no traffic: nothing needs to listen
        wps = [(f"ns-{k}", f"wp-{k}", common.free_port()) for k in range(waypoints)]
        config = work / f"mesh-{waypoints}x{per_waypoint}-{time.monotonic_ns()}"
        common.write_mesh(config, wps, per_waypoint, ports)
        istiod = procs.istiod(config, debounce=0.01, timeout=3600)
        idle = istiod.proc.peak_rss_mb()
        print(f"  before connections: {idle:.0f} MB", file=sys.stderr, flush=True)
        streams = {f"{ns}/{name}": connections // waypoints for ns, name, _ in wps}
        client = common.LoadClient(procs, istiod.xds_port, streams)
        client.ready(3600)
        common.wait_until(lambda: istiod.all_in_sync(connections), 3600, 0.1, "all in sync")
        client.ask("mark")
        common.edit_service(config, "ns-0", ports, 1)
        client.ask(f"wait {{\"ns-0/wp-0\": {connections // waypoints}}} 0.3 3600")
        common.wait_until(lambda: istiod.all_in_sync(connections), 3600, 0.1, "all in sync after the edit")
        peak = istiod.proc.peak_rss_mb()
        client.close()
        return peak, idle


def breakdown(work: Path, shape: str, waypoints: int, per_waypoint: int, trace: bool) -> list[list[str]]:
    config = work / f"mesh-{waypoints}x{per_waypoint}-{time.monotonic_ns()}"
    wps = [(f"ns-{k}", f"wp-{k}", common.free_port()) for k in range(waypoints)]
    common.write_mesh(config, wps, per_waypoint, (common.free_port(), common.free_port()))
    out = work / f"stages-{shape}.json"
    argv = [common.PY, common.BENCH / "memory_stages.py", "--config-dir", config, "--json", out]
    subprocess.run([str(a) for a in argv + (["--trace"] if trace else [])], check=True, cwd=common.REPO)
    import json

    rows = []
    for r in json.loads(out.read_text()):
        traced = f"{r['d_traced']:+.1f}" if "d_traced" in r else ""
        rows.append([shape, r["stage"], f"{r['d_rss']:+.1f}", traced, f"{r['rss']:.0f}", f"{r['hwm']:.0f}"])
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=5000)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--shapes", default="spread,one", help="spread,one")
    p.add_argument("--breakdown", action="store_true", help="RSS per start-up stage (no connections), per shape")
    p.add_argument("--trace", action="store_true", help="with --breakdown: tracemalloc top files/lines")
    args = p.parse_args()
    services, connections, runs = (args.services, args.connections, args.runs) if not args.smoke else (20, 4, 1)
    shapes = {"spread": (connections, services // connections), "one": (1, services)}
    if args.breakdown:
        with common.workdir(args.keep) as work:
            rows = [r for shape in args.shapes.split(",") for r in breakdown(work, shape, *shapes[shape], args.trace)]
        common.print_table("memory breakdown (in-process stages, no connections; MB)",
                           ["shape", "stage", "RSS delta", "tracemalloc delta", "RSS", "peak RSS"], rows)
        return
    rows = []
    with common.workdir(args.keep) as work:
        for shape in args.shapes.split(","):
            waypoints, per = shapes[shape]
            peaks, idles = [], []
            for _ in range(runs):
                peak, idle = one_run(work, waypoints, per, connections)
                peaks.append(peak)
                idles.append(idle)
                print(f"memory {shape}: peak {peak:.0f} MB (before connections {idle:.0f} MB)", file=sys.stderr)
            med, lo, hi = common.stats(peaks)
            imed, ilo, ihi = common.stats(idles)
            rows.append([f"{shape}: {waypoints} waypoint(s) x {per} services, {connections} connections",
                         f"{med:.0f} ({lo:.0f}-{hi:.0f})", f"{imed:.0f} ({ilo:.0f}-{ihi:.0f})",
                         f"{med / imed:.2f}", "yes" if med <= 250 else "NO"])
    common.print_table(f"memory ({runs} runs; peak RSS MB median (min-max))",
                       ["shape", "peak RSS with connections", "baseline: peak before connections", "ratio",
                        "<= 250 MB"], rows)


if __name__ == "__main__":
    main()
