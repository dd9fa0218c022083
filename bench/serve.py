"""`istiod-lite` (the real CLI, `istiod_lite.cli.main`) with the directory source polling every 5 ms instead of
100 ms, so that "file write -> Envoy ACK" measures the push path and not the poll period.

There is no `--poll-interval` flag (yet); this wrapper changes only that default. Usage is the CLI's:
`python bench/serve.py serve --config-dir DIR ...`. BENCH_POLL_INTERVAL overrides the 5 ms.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from istiod_lite import cli, settings

POLL = float(os.environ.get("BENCH_POLL_INTERVAL", "0.005"))


@dataclasses.dataclass(frozen=True)
class FastPollSettings(settings.Settings):
    poll_interval: float = POLL


if __name__ == "__main__":
    settings.Settings = FastPollSettings  # cli._serve imports the name at call time
    sys.exit(cli.main(sys.argv[1:]))
