"""The `istiod-lite` command: serve, bootstrap, translate, validate, proxy-status."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import yaml


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="istiod-lite", description="A small control plane for Envoy waypoints.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve xDS to waypoint Envoys from a config directory")
    s.add_argument("--config-dir", help="directory of YAML/JSON manifests (watched)")
    s.add_argument("--kubeconfig", help="watch this cluster (kubeconfig file) instead of a directory")
    s.add_argument("--in-cluster", action="store_true", help="watch the cluster istiod-lite runs in")
    s.add_argument("--waypoint-image", default="envoyproxy/envoy:v1.40.0", help="Envoy image of waypoint Deployments")
    s.add_argument("--gateway-classes", default="istio-waypoint,istiod-lite-waypoint",
                   help="comma-separated GatewayClasses whose waypoints istiod-lite deploys and reports status on: "
                        "istio-waypoint (Istio's class; only when no istiod runs) and/or istiod-lite-waypoint "
                        "(ours; use only this one beside an Istio ambient mesh)")
    s.add_argument("--waypoint-xds-address", default="istiod-lite.istio-system.svc:15010",
                   help="HOST:PORT waypoint Envoys dial for xDS")
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
    s.add_argument("--xds-tls-cert", help="PEM certificate: serve xDS over TLS (with --xds-tls-key)")
    s.add_argument("--xds-tls-key", help="PEM private key of --xds-tls-cert")
    s.add_argument("--xds-client-ca", help="PEM CA: require client certificates (mTLS) whose identity "
                                           "(SPIFFE URI or DNS SAN) matches the waypoint requested")
    s.add_argument("--xds-trust-domain", help="with --xds-client-ca: the only SPIFFE trust domain accepted")
    s.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain of the mesh")
    s.add_argument("--listen-address", default="0.0.0.0",
                   help="address waypoint listeners bind to when the Gateway has no spec.addresses")
    s.add_argument("--ca-dir", help="Istio plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem, "
                                    "cert-chain.pem); a self-signed root is generated there when empty")
    s.add_argument("--cert-lifetime", default="24h", help="lifetime of waypoint certificates (rotated at half-life)")
    s.add_argument("--hbone-upstream-port", type=int, default=15008, help=argparse.SUPPRESS)  # tests on one host
    s.add_argument("--test-corrupt-file", default=os.environ.get("ISTIOD_LITE_TEST_CORRUPT_FILE"),
                   help=argparse.SUPPRESS)  # TEST ONLY: see istiod_lite/ops/testhook_corrupt.py

    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a waypoint")
    b.add_argument("--waypoint", required=True, help="NAMESPACE/NAME of the waypoint Gateway")
    b.add_argument("--xds-address", required=True, help="HOST:PORT of istiod-lite's xDS server")
    b.add_argument("--admin-address", default="127.0.0.1:15000")
    b.add_argument("--sotw", action="store_true", help="State-of-the-World ADS instead of Delta")
    b.add_argument("--node-id", help="Envoy node id (default NAMESPACE/NAME~<random>)")
    b.add_argument("--xds-ca", help="PEM CA that signed istiod-lite's xDS certificate: connect over TLS")
    b.add_argument("--client-cert", help="PEM client certificate for mTLS to the xDS server")
    b.add_argument("--client-key", help="PEM private key of --client-cert")
    b.add_argument("--sni", help="TLS server name sent to the xDS server")

    ps = sub.add_parser("proxy-status", help="sync status of every connected proxy (like istioctl proxy-status)")
    ps.add_argument("--http-address", default="127.0.0.1:15014", help="HOST:PORT of istiod-lite's HTTP server")
    ps.add_argument("--json", action="store_true", help="print /debug/syncz as JSON instead of a table")

    t = sub.add_parser("translate", help="print the Envoy resources of a waypoint as YAML (no server)")
    t.add_argument("--config-dir", required=True)
    t.add_argument("--waypoint", required=True, help="NAMESPACE/NAME")
    t.add_argument("--root-namespace", default="istio-system")

    v = sub.add_parser("validate", help="check manifests offline; exit 1 on any error")
    v.add_argument("paths", nargs="+", help="files or directories")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"serve": _serve, "bootstrap": _bootstrap, "translate": _translate, "validate": _validate,
            "proxy-status": _proxy_status}[args.command](args)


def _serve(args: argparse.Namespace) -> int:
    from istiod_lite.app import App
    from istiod_lite.ops.logs import configure
    from istiod_lite.settings import Settings

    configure(args.log_level, args.log_format)
    if sum(bool(x) for x in (args.config_dir, args.kubeconfig, args.in_cluster)) != 1:
        print("istiod-lite serve: give exactly one of --config-dir, --kubeconfig, --in-cluster", file=sys.stderr)
        return 2
    settings = Settings(config_dir=args.config_dir, xds_address=args.xds_address, http_address=args.http_address,
                        debounce=args.debounce, debounce_max=args.debounce_max, ack_timeout=args.ack_timeout,
                        root_namespace=args.root_namespace, domain_suffix=args.domain_suffix,
                        ready_file=args.ready_file, log_format=args.log_format, log_level=args.log_level,
                        kubeconfig=args.kubeconfig, in_cluster=args.in_cluster,
                        pod_name=os.environ.get("POD_NAME", ""),
                        pod_namespace=os.environ.get("POD_NAMESPACE", "istio-system"),
                        waypoint_image=args.waypoint_image, waypoint_xds_address=args.waypoint_xds_address,
                        gateway_classes=_gateway_classes(args.gateway_classes),
                        **_identity_settings(args))

    tls = None
    if args.xds_tls_cert or args.xds_tls_key or args.xds_client_ca:
        from istiod_lite.xds.tls import TlsConfig, server_credentials

        if not (args.xds_tls_cert and args.xds_tls_key):
            print("istiod-lite serve: --xds-tls-cert and --xds-tls-key go together (and --xds-client-ca needs "
                  "both)", file=sys.stderr)
            return 2
        tls = TlsConfig(args.xds_tls_cert, args.xds_tls_key, args.xds_client_ca, args.xds_trust_domain)
        try:
            server_credentials(tls)
        except ValueError as exc:
            print(f"istiod-lite serve: {exc}", file=sys.stderr)
            return 2

    async def run() -> None:
        app = App(settings, tls=tls, test_corrupt_file=args.test_corrupt_file)
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


def _gateway_classes(text: str) -> tuple[str, ...]:
    from istiod_lite.ops.waypoint_objects import parse_classes

    classes, problem = parse_classes(text)
    if problem:
        raise SystemExit(f"istiod-lite serve: --gateway-classes: {problem}")
    return classes


def _identity_settings(args: argparse.Namespace) -> dict:
    from istiod_lite.model.duration import parse_duration

    try:
        lifetime = parse_duration(args.cert_lifetime)
    except ValueError as exc:
        raise SystemExit(f"istiod-lite serve: --cert-lifetime: {exc}") from exc
    return {"trust_domain": args.trust_domain, "ca_dir": args.ca_dir, "cert_lifetime": lifetime,
            "hbone_upstream_port": args.hbone_upstream_port, "listen_address": args.listen_address}


def _bootstrap(args: argparse.Namespace) -> int:
    from istiod_lite.bootstrap import render_bootstrap
    from istiod_lite.settings import split_address

    host, port = split_address(args.xds_address, 15010)
    ns, sep, name = args.waypoint.partition("/")
    if not sep or not ns or not name:
        print(f"istiod-lite bootstrap: --waypoint must be NAMESPACE/NAME, got {args.waypoint!r}", file=sys.stderr)
        return 2
    if bool(args.client_cert) != bool(args.client_key) or (args.client_cert and not args.xds_ca):
        print("istiod-lite bootstrap: --client-cert and --client-key go together, and need --xds-ca",
              file=sys.stderr)
        return 2
    doc = render_bootstrap(args.waypoint, host, port, admin_address=args.admin_address, delta=not args.sotw,
                           node_id=args.node_id, xds_ca=args.xds_ca, client_cert=args.client_cert,
                           client_key=args.client_key, sni=args.sni)
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
    issues = set(snapshot.issues) | set(_translate_issues(snapshot))
    errors = 0
    for issue in sorted(issues, key=str):
        print(issue)
        errors += issue.is_error
    print(f"{len(files)} file(s), {len(snapshot.waypoints())} waypoint(s) translated, {errors} error(s), "
          f"{len(issues) - errors} warning(s)")
    return 1 if errors else 0


def _translate_issues(snapshot) -> list:
    """Translate every waypoint as the server would and return the issues it finds (missing subsets,
    unknown hosts...), each with the file of its object."""
    from istiod_lite.translate import translate

    files = {}
    for obj in (*snapshot.gateways, *snapshot.services, *snapshot.virtual_services, *snapshot.destination_rules,
                *snapshot.authorization_policies):
        meta = getattr(obj, "meta", None)
        if meta is not None and meta.file:
            files.setdefault(meta.key, meta.file)
    out = []
    for wp in snapshot.waypoints():
        for issue in translate(snapshot, wp.key).issues:
            out.append(issue if issue.file or issue.key not in files else issue.with_file(files[issue.key]))
    return out


def _proxy_status(args: argparse.Namespace) -> int:
    from istiod_lite.ops.proxy_status import fetch, table

    try:
        data = fetch(args.http_address)
    except OSError as exc:
        print(f"istiod-lite proxy-status: cannot reach http://{args.http_address}/debug/syncz: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        import json

        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
