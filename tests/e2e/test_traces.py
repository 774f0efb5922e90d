"""One trace per user action: a media job's upload, hold, work, capture and projection are one trace in a
collector (an OTLP receiver in the test process, fed by every service's OTLP exporter), continued through
each NATS hop, with links where a batch span has many parents."""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.testing.otlp import OtlpReceiver, Span
from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, welcomed
from tests.e2e.test_media_images import image

# A media job's story, each step caused by the one before (service, span name).
STEPS = [
    ("media", "POST /api/images"),  # the upload, continuing the caller's trace
    ("ledger", "consume media.job.requested"),
    ("ledger", "ledger HoldForJob"),  # the hold: its wait for the ledger's batch and the answer
    ("media", "consume ledger.credits.reserved"),  # held: the job goes to the workers
    ("media-worker", "consume mediawork.job"),
    ("media-worker", "media image_upload"),  # the work itself
    ("ledger", "consume media.job.completed"),
    ("ledger", "ledger ChargeJob"),  # the capture
]


@pytest.fixture(scope="module")
def traced(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, OtlpReceiver]]:
    receiver = OtlpReceiver()
    with (
        receiver.running(),
        system_of_its_own(database_url, tmp_path_factory.mktemp("traced"), **receiver.env()) as (
            running,
            _,
        ),
    ):
        yield running, receiver


def ancestors(span: Span, spans: list[Span]) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    found = []
    while (span := by_id.get(span.parent_id)) is not None:  # type: ignore[assignment]
        found.append(span)
    return found


def step(spans: list[Span], service: str, name: str) -> Span | None:
    return next((s for s in spans if (s.service, s.name) == (service, name)), None)


def test_a_media_job_is_one_trace_from_the_upload_to_the_projection(traced: tuple[System, OtlpReceiver]) -> None:
    system, receiver = traced
    token, user_id = welcomed(system)
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{system.url('media')}/api/images",
        files={"file": ("picture.bin", image(), "application/octet-stream")},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4()), "traceparent": f"00-{trace_id}-{caller}-01"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    account = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(account, headers=bearer(token)).json()["balance"] == 9, timeout=30,
               what="the job's capture")  # fmt: skip
    assert_converged(system, token, user_id)

    def projected(spans: list[Span]) -> Span | None:
        """Projections applying the capture: its own span in the trace, or a batch's linking to it."""
        return next((s for s in spans if s.service == "projections" and (
            s.name == "consume ledger.credits.captured" or (trace_id, "ledger.credits.captured") in s.links
        )), None)  # fmt: skip

    def whole() -> bool:
        spans = receiver.trace(trace_id)
        return all(step(spans, *s) for s in STEPS) and projected(spans) is not None

    wait_until(whole, timeout=20, what="every step's span at the receiver")
    spans = receiver.trace(trace_id)
    chain = [step(spans, *s) for s in STEPS]
    assert all(s is not None and s.trace_id == trace_id for s in chain), [str(s) for s in spans]
    assert chain[0] is not None and chain[0].kind == "server" and chain[0].parent_id == caller
    for before, after in itertools.pairwise(chain):
        assert after is not None and before in ancestors(after, spans), f"{after} does not follow {before}"
    last = projected(spans)
    assert last is not None
    if last.trace_id == trace_id:  # applied alone: a child of the capture
        assert chain[-1] in ancestors(last, spans)
    else:  # applied in a batch: linked to this trace by the capture's message, and the hold's
        assert (trace_id, "ledger.credits.reserved") in last.links
