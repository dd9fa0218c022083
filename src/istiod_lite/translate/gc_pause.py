"""`paused_gc()`: the cyclic garbage collector paused for the duration of one translation.

A full translation allocates hundreds of thousands of container objects (dicts, tuples, dataclasses, messages)
that all stay alive until it returns, so every collection the allocations trigger finds nothing to free while
scanning an ever larger heap; the generation-2 ones also scan the whole snapshot. At 5,000 services that was
~40% of `translate()` (bench/translate.py). Reference counting still frees everything acyclic at once; cycles
(none are made on purpose) wait for the next collection after the pause. Nested or concurrent use is safe: only
the call that paused the collector resumes it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
