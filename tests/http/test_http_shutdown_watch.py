"""``ojs-server``'s shutdown: its steps are logged, and a shutdown that outlasts its bound ends
the process with the step it was stuck in and the stacks of the tasks still running."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from test_http_startup import server

STUCK = textwrap.dedent(
    """
    import asyncio, logging
    from ojs_http.shutdown_watch import ShutdownWatch

    async def never_finishing_close():
        await asyncio.Event().wait()

    async def main():
        watch = ShutdownWatch(limit_s=0.5)
        watch.begin("draining")
        watch.enter("closing the backend")
        await never_finishing_close()

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
    """
)


def test_a_shutdown_past_its_bound_ends_the_process_and_says_where_it_was() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "shutdown did not finish within 0.5 s (still closing the backend)" in done.stderr
    assert "never_finishing_close" in done.stderr  # the stack of the task it waited in


def test_a_finished_shutdown_is_not_cut_short() -> None:
    code = STUCK.replace(
        "await never_finishing_close()", "watch.done(); watch.close(); await asyncio.sleep(1)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "shutdown: done in" in done.stderr


def test_the_bound_holds_after_the_steps_until_the_process_ends() -> None:
    """What follows the steps (the event loop cancelling what is left) is bounded too."""
    code = STUCK.replace(
        "await never_finishing_close()", "watch.done(); await never_finishing_close()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "shutdown did not finish within 0.5 s" in done.stderr


def test_the_server_logs_its_shutdown_steps() -> None:
    with server("--log-level", "info") as (_base, lines, _proc):
        pass
    steps = [line for line in lines if "shutdown: " in line]
    assert any("draining the requests in flight" in line for line in steps), lines
    assert any("closing the backend" in line for line in steps), lines
    assert any("shutdown: done in" in line for line in steps), lines
