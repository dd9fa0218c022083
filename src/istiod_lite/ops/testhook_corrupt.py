"""TEST-ONLY HOOK: corrupt generated resources so that the real Envoy rejects them (NACK) although our own
validation accepted the input. It exists to prove NACK attribution and last-good pinning end to end.

Enabled only by the hidden `serve --test-corrupt-file PATH` flag (or env ISTIOD_LITE_TEST_CORRUPT_FILE).
PATH is re-read at every push; each non-empty line names one resource to corrupt (any type). Never used
otherwise: without the flag the app does not construct this hook.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from istiod_lite.xds.types import CLUSTER, ROUTE, as_message

log = logging.getLogger(__name__)
ENV = "ISTIOD_LITE_TEST_CORRUPT_FILE"


class CorruptHook:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        log.warning("TEST HOOK ENABLED: resources named in %s are corrupted before they are served", self.path)

    def names(self) -> set[str]:
        try:
            text = self.path.read_text()
        except OSError:
            return set()
        return {line.strip() for line in text.splitlines() if line.strip()}

    def apply(self, resources: Mapping[str, Mapping[str, Message]]) -> dict[str, dict[str, Message]]:
        wanted = self.names()
        out = {t: dict(by_name) for t, by_name in resources.items()}
        for type_url, by_name in out.items():
            for name in sorted(wanted & set(by_name)):
                by_name[name] = corrupt(type_url, by_name[name])
        return out


def corrupt(type_url: str, message: Message) -> Message:
    """A copy Envoy rejects at apply time (not a proto-constraint failure). `message` may be an Encoded."""
    message = as_message(message)
    if type_url == CLUSTER:
        c = cluster_pb2.Cluster()
        c.CopyFrom(message)
        # "cluster provided LB specified but cluster '...' did not provide one"
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return c
    if type_url == ROUTE:
        r = route_pb2.RouteConfiguration()
        r.CopyFrom(message)
        vh = r.virtual_hosts.add(name="test-hook-corrupt", domains=["test-hook-corrupt.invalid"])
        route = vh.routes.add()
        route.match.safe_regex.regex = "(unclosed"  # Envoy compiles RE2 at apply time and rejects this
        route.direct_response.status = 200
        return r
    log.warning("test hook cannot corrupt %s resources; left unchanged", type_url)
    return message
