"""Memory breakdown of istiod-lite before any proxy connects (issue 6): the real `App` run in this process,
stage by stage, on a generated mesh, with RSS / VmHWM after each stage and (with `--trace`) tracemalloc
snapshots grouped by file and line. Run by `bench/memory.py --breakdown` (one fresh process per mode), or:

    python bench/memory_stages.py --config-dir DIR [--trace] [--top 15]

Stages: interpreter; imports (yaml, grpc, protobuf, Envoy protos, the app; kubernetes only if something imports
it); App() (CA, metrics, server objects); directory scan (raw manifest dicts in the store); snapshot (parse +
build); translation of every waypoint (IncrementalTranslator state, Envoy messages); start-up push (cache
entries, grpc server) and gc.freeze; then malloc_trim (what glibc gives back). upb messages live outside the
Python allocator, so tracemalloc does not see them: compare a stage's RSS delta (untraced run) with its
tracemalloc delta (traced run).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import sys
from pathlib import Path

ROWS: list[dict] = []


def status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Stages:
    def __init__(self, trace: bool, top: int) -> None:
        self.trace = trace
        self.top = top
        self.prev_snap = None
        self.prev_rss = status("VmRSS")
        self.prev_traced = 0
        if trace:
            import tracemalloc

            tracemalloc.start(1)
            self.tm = tracemalloc

    def mark(self, name: str) -> None:
        rss, hwm = status("VmRSS"), status("VmHWM")
        row = {"stage": name, "rss": round(rss, 1), "hwm": round(hwm, 1), "d_rss": round(rss - self.prev_rss, 1)}
        self.prev_rss = rss
        if self.trace:
            traced, peak = self.tm.get_traced_memory()
            row["traced"] = round(traced / 2**20, 1)
            row["d_traced"] = round((traced - self.prev_traced) / 2**20, 1)
            row["traced_peak"] = round(peak / 2**20, 1)
            self.prev_traced = traced
            self.tm.reset_peak()
            snap = self.tm.take_snapshot().filter_traces([self.tm.Filter(False, self.tm.__file__)])
            if self.prev_snap is not None:
                row["top_lines"] = [_fmt(s) for s in snap.compare_to(self.prev_snap, "lineno")[:self.top]]
                row["top_files"] = [_fmt(s) for s in snap.compare_to(self.prev_snap, "filename")[:self.top]]
            self.prev_snap = snap
        ROWS.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("top_")}), file=sys.stderr, flush=True)


def _fmt(stat) -> str:
    frame = stat.traceback[0]
    name = frame.filename.split("site-packages/")[-1].split("/src/")[-1].split("/lib/python3")[-1]
    return f"{stat.size_diff / 2**20:+.1f} MB ({stat.count_diff:+d}) {name}:{frame.lineno}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-dir", required=True)
    p.add_argument("--trace", action="store_true", help="tracemalloc snapshots (slower, and costs memory)")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--until", choices=["snapshot", "translate", "push"], default="push", help="last stage to run")
    args = p.parse_args()
    st = Stages(args.trace, args.top)
    st.mark("interpreter (+argparse, json, ctypes)")
    import yaml  # noqa: F401

    st.mark("import yaml")
    import google.protobuf  # noqa: F401
    import grpc  # noqa: F401

    st.mark("import grpc + protobuf")
    import istiod_lite.cli  # noqa: F401

    st.mark("import istiod_lite.cli")
    from istiod_lite.app import App
    from istiod_lite.settings import Settings
    from istiod_lite.translate.incremental import IncrementalTranslator

    st.mark("import istiod_lite.app (Envoy protos, translate, xds, ops, identity)")
    kube = sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes."))
    print(f"kubernetes modules imported: {len(kube)}", file=sys.stderr)
    settings = Settings(config_dir=args.config_dir, xds_address="127.0.0.1:0", http_address="127.0.0.1:0",
                        debounce=0.01, log_level="warning")
    app = App(settings)
    st.mark("App() (CA key, metrics, server objects)")
    app.source.scan(app.store)
    st.mark("directory scan (YAML -> raw dicts in the store)")
    snapshot = app.store.snapshot()
    st.mark("store.snapshot() (parse + validate + build)")
    if args.until == "snapshot":
        return report(args)
    waypoints = snapshot.waypoints()
    translator = app._translator = IncrementalTranslator(app.options)
    app._pushed_results = {}
    for wp in waypoints:
        translator.translate(snapshot, wp.key)
    st.mark(f"translate {len(waypoints)} waypoint(s) (incremental state + Envoy messages)")
    if args.until == "translate":
        return report(args)

    async def start() -> None:
        task = asyncio.create_task(app.run())
        while not app.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        st.mark("start-up push (cache entries, grpc server, gc.collect + gc.freeze)")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(start())
    gc.collect()
    st.mark("after stop + gc.collect (app still referenced)")
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    st.mark("malloc_trim(0): what glibc can give back")
    report(args)


def report(args: argparse.Namespace) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=1))
    if args.trace:
        for row in ROWS:
            if "top_files" in row:
                print(f"\n## {row['stage']}: RSS {row['d_rss']:+.1f} MB, traced {row['d_traced']:+.1f} MB", flush=True)
                print("by file:")
                for line in row["top_files"]:
                    print("  " + line)
                print("by line:")
                for line in row["top_lines"]:
                    print("  " + line)


if __name__ == "__main__":
    main()
