"""OpenTelemetry set-up and trace-context propagation through NATS headers.

nats-py has no instrumentation package, so the W3C `traceparent` header is injected and extracted
here, once, for every publisher and consumer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from shared import metrics

_tracer = trace.get_tracer("creditstream")


def setup(service: str) -> None:
    """Install the tracer provider (OTLP export only when an endpoint is configured), the meter provider
    (read by /metrics) and JSON logs."""
    metrics.setup(service)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), handlers=[handler], force=True)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if ctx.is_valid:
            line["trace_id"] = format(ctx.trace_id, "032x")
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def inject_context(headers: dict[str, str]) -> dict[str, str]:
    propagate.inject(headers)
    return headers


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for work that is stored now and published later."""
    return inject_context({}).get("traceparent")


def trace_link(subject: str, headers: dict[str, str]) -> trace.Link:
    """A link to the trace a message was published in, naming the message's subject."""
    context = trace.get_current_span(propagate.extract(headers)).get_span_context()
    return trace.Link(context, attributes={"messaging.destination.name": subject})


@contextmanager
def span(name: str, **attributes: str | int) -> Iterator[trace.Span]:
    """A span of the current trace for a step that waits on something (the ledger's batch, a worker's
    operation), so a trace shows where the time went."""
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextmanager
def consumer_batch_span(consumer: str, size: int, links: list[trace.Link]) -> Iterator[trace.Span]:
    """One span for a batch applied at once, linked to each message's trace (a span has one parent)."""
    attributes: dict[str, str | int] = {"messaging.consumer": consumer, "messaging.batch.message_count": size}
    with _tracer.start_as_current_span(
        f"consume batch {consumer}", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        yield span


@contextmanager
def consumer_span(consumer: str, subject: str, headers: dict[str, str]) -> Iterator[trace.Span]:
    ctx = propagate.extract(headers)
    with _tracer.start_as_current_span(
        f"consume {subject}",
        context=ctx,
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.consumer": consumer},
    ) as span:
        yield span
