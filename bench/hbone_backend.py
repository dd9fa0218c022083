#!/usr/bin/env python3
"""A thread-per-connection HTTP/1.1 backend (standard library http.server), for bench/hbone.py's
``--threaded-backend`` rows: the same kind of small JSON answer as examples/apps/backend.py, but each new
connection costs a thread start, as with many simple test servers. Shows how much "added vs direct" for a new
connection per request depends on what a new connection costs the backend (the waypoint chain pools its
backend connections, a direct client does not).

    python bench/hbone_backend.py --port 19081
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body are two writes: without TCP_NODELAY, Nagle holds the body until the delayed ACK
    # (~40 ms per kept-alive request on Linux loopback).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"service": "threaded", "path": self.path, "method": "GET",
                           "headers": dict(self.headers.items())}, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
