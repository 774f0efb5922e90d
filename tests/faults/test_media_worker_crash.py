"""SIGKILL the media worker in the middle of a job: the job is delivered again and ends COMPLETED with
its credits captured once; a job whose worker is killed on every delivery ends FAILED after the bound,
its hold released. Nothing is charged twice and nothing is left held."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testing.waiting import wait_until
from tests.conftest import System, system_of_its_own
from tests.e2e.convergence import assert_converged, consumer_state, welcomed
from tests.e2e.test_media_videos import ended, settled, upload
from tests.media_clips import clip

ACK_WAIT_SECONDS = 2  # how soon a dead worker's job is delivered again (30 s by default)


@pytest.fixture(scope="module")
def crashing(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own, its consumers giving up after 2 deliveries."""
    with system_of_its_own(
        database_url, tmp_path_factory.mktemp("crashing"), MAX_DELIVER="2", ACK_WAIT_SECONDS=str(ACK_WAIT_SECONDS)
    ) as (running, _):
        yield running


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """24 s of 1280 x 720: about two seconds of transcoding here, a wide window to kill the worker in."""
    return clip(24.0, (1280, 720))


def uploaded(system: System, video: bytes) -> tuple[str, str, int, str]:
    """A new user's video, accepted: their token and id, the worker's deliveries before it, the video's id."""
    token, user_id = welcomed(system)
    before = consumer_state(system, "MEDIAWORK", "media-worker")["delivered"]
    response = upload(system, token, video)
    assert response.status_code == 202, response.text
    return token, user_id, before, response.json()["id"]


def kill_the_worker_on_delivery(system: System, n: int) -> None:
    """Wait until the worker is working on the job's `n`-th delivery, SIGKILL it, and start a new one."""

    def working() -> bool:
        state = consumer_state(system, "MEDIAWORK", "media-worker")
        return state["delivered"] == n and state["ack_pending"] == 1

    wait_until(working, timeout=60, interval=0.05, what=f"the worker on delivery {n}")
    worker = system.services["media-worker"]
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    worker.start().wait_ready()


def test_a_worker_killed_mid_job_leaves_it_to_the_next_which_completes_it_charged_once(
    crashing: System, long_clip: bytes
) -> None:
    token, user_id, before, video_id = uploaded(crashing, long_clip)
    kill_the_worker_on_delivery(crashing, before + 1)
    done = ended(crashing, token, video_id)
    assert done["status"] == "COMPLETED", done
    assert (done["metadata"]["frames"], done["metadata"]["width"]) == (600, 1280)
    assert consumer_state(crashing, "MEDIAWORK", "media-worker")["delivered"] == before + 2
    settled(crashing, token, user_id, 8)
    view = assert_converged(crashing, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -2), ("BONUS", 10)]


def test_a_job_whose_worker_dies_on_every_delivery_fails_after_the_bound_and_is_released(
    crashing: System, long_clip: bytes
) -> None:
    token, user_id, before, video_id = uploaded(crashing, long_clip)
    for n in (1, 2):  # MAX_DELIVER deliveries, each worker killed mid-job
        kill_the_worker_on_delivery(crashing, before + n)
    failed = ended(crashing, token, video_id)
    assert failed["status"] == "FAILED" and "without an outcome" in failed["metadata"]["error"], failed
    settled(crashing, token, user_id, 10)  # released, never charged
    view = assert_converged(crashing, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]
    assert not any(Path(crashing.env["DATA_DIR"], "media", "incoming").iterdir())  # its upload dropped
