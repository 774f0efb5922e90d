"""Video processing end to end: a clip the test makes with PyAV goes up over HTTP, is held, probed and
transcoded to H.264 MP4 by a worker, captured once; a file that fails to decode after its hold is
released; a cancelled one is released and stays cancelled; what is not a video costs nothing."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
from PIL import Image

from services.media.video import probe
from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, consumer_state, welcomed
from tests.media_clips import clip, undecodable


def upload(system: System, token: str, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{system.url('media')}/api/videos",
        files={"file": ("clip.bin", data, "application/octet-stream")},
        data=fields,
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )


def get(system: System, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{system.url('media')}{path}", headers=bearer(token), timeout=60)


def ended(system: System, token: str, video_id: str) -> dict[str, Any]:
    wait_until(lambda: get(system, token, f"/api/videos/{video_id}").json()["status"] != "PROCESSING",
               timeout=60, what=f"video {video_id} processed")  # fmt: skip
    return dict(get(system, token, f"/api/videos/{video_id}").json())


def account(system: System, token: str, user_id: str) -> dict[str, Any]:
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    return dict(httpx.get(url, headers=bearer(token), timeout=30).json())


def settled(system: System, token: str, user_id: str, balance: int) -> None:
    """Wait for the account's holds to be settled (captured or released) at `balance`."""

    def counts() -> tuple[int, int, int]:
        found = account(system, token, user_id)
        return found["balance"], found["available"], found["reserved"]

    wait_until(lambda: counts() == (balance, balance, 0), timeout=30, what=f"holds settled at {balance}")


def test_a_video_is_held_transcoded_to_h264_captured_and_served(system: System) -> None:
    token, user_id = welcomed(system)
    response = upload(system, token, clip(2.0, (320, 240), codec="mpeg4", audio=True), title="Loop")
    assert response.status_code == 202, response.text
    record = response.json()
    assert (record["title"], record["metadata"]["container"]) == ("Loop", "mp4")
    assert record["status"] in ("PROCESSING", "COMPLETED")
    done = ended(system, token, record["id"])
    assert done["status"] == "COMPLETED", done
    meta = done["metadata"]
    assert (meta["codec"], meta["width"], meta["height"], meta["fps"], meta["frames"]) == ("h264", 320, 240, 25.0, 50)
    assert (meta["source"]["codec"], meta["source"]["audio_codec"]) == ("mpeg4", "aac")
    served = get(system, token, done["url"])
    assert served.headers["content-type"] == "video/mp4" and len(served.content) == meta["bytes"]
    made = probe(served.content)  # what was served really is the transcode
    assert (made.codec, made.width, made.height, made.frames, made.audio_codec) == ("h264", 320, 240, 50, "aac")
    assert abs(made.duration - 2.0) < 0.1
    with Image.open(io.BytesIO(get(system, token, done["thumbnail_url"]).content)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("PNG", (256, 192))
    assert [v["id"] for v in get(system, token, "/api/videos").json()["videos"]] == [record["id"]]
    assert get(system, token, "/api/images").json()["images"] == []  # a video is not an image
    assert get(system, token, f"/api/images/{record['id']}").status_code == 404
    other, _ = welcomed(system)
    assert get(system, other, f"/api/videos/{record['id']}").status_code == 404  # only one's own
    settled(system, token, user_id, 8)
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -2), ("BONUS", 10)]


def test_what_is_not_a_video_costs_nothing(system: System) -> None:
    token, user_id = welcomed(system)
    for data in (b"", b"%PDF-1.7 not a video", b"\x89PNG\r\n\x1a\n" + bytes(64)):
        refused = upload(system, token, data)
        assert refused.status_code == 400, refused.text
        assert refused.json()["detail"].startswith("Not a video this service takes")
    assert "empty" in upload(system, token, b"").json()["detail"]
    assert get(system, token, "/api/videos").json()["videos"] == []
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]


def test_a_file_the_decoder_rejects_after_the_hold_fails_and_is_released(system: System) -> None:
    token, user_id = welcomed(system)
    response = upload(system, token, undecodable())  # a real `ftyp` box: it passes the door
    assert response.status_code == 202, response.text
    failed = ended(system, token, response.json()["id"])
    assert failed["status"] == "FAILED" and "not a readable video" in failed["metadata"]["error"]
    assert (failed["url"], failed["thumbnail_url"]) == (None, None)
    settled(system, token, user_id, 10)  # released, never charged
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]


def test_a_cancelled_video_is_released_and_stays_cancelled(system: System) -> None:
    token, user_id = welcomed(system)
    response = upload(system, token, clip(8.0, (640, 360)))
    assert response.status_code == 202, response.text
    video_id = response.json()["id"]
    cancel = f"{system.url('media')}/api/videos/{video_id}/cancel"
    answer = httpx.post(cancel, headers=bearer(token), timeout=30)
    if response.json()["status"] == "COMPLETED" or answer.status_code == 409:
        raise AssertionError("the worker finished an 8 s clip before the cancel: make the clip longer")
    assert (answer.status_code, answer.json()["status"]) == (200, "CANCELLED"), answer.text
    again = httpx.post(cancel, headers=bearer(token), timeout=30)
    assert (again.status_code, again.json()["status"]) == (200, "CANCELLED")  # a retry answers the same
    assert httpx.post(cancel, headers=bearer(welcomed(system)[0]), timeout=30).status_code == 404
    settled(system, token, user_id, 10)
    # However far the worker got, it drops its work: the record stays cancelled, with no file.
    wait_until(lambda: _idle(system), timeout=60, what="the worker done with the job")
    final = get(system, token, f"/api/videos/{video_id}").json()
    assert (final["status"], final["url"]) == ("CANCELLED", None)
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]

    made = upload(system, token, clip(0.4)).json()["id"]
    assert ended(system, token, made)["status"] == "COMPLETED"
    late = httpx.post(f"{system.url('media')}/api/videos/{made}/cancel", headers=bearer(token), timeout=30)
    assert late.status_code == 409 and "COMPLETED" in late.json()["detail"]
    settled(system, token, user_id, 8)


def _idle(system: System) -> bool:
    state = consumer_state(system, "MEDIAWORK", "media-worker")
    return state["ack_pending"] == state["pending"] == 0
