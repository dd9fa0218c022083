"""The Envoy bootstrap istiod-lite generates: checked by the real `envoy --mode validate`, and by a real
Envoy opening its ADS stream over HTTP/2 (XDS-FACTS item 1)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import yaml

from istiod_lite.bootstrap import render_bootstrap, split_address, split_waypoint
from testsupport.envoy import validate_bootstrap
from testsupport.procs import wait_until

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_envoy_validates_the_bootstrap(tmp_path, delta, host):
    boot = render_bootstrap("default/waypoint", host, 15010, admin_address="127.0.0.1:0", delta=delta)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot))
    code, out = validate_bootstrap(path)
    assert code == 0, out
    assert "configuration" in out.lower() and "ok" in out.lower(), out


def test_envoy_rejects_a_broken_bootstrap(tmp_path):
    """Control for the test above: `--mode validate` really checks the file."""
    boot = render_bootstrap("default/waypoint", "127.0.0.1", 15010)
    boot["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot))
    code, _ = validate_bootstrap(path)
    assert code != 0


def test_node_identity_and_ads_settings():
    boot = render_bootstrap("bookinfo/wp", "127.0.0.1", 15010, node_id="abc")
    assert boot["node"] == {"id": "bookinfo/wp~abc", "cluster": "wp.bookinfo",
                            "metadata": {"WAYPOINT": "bookinfo/wp"}}
    ads = boot["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC"
    assert ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    for key in ("cds_config", "lds_config"):
        assert boot["dynamic_resources"][key] == {"ads": {}, "resource_api_version": "V3"}
    assert render_bootstrap("bookinfo/wp", "127.0.0.1", 1, delta=False)["dynamic_resources"]["ads_config"][
        "api_type"] == "GRPC"
    (cluster,) = boot["static_resources"]["clusters"]
    assert cluster["name"] == "xds-grpc" and cluster["type"] == "STATIC" and cluster["connect_timeout"] == "1s"
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert opts["explicit_http_config"] == {"http2_protocol_options": {}}
    assert "tcp_keepalive" in cluster["upstream_connection_options"]
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}


def test_random_node_ids_differ_and_dns_hosts_use_strict_dns():
    a = render_bootstrap("ns/wp", "istiod.istio-system.svc", 15010)
    b = render_bootstrap("ns/wp", "istiod.istio-system.svc", 15010)
    assert a["node"]["id"] != b["node"]["id"]
    assert a["node"]["id"].startswith("ns/wp~")
    assert a["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"


@pytest.mark.parametrize("bad", ["waypoint", "/wp", "ns/", "a/b/c", ""])
def test_bad_waypoint_names_are_refused(bad):
    with pytest.raises(ValueError):
        split_waypoint(bad)


def test_addresses():
    assert split_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_address("[::1]:15010") == ("::1", 15010)
    for bad in ("127.0.0.1", ":80", "host:x", "h:70000"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_envoy_opens_its_ads_stream_with_http2(envoy_factory):
    """A real Envoy started with the bootstrap connects to the xDS address and speaks HTTP/2 at once."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(20)
        port = server.getsockname()[1]
        envoy = envoy_factory(render_bootstrap("default/waypoint", "127.0.0.1", port, admin_address="127.0.0.1:0"))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while len(data) < len(H2_PREFACE):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(H2_PREFACE)
        assert envoy.server_info()["node"]["id"].startswith("default/waypoint~")


def test_cli_bootstrap_prints_the_same_bootstrap(tmp_path):
    """`istiod-lite bootstrap` (the lead's cli.py) emits what render_bootstrap returns, and Envoy accepts it."""
    out = subprocess.run([sys.executable, "-m", "istiod_lite", "bootstrap", "--waypoint", "default/waypoint",
                          "--xds-address", "127.0.0.1:15010", "--admin-address", "127.0.0.1:15999", "--sotw"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    boot = yaml.safe_load(out.stdout)
    expected = render_bootstrap("default/waypoint", "127.0.0.1", 15010, admin_address="127.0.0.1:15999",
                                delta=False, node_id=boot["node"]["id"].split("~", 1)[1])
    assert boot == expected
    path = tmp_path / "envoy.yaml"
    path.write_text(out.stdout)
    code, text = validate_bootstrap(path)
    assert code == 0, text
