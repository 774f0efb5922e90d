"""Every process's numbers, for Prometheus to scrape on GET /metrics (text format), and every instrument's
name in one place.

The instruments are OpenTelemetry's, the SDK the services already trace with: FastAPI's own telemetry records
`http.server.request.duration` (route template, method, status) through the same provider, and the SDK's
Prometheus exporter turns `creditstream.ledger.commands` into `creditstream_ledger_commands_total`, a unit
`s` into `_seconds`. What is a state rather than an event (a consumer's pending messages, a relay's backlog,
dead letters, a read model's lag) is sampled when Prometheus asks (`Runtime.sample`), not polled.

No label holds a user's, a job's or an event's id: every label value comes from a small fixed set (a command
class, an operation, a consumer, an outcome), so the series stay few whatever the traffic.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, generate_latest

# The text format every Prometheus reads (prometheus-client names it 1.0.0 now: the same text, newer servers).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A proxy until `setup` installs the provider: instruments made at import work from then on.
_meter = metrics.get_meter("creditstream")

LEDGER_COMMANDS = _meter.create_counter(
    "creditstream.ledger.commands", description="ledger commands by class and outcome (applied, replayed, a refusal)"
)
LEDGER_BATCH_SIZE = _meter.create_histogram(
    "creditstream.ledger.batch_size",
    description="commands saved in one batch of the ledger's unit of work",
    explicit_bucket_boundaries_advisory=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)
RELAY_BACKLOG = _meter.create_gauge(
    "creditstream.relay.backlog_events", description="stored events a relay has not published yet"
)
CONSUMER_PENDING = _meter.create_gauge(
    "creditstream.consumer.pending_messages",
    description="messages a durable consumer has not acknowledged yet (undelivered and in flight)",
)
DEADLETTERS = _meter.create_gauge("creditstream.deadletters", description="messages a consumer parked, waiting")
WEBHOOKS = _meter.create_counter("creditstream.webhooks", description="webhooks received, by source and outcome")
MEDIA_JOBS = _meter.create_counter("creditstream.media.jobs", description="media jobs ended, by operation and outcome")
MEDIA_JOB_DURATION = _meter.create_histogram(
    "creditstream.media.job.duration",
    unit="s",
    description="a worker's time on one job, from its work item to its outcome",
    explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
)
PROJECTION_LAG = _meter.create_gauge(
    "creditstream.projection.lag",
    unit="s",
    description="age of the oldest message a read model has not applied (0: caught up)",
)
AUDIT_DISCREPANCIES = _meter.create_gauge(
    "creditstream.audit.discrepancies", description="differences the last `creditstream audit` found (0: clean)"
)
AUDIT_LAST_RUN = _meter.create_gauge(
    "creditstream.audit.last_run_timestamp", unit="s", description="when the last `creditstream audit` ran"
)
READY = _meter.create_gauge("creditstream.ready", description="1 while /readyz would answer 200, else 0")
NATS_PERMISSION_DENIED = _meter.create_counter(
    "creditstream.nats.permission_denied", description="operations the NATS server refused this process"
)
RATE_LIMITED = _meter.create_counter(
    "creditstream.rate_limited", description="requests answered 429 by a per-user limit, by route class"
)

_installed: list[str] = []


def setup(service: str) -> None:
    """The process's meter provider, read by the Prometheus exporter; once per process (a second app in
    the same process, as in the tests, shares the first's)."""
    if _installed:
        return
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], resource=Resource.create({"service.name": service})
    )
    metrics.set_meter_provider(provider)
    _installed.append(service)
    # Present from the start at 0, so that an alert on its rate has a series to read.
    NATS_PERMISSION_DENIED.add(0)


def render() -> bytes:
    return generate_latest(REGISTRY)
