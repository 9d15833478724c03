"""CPython's cyclic garbage collector, set for a gateway that runs for months.

Profiles of a busy worker showed the collector at 14-17% of CPU, with a full
collection of 70-90 ms about once a second: every request allocates
thousands of short-lived objects, each 700 of them triggered a young
collection, and each full collection walked every object the process holds
for good (the config, the routes, the modules, Twisted's reactor). Once the
process serves, those are frozen (``gc.freeze``: never scanned again) and
the young threshold is raised, so collections are rarer and only see what
requests made. Reference counting still frees almost everything at once;
the collector is only for cycles.
"""

from __future__ import annotations

import gc

from twisted.logger import Logger

log = Logger(namespace="shardstream")

_settled = False


def settle(threshold: int) -> bool:
    """Freeze what lives now and raise the young threshold; once per process.
    ``threshold`` 0 keeps CPython's defaults. Returns whether it acted."""
    global _settled
    if _settled or threshold <= 0:
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
    log.info("garbage collector: {frozen} objects frozen, young threshold {threshold}",
             frozen=gc.get_freeze_count(), threshold=threshold)
    return True
