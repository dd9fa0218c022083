"""DirectorySource: the embedded default source. Reads every *.yaml, *.yml and *.json file under a directory
(recursively), feeds each file to the store as its own origin, and polls for edits, additions and removals.

Polling (stat of every file, re-read when mtime/size/inode change) needs no extra dependency and no
kernel feature; at the default 100 ms interval it costs well under a millisecond for a few hundred files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from istiod_lite.model import manifests
from istiod_lite.model.meta import error
from istiod_lite.sources.base import ConfigSink

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 32 * 1024 * 1024


class DirectorySource:
    def __init__(self, directory: str | Path, interval: float = 0.1) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._synced = False
        self.events = 0  # files (re)loaded or removed, for metrics

    @property
    def synced(self) -> bool:
        return self._synced

    async def run(self, sink: ConfigSink) -> None:
        while True:
            self.scan(sink)
            self._synced = True
            await asyncio.sleep(self.interval)

    def scan(self, sink: ConfigSink) -> int:
        """One pass: load changed files, drop removed ones. Returns the number of files that changed."""
        current: dict[str, tuple[int, int, int]] = {}
        for path in self._files():
            try:
                st = path.stat()
            except OSError:
                continue
            current[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
        changed = 0
        for name in sorted(self._seen.keys() - current.keys()):
            log.info("config file removed: %s", name)
            sink.replace_origin(name, [], [])
            changed += 1
        for name, stamp in sorted(current.items()):
            if self._seen.get(name) == stamp:
                continue
            self._load(name, stamp, sink)
            changed += 1
        self._seen = current
        self.events += changed
        return changed

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        out = []
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out.extend(Path(root, f) for f in sorted(files) if f.endswith(SUFFIXES) and not f.startswith("."))
        return out

    def _load(self, name: str, stamp: tuple[int, int, int], sink: ConfigSink) -> None:
        if stamp[1] > MAX_FILE_BYTES:
            sink.replace_origin(name, [], [error(None, "", f"file larger than {MAX_FILE_BYTES} bytes; ignored",
                                                 "TooLarge").with_file(name)])
            return
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            sink.replace_origin(name, [], [error(None, "", f"cannot read file: {exc}", "Unreadable").with_file(name)])
            return
        docs, issues = manifests.decode(text, name)
        log.info("config file loaded: %s (%d objects)", name, len(docs))
        sink.replace_origin(name, [(d, name) for d in docs], issues)
