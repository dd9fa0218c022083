"""The sample backend (examples/apps/backend.py) that the end-to-end tests and the demo rely on."""

from __future__ import annotations

import time

import pytest

from testsupport.http import KeepAliveClient, request


def test_echo_and_header_driven_behaviours(backend_factory):
    backend = backend_factory("reviews-v1")
    resp = request(backend.port, "/x?a=1&b=", headers={"x-status": "418", "x-custom": "yes"})
    assert resp.status == 418 and resp.served_by == "reviews-v1"
    body = resp.json()
    assert body["service"] == "reviews-v1" and body["path"] == "/x" and body["method"] == "GET"
    assert body["query"] == {"a": "1", "b": ""} and body["headers"]["x-custom"] == "yes"

    fail = {"x-fail-first": "2", "x-fail-key": "k1"}
    assert [request(backend.port, "/f", headers=fail).status for _ in range(3)] == [503, 503, 200]
    other_key = {"x-fail-first": "1", "x-fail-key": "k2"}
    assert request(backend.port, "/f", headers=other_key).status == 503  # failures are counted per key

    started = time.monotonic()
    assert request(backend.port, "/slow", headers={"x-delay-ms": "300"}).status == 200
    assert time.monotonic() - started >= 0.3

    assert request(backend.port, "/post", method="POST", body=b"hello").json()["method"] == "POST"
    assert backend.stats()["paths"] == {"/x": 1, "/f": 4, "/slow": 1, "/post": 1}


def test_keep_alive_connection_is_reused(backend_factory):
    backend = backend_factory("ratings")
    with KeepAliveClient(backend.port, host="ratings") as client:
        first = client.request("/a")
        second = client.request("/a")
    assert first.status == second.status == 200
    assert first.sockname == second.sockname == client.sockname
    assert backend.hits("/a") == 2


def test_keep_alive_client_notices_a_closed_connection(backend_factory):
    """The e2e "same connection" checks rely on this: a server-side close is an error, not a silent reconnect."""
    backend = backend_factory("reviews-v2")
    with KeepAliveClient(backend.port) as client:
        with pytest.raises(ConnectionError):
            client.request("/bye", headers={"Connection": "close"})
        with pytest.raises(ConnectionError):
            client.request("/again")
