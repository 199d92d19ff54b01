"""How long ``ojs-server``'s shutdown takes, step by step, and a bound on the whole of it.

Each step is bounded on its own (the HTTP drain by ``GRACE_S``, the NATS drain, the embedded
nats-server's stop), but a step that waits on something that never happens would keep the
process alive after SIGTERM, holding its port and its data directory. So the steps are logged
as they begin (INFO, with the time since the signal), and a thread outside the event loop
ends the process (exit code 1) if the whole shutdown outlasts :data:`LIMIT_S`, after logging
the step it was in and the stack of every asyncio task still running. An orchestrator would
send SIGKILL anyway (Kubernetes after 30 s); this way the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

__all__ = ["LIMIT_S", "ShutdownWatch"]

log = logging.getLogger("ojs.server")

#: Seconds from the signal after which a shutdown still running is cut short.
LIMIT_S = 30.0


class ShutdownWatch:
    """Logs the steps of one shutdown and cuts it short after ``limit_s`` seconds."""

    def __init__(self, limit_s: float = LIMIT_S) -> None:
        self.limit_s = limit_s
        self.step = ""
        self._began: float | None = None
        self._timer: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self, step: str) -> None:
        """The signal arrived: start the bound, and the first step."""
        if self._began is not None:
            return
        self._began = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._timer = threading.Timer(self.limit_s, self._expired)
        self._timer.daemon = True
        self._timer.start()
        self.enter(step)

    def enter(self, step: str) -> None:
        """The shutdown moved on to ``step`` (ignored before :meth:`begin`)."""
        if self._began is None:
            return
        self.step = step
        log.info("shutdown: %s (%.1f s after the signal)", step, self.elapsed())

    def done(self) -> None:
        """The shutdown's steps finished (the bound holds until :meth:`close`)."""
        if self._began is not None:
            log.info("shutdown: done in %.1f s", self.elapsed())

    def close(self) -> None:
        """The process is about to exit: stop the bound."""
        if self._timer is not None:
            self._timer.cancel()

    def elapsed(self) -> float:
        """Seconds since :meth:`begin`."""
        return 0.0 if self._began is None else time.monotonic() - self._began

    def _expired(self) -> None:
        try:
            # Straight to stderr first: a logging handler stuck on a full pipe could be the
            # very thing the shutdown waits for, and would hold this thread too.
            os.write(2, f"ojs-server: shutdown did not finish within {self.limit_s:g} s\n".encode())
            log.error(
                "shutdown did not finish within %g s (still %s); exiting now",
                self.limit_s,
                self.step,
            )
            if self._loop is not None and self._loop.is_running():
                told = threading.Event()

                def log_tasks() -> None:
                    try:
                        log.error("asyncio tasks still running:\n%s", _task_stacks())
                    finally:
                        told.set()

                self._loop.call_soon_threadsafe(log_tasks)
                told.wait(2.0)  # a loop that is blocked cannot say: go on without it
            for handler in logging.getLogger().handlers:
                handler.flush()
        finally:
            os._exit(1)


def _task_stacks() -> str:
    """Each running task and the chain of coroutines it is suspended in, innermost last
    (``Task.print_stack`` shows only the outermost)."""
    lines = []
    for task in asyncio.all_tasks():
        lines.append(f"task {task.get_name()}:")
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                lines.append(f"  waiting for {awaited!r}"[:300])
                break
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)
