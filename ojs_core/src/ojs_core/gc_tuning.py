"""The garbage collector's first threshold, raised for processes that move many jobs.

CPython runs a young collection after every 700 net allocations of container objects, and
every tenth of those an older one; an enqueue, a claim or an ack allocates a few hundred
(attrs instances, dicts, futures), and the version caches keep thousands of jobs alive, which
the older collections walk again and again. Measured in the producer of the deployment
benchmark (``docs/performance.md``, "The garbage collector"): ~20 % of its CPU per enqueue went
to the collector with the default, ~1 % with a first threshold of 50,000. Almost every object
a job allocates is freed by reference counting the moment it is dropped; only reference
cycles wait for a collection, and they wait a little longer (at most 50,000 allocations).

:func:`tune_gc` is applied by ``ojs-server``, by :meth:`Worker.run
<ojs_core.worker.Worker.run>` and by every :class:`~ojs_core.client.Client` (once raised,
again changes nothing); ``OJS_GC_TUNING=off`` in the environment leaves the collector as it
is, and a first threshold already set higher is kept. An application that mounts the ASGI app
(``ojs_http.create_app``) decides for its own process: call :func:`tune_gc` at start-up.
"""

from __future__ import annotations

import gc
import os

__all__ = ["ENV", "GEN0_THRESHOLD", "tune_gc"]

#: The first threshold :func:`tune_gc` sets (CPython's default is 700).
GEN0_THRESHOLD = 50_000
#: The environment variable that turns the tuning off (``off``, ``0``, ``false`` or ``no``).
ENV = "OJS_GC_TUNING"


def tune_gc(gen0: int = GEN0_THRESHOLD) -> bool:
    """Raise the collector's first threshold to ``gen0`` (the other two are kept); whether it
    changed anything. Does nothing when ``OJS_GC_TUNING`` says ``off`` or the threshold is
    already at least ``gen0``."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    first, second, third = gc.get_threshold()
    if first == 0 or first >= gen0:  # collection disabled by threshold, or set higher already
        return False
    gc.set_threshold(gen0, second, third)
    return True
