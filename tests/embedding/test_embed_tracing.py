"""OpenTelemetry traces end to end in process (``ojs_core.tracing``), with the SDK's in-memory
exporter: the enqueue span joins the caller's trace and its context travels in
``meta.traceparent`` to the worker, whose process span links to it and parents the handler's own
spans; failures mark the span; an SDK's own ``traceparent`` in ``meta`` is kept. Over HTTP, the
``traceparent`` header is the enqueue span's parent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from embed_support import Harness, eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ojs_core import JobContext
from ojs_core.states import JobState
from ojs_core.tracing import instrument
from ojs_http import HttpSettings, create_app
from ojs_memory import MemoryBackend

Kind = trace.SpanKind


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider, spans
    provider.shutdown()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


def _named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def _context(span: ReadableSpan) -> trace.SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


async def test_the_trace_goes_from_the_enqueue_to_the_handler(
    harness: Harness, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    instrument(harness.service, provider)
    tracer = provider.get_tracer("web-app")
    with tracer.start_as_current_span("POST /signup") as request_span:
        job = await harness.client.enqueue("mail.welcome", ["ada"], queue="mail")
    assert job is not None

    enqueue = _named(spans, "mail enqueue")
    assert enqueue.kind is Kind.PRODUCER
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request_span.get_span_context().span_id
    assert enqueue.attributes is not None
    assert dict(enqueue.attributes) == {
        "messaging.system": "ojs",
        "messaging.operation.type": "publish",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
        "ojs.job.id": job.id,
        "ojs.job.type": "mail.welcome",
        "ojs.job.queue": "mail",
        "ojs.job.priority": 0,
        "ojs.job.state": "available",
    }
    assert enqueue.status.status_code is trace.StatusCode.OK
    ctx = _context(enqueue)
    stored = await harness.job(job.id)
    version, trace_id, span_id, _ = stored.meta["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", _hex(ctx.trace_id, 32), _hex(ctx.span_id, 16))

    worker = harness.worker("mail")
    inner = provider.get_tracer("handler")

    @worker.handler("mail.welcome")
    async def welcome(ctx: JobContext) -> str:
        with inner.start_as_current_span("render template"):
            return "sent"

    worker.start()
    await eventually(lambda: harness.state(job.id), what="started")
    await eventually(
        lambda: any(s.name == "mail process" for s in spans.get_finished_spans()), what="run"
    )
    await worker.stop()
    assert await harness.state(job.id) is JobState.COMPLETED

    process = _named(spans, "mail process")
    assert process.kind is Kind.CONSUMER
    assert [link.context.span_id for link in process.links] == [ctx.span_id]
    assert process.parent is None  # a link, not a parent: the spec's convention
    assert process.attributes is not None
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["ojs.job.attempt"] == 1
    assert process.attributes["ojs.worker.id"] == worker.worker_id
    assert process.status.status_code is trace.StatusCode.OK
    render = _named(spans, "render template")
    assert render.parent is not None
    assert render.parent.span_id == _context(process).span_id


async def test_a_failed_run_marks_its_span(
    harness: Harness, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    instrument(harness.service, provider)
    job = await harness.client.enqueue("mail.bad", [], queue="mail", retry={"max_attempts": 1})
    assert job is not None
    worker = harness.worker("mail")

    @worker.handler("mail.bad")
    async def bad(ctx: JobContext) -> None:
        raise ConnectionError("smtp down")

    worker.start()
    await eventually(
        lambda: any(s.name == "mail process" for s in spans.get_finished_spans()), what="run"
    )
    await worker.stop()
    process = _named(spans, "mail process")
    assert process.status.status_code is trace.StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["error.type"] == "ConnectionError"
    assert process.attributes["error.message"] == "smtp down"
    assert process.attributes["ojs.job.error.attempt"] == 1


async def test_an_sdks_own_traceparent_in_meta_is_kept(
    harness: Harness, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    instrument(harness.service, provider)
    sdk = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job = await harness.client.enqueue("x", [], meta={"traceparent": sdk})
    assert job is not None
    assert (await harness.job(job.id)).meta["traceparent"] == sdk
    enqueue = _named(spans, "default enqueue")
    assert enqueue.parent is not None
    assert _hex(enqueue.parent.span_id, 16) == "00f067aa0ba902b7"
    assert _hex(enqueue.context.trace_id, 32) == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_over_http_the_traceparent_header_parents_the_enqueue_span(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, spans = exporter
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False, tracing=True))
    instrument(app.state.service, provider)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        created = await client.post(
            "/ojs/v1/jobs",
            json={"type": "report.build", "args": []},
            headers={"traceparent": caller},
        )
        assert created.status_code == 201, created.text
        meta = created.json()["job"]["meta"]
        untraced = await client.post("/ojs/v1/jobs", json={"type": "report.build", "args": []})
    enqueue, other = [s for s in spans.get_finished_spans() if s.name == "default enqueue"]
    assert enqueue.parent is not None
    assert _hex(enqueue.parent.span_id, 16) == "b7ad6b7169203331"
    assert _hex(enqueue.context.trace_id, 32) == "0af7651916cd43dd8448eb211c80319c"
    assert meta["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert other.parent is None  # no header: a new trace, still recorded in meta
    assert untraced.json()["job"]["meta"]["traceparent"].split("-")[1] != (
        "0af7651916cd43dd8448eb211c80319c"
    )


async def test_a_malformed_tracestate_neither_fails_the_enqueue_nor_strands_the_run(
    harness: Harness, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # OpenTelemetry's propagator raises on a non-string tracestate; tracing must not turn a
    # client's odd meta into a failed enqueue or a job that stays active.
    provider, spans = exporter
    instrument(harness.service, provider)
    sdk = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job = await harness.client.enqueue("odd", [], meta={"traceparent": sdk, "tracestate": 5})
    assert job is not None
    other = await harness.client.enqueue("odd", [], meta={"traceparent": sdk, "tracestate": [None]})
    assert other is not None
    worker = harness.worker()

    @worker.handler("odd")
    async def odd(ctx: JobContext) -> str:
        return "ran"

    worker.start()

    async def both_done() -> bool:
        states = [await harness.state(j) for j in (job.id, other.id)]
        return states == [JobState.COMPLETED, JobState.COMPLETED]

    await eventually(both_done, what="both jobs completed")
    await worker.stop()
    assert len([s for s in spans.get_finished_spans() if s.name == "default process"]) == 2
