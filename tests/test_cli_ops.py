"""The operator's commands and endpoints: `validate` (parser + translation of every waypoint), `bootstrap`
with the xDS client certificate, `proxy-status`, `/debug/inputs`, and JSON logs naming each change and push."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from istiod_lite.cli import main
from testsupport import manifests
from testsupport.envoy import validate_bootstrap
from testsupport.pki import Pki
from testsupport.procs import wait_until
from testsupport.stack import Factories, all_in_sync, get_json, start_stack

PORTS = {"reviews-v1": 20001, "reviews-v2": 20002, "ratings": 20003}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "istiod_lite", *args], capture_output=True, text=True, timeout=60)


def test_validate_reports_translation_issues_with_file_and_exit_code(tmp_path, capsys):
    manifests.write_files(tmp_path, manifests.demo_files(18080, PORTS))
    assert main(["validate", str(tmp_path)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    # valid for the parser, wrong for the translator: a subset no DestinationRule defines
    bad = manifests.weighted_virtual_service("reviews", {"v1": 50, "v9": 50})
    manifests.write_docs(tmp_path / "reviews-virtualservice.yaml", [bad])
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "v9" in x)
    assert line.startswith(str(tmp_path / "reviews-virtualservice.yaml"))
    assert "VirtualService/default/reviews" in line and "spec.http[0].route[1]" in line and ": error:" in line


def test_bootstrap_with_client_certificate_is_valid_envoy_config(tmp_path):
    pki = Pki(tmp_path)
    client = pki.issue("waypoint", uris=("spiffe://cluster.local/ns/default/sa/waypoint",))
    result = cli("bootstrap", "--waypoint", "default/waypoint", "--xds-address", "istiod.istio-system.svc:15012",
                 "--xds-ca", str(pki.ca_file), "--client-cert", str(client.cert), "--client-key", str(client.key),
                 "--admin-address", "127.0.0.1:0")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    [xds] = doc["static_resources"]["clusters"]
    tls = xds["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext") and tls["sni"] == "istiod.istio-system.svc"
    common = tls["common_tls_context"]
    assert common["validation_context"]["trusted_ca"]["filename"] == str(pki.ca_file)
    assert common["tls_certificates"][0]["certificate_chain"]["filename"] == str(client.cert)
    assert "h2" in common["alpn_protocols"]
    path = tmp_path / "boot.yaml"
    path.write_text(result.stdout)
    code, out = validate_bootstrap(path)
    assert code == 0, out
    # a client certificate without a CA to check the server is refused
    assert cli("bootstrap", "--waypoint", "default/waypoint", "--xds-address", "127.0.0.1:1",
               "--client-cert", "a", "--client-key", "b").returncode == 2


def test_proxy_status_inputs_and_json_logs(tmp_path):
    f = Factories(tmp_path)
    try:
        stack = start_stack(f, tmp_path, istiod_args=("--log-format", "json"))
        istiod = stack.istiod
        wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
        result = cli("proxy-status", "--http-address", f"127.0.0.1:{istiod.http_port}")
        assert result.returncode == 0, result.stderr
        header, row = result.stdout.splitlines()[:2]
        assert header.split() == ["NAME", "WAYPOINT", "FLAVOUR", "CDS", "EDS", "LDS", "RDS"]
        assert row.split()[1:] == ["default/waypoint", "delta", "SYNCED", "SYNCED", "SYNCED", "SYNCED"]
        assert row.startswith("default/waypoint~")
        assert cli("proxy-status", "--http-address", "127.0.0.1:1").returncode == 1

        syncz = get_json(istiod, "/debug/syncz")
        cds = next(t for t in syncz["proxies"][0]["types"] if t["type"] == "CDS")
        assert cds["version_sent"] == cds["version_acked"] and cds["nonce_sent"] and cds["in_sync"]

        inputs = get_json(istiod, "/debug/inputs?waypoint=default/waypoint")
        assert {"VirtualService/default/reviews", "DestinationRule/default/reviews", "Gateway/default/waypoint",
                "ServiceEntry/default/ratings"} <= set(inputs["objects"])
        assert "DestinationRule/default/reviews" in \
            inputs["resources"]["CDS"]["inbound-vip|9080|http/v1|reviews.default.svc.cluster.local"]
        assert istiod.get("/debug/inputs?waypoint=default/nope")[0] == 404

        stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])

        def push_for_reviews() -> dict | None:
            for line in istiod.log_text().splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    if event.get("event") == "push" and "VirtualService/default/reviews" in event.get("cause", []):
                        return event
            return None

        push = wait_until(push_for_reviews, 10, message=stack.diagnostics)
        assert push["waypoints"] == ["default/waypoint"] and push["reason"] == "VirtualService"
        events = [json.loads(x) for x in istiod.log_text().splitlines() if x.startswith("{")]
        assert any(e.get("event") == "config_change" and "VirtualService/default/reviews" in e.get("objects", [])
                   for e in events)
        assert all({"time", "level", "logger", "msg"} <= set(e) for e in events)
    finally:
        f.stop_all()
