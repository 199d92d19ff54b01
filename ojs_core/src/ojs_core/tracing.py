"""OpenTelemetry traces of enqueues and job runs, as ``spec/ojs-observability.md`` names them.

``pip install "ojs-core[otel]"`` (the OpenTelemetry API), then :func:`instrument` a service::

    from ojs_core.tracing import instrument
    instrument(service)                # the global tracer provider
    instrument(service, provider)      # or a given one

- Each enqueued job gets a ``{queue} enqueue`` span (kind ``PRODUCER``), a child of whatever
  trace is current (the HTTP binding makes the caller's ``traceparent`` header current). Its
  context is stored in the job's ``meta.traceparent`` / ``meta.tracestate`` (W3C Trace Context)
  unless the client sent its own there (an instrumented SDK's enqueue span): remote workers read
  it from ``meta``.
- The in-process :class:`~ojs_core.worker.Worker` runs each handler inside a ``{queue} process``
  span (kind ``CONSUMER``) that *links* to the context in ``meta`` (the spec's span link, not a
  parent: enqueue and run may be hours apart) and is current while the handler runs, so spans
  the handler makes are its children. A failure sets status ``ERROR`` with ``error.type``,
  ``error.message`` and ``ojs.job.error.attempt``.

Attributes: ``messaging.system`` (``ojs``), ``messaging.operation.type`` (``publish`` /
``process``), ``messaging.destination.name``, ``messaging.message.id``, ``ojs.job.id``,
``ojs.job.type``, ``ojs.job.queue``, ``ojs.job.priority``, ``ojs.job.state``, and on runs
``ojs.job.attempt`` and ``ojs.worker.id``. Without :func:`instrument` nothing here runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from .model import Job, JobError
from .timeutil import format_ts

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from .service import JobService

__all__ = ["JobTracer", "instrument"]

log = logging.getLogger("ojs.tracing")

#: The instrumentation scope's name.
SCOPE = "ojs"


def instrument(service: JobService, provider: TracerProvider | None = None) -> JobTracer:
    """Trace ``service``'s enqueues and its in-process workers' runs; returns the tracer."""
    tracer = JobTracer(provider)
    service.tracer = tracer
    return tracer


class JobTracer:
    """Makes the enqueue and process spans (needs ``opentelemetry-api``)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise RuntimeError(
                'tracing needs the OpenTelemetry API: pip install "ojs-core[otel]"'
            ) from exc
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=provider)

    async def enqueue(self, jobs: list[Job], store: Callable[[list[Job]], Awaitable[Any]]) -> Any:
        """Run ``store(jobs)`` inside one ``PRODUCER`` span per job, each job carrying its
        span's context in ``meta`` (unless the client put a ``traceparent`` there). Tracing
        never fails an enqueue: if it breaks, the jobs are stored untraced."""
        from opentelemetry import trace

        try:
            spans, stamped = self._start_enqueue(jobs)
        except Exception:
            log.warning("tracing the enqueue failed; storing untraced", exc_info=True)
            return await store(jobs)
        try:
            result = await store(stamped)
        except BaseException as exc:
            for span in spans:
                with contextlib.suppress(Exception):
                    _failed(span, type(exc).__name__, str(exc))
                    span.end()
            raise
        for span, job in zip(spans, stamped, strict=True):
            with contextlib.suppress(Exception):
                span.set_attribute("ojs.job.state", job.state.value)
                span.set_status(trace.StatusCode.OK)
                span.end()
        return result

    def _start_enqueue(self, jobs: list[Job]) -> tuple[list[Span], list[Job]]:
        from opentelemetry import context, propagate, trace

        spans: list[Span] = []
        stamped: list[Job] = []
        for job in jobs:
            parent = None
            carrier = _carrier(job)
            if carrier and not trace.get_current_span().get_span_context().is_valid:
                parent = propagate.extract(carrier)  # the SDK's enqueue span
            span = self._tracer.start_span(
                f"{job.queue} enqueue",
                context=parent,
                kind=trace.SpanKind.PRODUCER,
                attributes=_attributes(job, "publish"),
            )
            spans.append(span)
            if carrier:
                stamped.append(job)
                continue
            injected: dict[str, str] = {}
            propagate.inject(
                injected, context=trace.set_span_in_context(span, context.get_current())
            )
            stamped.append(attrs.evolve(job, meta={**job.meta, **injected}))
        return spans, stamped

    @contextmanager
    def process(self, job: Job, worker_id: str) -> Iterator[Callable[[JobError | None], None]]:
        """The ``CONSUMER`` span of one run, current while the handler runs. Yields a function
        to call with the run's error (``None`` for success). Tracing never fails a run: if the
        span cannot be started, the run goes on untraced."""
        with contextlib.ExitStack() as stack:
            try:
                span = stack.enter_context(self._process_span(job, worker_id))
            except Exception:
                log.warning("tracing job %s failed; running it untraced", job.id, exc_info=True)
                yield _untraced
                return
            yield functools.partial(_outcome, span, job)

    def _process_span(self, job: Job, worker_id: str) -> Any:
        from opentelemetry import propagate, trace

        links = []
        carrier = _carrier(job)
        if carrier:
            linked = trace.get_current_span(propagate.extract(carrier)).get_span_context()
            if linked.is_valid:
                links.append(trace.Link(linked))
        attributes = _attributes(job, "process")
        attributes["ojs.job.attempt"] = job.attempt
        attributes["ojs.worker.id"] = worker_id
        return self._tracer.start_as_current_span(
            f"{job.queue} process",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )


def _untraced(error: JobError | None) -> None:
    """The outcome function of a run whose span could not be started."""


def _outcome(span: Span, job: Job, error: JobError | None) -> None:
    from opentelemetry import trace

    with contextlib.suppress(Exception):
        if error is None:
            span.set_attribute("ojs.job.state", "completed")
            span.set_status(trace.StatusCode.OK)
        else:
            _failed(span, error.type or error.code, error.message)
            span.set_attribute("ojs.job.error.attempt", error.attempt or job.attempt)


def _carrier(job: Job) -> dict[str, str]:
    """The job's W3C trace context from ``meta``: string values only (a client's ``5`` or
    ``[null]`` must not reach the propagator, which raises on them)."""
    if not isinstance(job.meta.get("traceparent"), str):
        return {}
    return {k: v for k in ("traceparent", "tracestate") if isinstance(v := job.meta.get(k), str)}


def _attributes(job: Job, operation: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "messaging.system": "ojs",
        "messaging.operation.type": operation,
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "ojs.job.id": job.id,
        "ojs.job.type": job.type,
        "ojs.job.queue": job.queue,
        "ojs.job.priority": job.priority,
    }
    if job.scheduled_at is not None:
        out["ojs.job.scheduled_at"] = format_ts(job.scheduled_at)
    return out


def _failed(span: Span, kind: str, message: str) -> None:
    from opentelemetry import trace

    span.set_attribute("error.type", kind)
    span.set_attribute("error.message", message)
    span.set_status(trace.StatusCode.ERROR, message)
