"""Test harness for istiod-lite: procs (free ports, managed subprocesses, wait_until), envoy (the real
Envoy and its admin API), apps (istiod-lite serve, the sample backend), http (clients), manifests (the demo
topology as templates with run-time ports).

tests/conftest.py loads this folder as the package `testsupport` (a unique name: with
`--import-mode=importlib` a `tests.support` import is unreliable, and a top-level `envoy` module would
shadow Envoy's protos), so tests write `from testsupport.procs import wait_until`.
"""
