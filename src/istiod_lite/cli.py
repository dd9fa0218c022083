"""The `istiod-lite` command: serve, bootstrap, translate, validate."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import yaml


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="istiod-lite", description="A small control plane for Envoy waypoints.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve xDS to waypoint Envoys from a config directory")
    s.add_argument("--config-dir", help="directory of YAML/JSON manifests (watched)")
    s.add_argument("--xds-address", default="127.0.0.1:15010")
    s.add_argument("--http-address", default="127.0.0.1:15014")
    s.add_argument("--debounce", type=float, default=0.1, help="quiet period in seconds before a push")
    s.add_argument("--debounce-max", type=float, default=1.0, help="longest delay of a push in seconds")
    s.add_argument("--ack-timeout", type=float, default=5.0, help="seconds to wait for an ACK before sending newer state")
    s.add_argument("--root-namespace", default="istio-system")
    s.add_argument("--domain-suffix", default="cluster.local")
    s.add_argument("--ready-file", help="write {xds_port, http_port} as JSON here once ready")
    s.add_argument("--log-format", choices=["text", "json"], default="text")
    s.add_argument("--log-level", default="info")

    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a waypoint")
    b.add_argument("--waypoint", required=True, help="NAMESPACE/NAME of the waypoint Gateway")
    b.add_argument("--xds-address", required=True, help="HOST:PORT of istiod-lite's xDS server")
    b.add_argument("--admin-address", default="127.0.0.1:15000")
    b.add_argument("--sotw", action="store_true", help="State-of-the-World ADS instead of Delta")
    b.add_argument("--node-id", help="Envoy node id (default NAMESPACE/NAME~<random>)")

    t = sub.add_parser("translate", help="print the Envoy resources of a waypoint as YAML (no server)")
    t.add_argument("--config-dir", required=True)
    t.add_argument("--waypoint", required=True, help="NAMESPACE/NAME")
    t.add_argument("--root-namespace", default="istio-system")

    v = sub.add_parser("validate", help="check manifests offline; exit 1 on any error")
    v.add_argument("paths", nargs="+", help="files or directories")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"serve": _serve, "bootstrap": _bootstrap, "translate": _translate, "validate": _validate}[args.command](args)


def _serve(args: argparse.Namespace) -> int:
    from istiod_lite.app import App
    from istiod_lite.ops.logs import configure
    from istiod_lite.settings import Settings

    configure(args.log_level, args.log_format)
    if not args.config_dir:
        print("istiod-lite serve: --config-dir is required (the Kubernetes source is not available yet)",
              file=sys.stderr)
        return 2
    settings = Settings(config_dir=args.config_dir, xds_address=args.xds_address, http_address=args.http_address,
                        debounce=args.debounce, debounce_max=args.debounce_max, ack_timeout=args.ack_timeout,
                        root_namespace=args.root_namespace, domain_suffix=args.domain_suffix,
                        ready_file=args.ready_file, log_format=args.log_format, log_level=args.log_level)

    async def run() -> None:
        app = App(settings)
        task = asyncio.create_task(app.run(), name="app")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from istiod_lite.bootstrap import render_bootstrap
    from istiod_lite.settings import split_address

    host, port = split_address(args.xds_address, 15010)
    ns, sep, name = args.waypoint.partition("/")
    if not sep or not ns or not name:
        print(f"istiod-lite bootstrap: --waypoint must be NAMESPACE/NAME, got {args.waypoint!r}", file=sys.stderr)
        return 2
    doc = render_bootstrap(args.waypoint, host, port, admin_address=args.admin_address, delta=not args.sotw,
                           node_id=args.node_id)
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


def _load_dir(config_dir: str, root_namespace: str):
    from istiod_lite.model.store import ConfigStore
    from istiod_lite.sources.files import DirectorySource

    store = ConfigStore(root_namespace=root_namespace)
    DirectorySource(config_dir).scan(store)
    return store.snapshot()


def _translate(args: argparse.Namespace) -> int:
    import json

    from google.protobuf import json_format

    from istiod_lite.model.meta import ConfigKey
    from istiod_lite.translate import translate
    from istiod_lite.xds.types import PUSH_ORDER, SHORT_NAMES

    snapshot = _load_dir(args.config_dir, args.root_namespace)
    ns, _, name = args.waypoint.partition("/")
    result = translate(snapshot, ConfigKey("Gateway", ns, name))
    for issue in sorted(set(snapshot.issues) | set(result.issues), key=str):
        print(issue, file=sys.stderr)
    rs = result.resources.resources
    out = {
        SHORT_NAMES[t].lower(): [json.loads(json_format.MessageToJson(rs[t][n], preserving_proto_field_name=True))
                                 for n in sorted(rs[t])]
        for t in PUSH_ORDER if t in rs
    }
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from istiod_lite.model.store import snapshot_from_files
    from istiod_lite.sources.files import SUFFIXES

    files: list[Path] = []
    for p in map(Path, args.paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file()))
        else:
            files.append(p)
    snapshot = snapshot_from_files(files)
    errors = 0
    for issue in sorted(snapshot.issues, key=str):
        print(issue)
        errors += issue.is_error
    print(f"{len(files)} file(s), {errors} error(s), {len(snapshot.issues) - errors} warning(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
