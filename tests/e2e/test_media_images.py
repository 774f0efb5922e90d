"""Image uploads end to end: a Pillow image over HTTP, the ledger's hold, a worker's processing, the
capture, and the files; a refusal keeps nothing; what is not an image costs nothing."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, parked_messages, welcomed


def image(fmt: str = "PNG", size: tuple[int, int] = (640, 480), **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 120, 220)).save(out, format=fmt, **save)
    return out.getvalue()


def upload(system: System, token: str, data: bytes, key: str | None = None, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{system.url('media')}/api/images",
        files={"file": ("picture.bin", data, "application/octet-stream")},
        data=fields,
        headers={**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())},
        timeout=30,
    )


def get(system: System, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{system.url('media')}{path}", headers=bearer(token), timeout=30)


def test_an_uploaded_image_is_held_processed_captured_and_served(system: System) -> None:
    token, user_id = welcomed(system)
    exif = Image.Exif()
    exif[0x0112] = 6  # to be shown turned a quarter clockwise
    response = upload(system, token, image("JPEG", (400, 200), exif=exif.tobytes()), title="Sea", description="blue")
    assert response.status_code == 202, response.text
    record = response.json()
    assert (record["type"], record["title"], record["description"]) == ("UPLOADED", "Sea", "blue")
    assert record["status"] in ("PROCESSING", "COMPLETED")  # a worker may be done before the answer leaves

    wait_until(lambda: get(system, token, f"/api/images/{record['id']}").json()["status"] == "COMPLETED",
               timeout=30, what="the worker's processing")  # fmt: skip
    done = get(system, token, f"/api/images/{record['id']}").json()
    assert (done["metadata"]["format"], done["metadata"]["width"], done["metadata"]["height"]) == ("JPEG", 200, 400)
    served = get(system, token, done["url"])
    assert served.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(served.content)) as original:
        assert (original.format, original.size) == ("JPEG", (200, 400))
    with Image.open(io.BytesIO(get(system, token, done["thumbnail_url"]).content)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("PNG", (128, 256))
    assert [i["id"] for i in get(system, token, "/api/images").json()["images"]] == [record["id"]]

    account = f"{system.url('ledger')}/api/accounts/{user_id}"
    wait_until(lambda: httpx.get(account, headers=bearer(token)).json()["balance"] == 9, timeout=20,
               what="the hold captured")  # fmt: skip
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -1), ("BONUS", 10)]
    assert upload(system, token, image(), key="same").status_code == 202
    other_user, _ = welcomed(system)
    assert get(system, other_user, f"/api/images/{record['id']}").status_code == 404  # only one's own


def test_without_credits_an_upload_is_refused_and_nothing_is_kept(system: System) -> None:
    token, user_id = welcomed(system)
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 10, "description": "all of it"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert spent.status_code == 201
    refused = upload(system, token, image())
    assert refused.status_code == 402, refused.text
    assert (refused.json()["balance"], refused.json()["available"], refused.json()["amount"]) == (0, 0, 1)
    assert get(system, token, "/api/images").json()["images"] == []
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -10), ("BONUS", 10)]


def test_ten_uploads_at_once_on_eight_credits_accept_exactly_eight(system: System) -> None:
    token, user_id = welcomed(system)
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 2},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert spent.status_code == 201, spent.text
    # Ten: as many as one user may ask at once (the media-jobs burst, tests/e2e/test_abuse_limits.py).
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: upload(system, token, image(size=(32 + i, 32))), range(10)))
    assert sorted(a.status_code for a in answers) == [202] * 8 + [402] * 2
    accepted = [a.json()["id"] for a in answers if a.status_code == 202]
    wait_until(
        lambda: all(get(system, token, f"/api/images/{i}").json()["status"] == "COMPLETED" for i in accepted),
        timeout=60,
        what="eight uploads processed",
    )
    # COMPLETED is media's record; the ledger captures a moment later, on media.job.completed.
    wait_until(lambda: _balance(system, token, user_id) == 0, timeout=20, what="eight captures")
    view = assert_converged(system, token, user_id)
    assert view["balance"] == 0 and sum(1 for e in view["entries"] if e["type"] == "USAGE") == 9


def test_what_is_not_an_image_costs_nothing(system: System) -> None:
    token, user_id = welcomed(system)
    for data in (b"", b"%PDF-1.7 not an image", image("BMP"), image("PNG")[:100]):
        response = upload(system, token, data)
        assert response.status_code == 400, response.text
    assert get(system, token, "/api/images").json()["images"] == []
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("BONUS", 10)]


def completed(system: System, token: str, image_id: str) -> dict[str, Any]:
    wait_until(lambda: get(system, token, f"/api/images/{image_id}").json()["status"] in ("COMPLETED", "FAILED"),
               timeout=30, what=f"image {image_id} made")  # fmt: skip
    return dict(get(system, token, f"/api/images/{image_id}").json())


def command(system: System, token: str, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": key or str(uuid.uuid4())}
    return httpx.post(f"{system.url('media')}{path}", json=body, headers=headers, timeout=30)


def test_a_transform_makes_a_cropped_resized_rotated_copy_in_another_format(system: System) -> None:
    token, user_id = welcomed(system)
    source = upload(system, token, image("PNG", (300, 200))).json()["id"]
    completed(system, token, source)
    spec = {"crop": {"left": 50, "top": 0, "width": 200, "height": 100}, "resize": {"width": 100, "height": 50},
            "rotate": 90, "flip": "horizontal", "format": "webp", "quality": 80}  # fmt: skip
    answer = command(system, token, f"/api/images/{source}/transform", spec)
    assert answer.status_code == 202, answer.text
    made = completed(system, token, answer.json()["id"])
    assert (made["status"], made["type"], made["metadata"]["source_id"]) == ("COMPLETED", "TRANSFORMED", source)
    with Image.open(io.BytesIO(get(system, token, made["url"]).content)) as result:
        assert (result.format, result.size) == ("WEBP", (50, 100))
    outside = command(system, token, f"/api/images/{source}/transform",
                      {"crop": {"left": 250, "top": 0, "width": 100, "height": 100}})  # fmt: skip
    assert outside.status_code == 202
    assert completed(system, token, outside.json()["id"])["status"] == "FAILED"  # released, not charged
    assert command(system, token, f"/api/images/{source}/transform", {}).status_code == 422
    wait_until(lambda: _available(system, token, user_id) == 8, timeout=20, what="two captures, one release")
    view = assert_converged(system, token, user_id)
    assert [(e["type"], e["amount"]) for e in view["entries"]] == [("USAGE", -1), ("USAGE", -1), ("BONUS", 10)]


def test_generation_is_deterministic_and_costs_three(system: System) -> None:
    token, user_id = welcomed(system)
    body = {"prompt": "a calm blue sea at dusk", "seed": 7, "width": 320, "height": 200}
    first, second = (command(system, token, "/api/images/generate", body) for _ in range(2))
    assert (first.status_code, second.status_code) == (202, 202)
    a, b = (completed(system, token, r.json()["id"]) for r in (first, second))
    assert (a["type"], a["metadata"]["width"], a["metadata"]["height"]) == ("GENERATED", 320, 200)
    pixels = [get(system, token, m["url"]).content for m in (a, b)]
    assert pixels[0] == pixels[1]  # same prompt, seed and size: the same image
    other = completed(system, token, command(system, token, "/api/images/generate", {**body, "seed": 8}).json()["id"])
    assert get(system, token, other["url"]).content != pixels[0]
    refused = command(system, token, "/api/images/generate", body)  # 1 credit left: 3 asked
    assert refused.status_code == 402 and refused.json()["available"] == 1
    wait_until(lambda: _balance(system, token, user_id) == 1, timeout=20, what="three captures")
    assert_converged(system, token, user_id)


def _balance(system: System, token: str, user_id: str) -> int:
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    return int(httpx.get(url, headers=bearer(token), timeout=30).json()["balance"])


def test_a_refused_transform_keeps_its_source_image(system: System) -> None:
    token, user_id = welcomed(system)
    source = upload(system, token, image("PNG", (80, 60))).json()["id"]
    assert completed(system, token, source)["status"] == "COMPLETED"
    spent = httpx.post(
        f"{system.url('ledger')}/api/accounts/{user_id}/debits", json={"amount": 9, "description": "the rest"},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=30,
    )  # fmt: skip
    assert spent.status_code == 201
    refused = command(system, token, f"/api/images/{source}/transform", {"rotate": 90})
    assert refused.status_code == 402, refused.text
    kept = get(system, token, f"/api/images/{source}/file")  # the refusal removed only what it had asked for
    assert kept.status_code == 200 and kept.headers["content-type"] == "image/png"
    assert [i["id"] for i in get(system, token, "/api/images").json()["images"]] == [source]


def test_an_extension_grows_the_canvas_and_costs_two(system: System) -> None:
    token, user_id = welcomed(system)
    source = upload(system, token, image("PNG", (200, 100))).json()["id"]
    completed(system, token, source)
    answer = command(system, token, f"/api/images/{source}/extend", {"left": 20, "right": 20, "top": 10})
    assert answer.status_code == 202, answer.text
    made = completed(system, token, answer.json()["id"])
    assert (made["status"], made["type"], made["metadata"]["width"], made["metadata"]["height"]) == (
        "COMPLETED", "EXTENDED", 240, 110,
    )  # fmt: skip
    with Image.open(io.BytesIO(get(system, token, made["url"]).content)) as result:
        corner = result.convert("RGB").getpixel((0, 0))
    assert result.size == (240, 110) and isinstance(corner, tuple)
    assert all(abs(a - b) <= 8 for a, b in zip(corner, (20, 120, 220), strict=True))  # the edge colour, carried on
    assert command(system, token, f"/api/images/{source}/extend", {"left": 0}).status_code == 422
    wait_until(lambda: _balance(system, token, user_id) == 7, timeout=20, what="1 + 2 captured")
    assert_converged(system, token, user_id)


def test_a_job_that_fails_every_attempt_ends_failed_and_its_hold_released(system: System) -> None:
    token, user_id = welcomed(system)
    source = upload(system, token, image("PNG", (64, 64))).json()["id"]
    completed(system, token, source)
    # The source's file vanishes from storage: each attempt of a transform of it raises.
    (Path(system.env["DATA_DIR"]) / "media" / user_id / source / "original.png").unlink()
    answer = command(system, token, f"/api/images/{source}/transform", {"rotate": 90})
    assert answer.status_code == 202, answer.text
    failed = completed(system, token, answer.json()["id"])  # after the last of MAX_DELIVER attempts
    assert failed["status"] == "FAILED" and "FileNotFoundError" in failed["metadata"]["error"]
    wait_until(lambda: _available(system, token, user_id) == 9, timeout=20, what="the transform's hold released")
    account = httpx.get(f"{system.url('ledger')}/api/accounts/{user_id}", headers=bearer(token)).json()
    assert (account["balance"], account["reserved"]) == (9, 0)
    assert "media-worker" not in parked_messages(system)  # settled, not left for an operator


def _available(system: System, token: str, user_id: str) -> int:
    url = f"{system.url('ledger')}/api/accounts/{user_id}"
    return int(httpx.get(url, headers=bearer(token), timeout=30).json()["available"])


def test_background_removal_cuts_the_subject_out_with_either_segmenter(system: System) -> None:
    token, user_id = welcomed(system)
    picture = Image.new("RGB", (320, 240), (235, 235, 240))
    ImageDraw.Draw(picture).ellipse((100, 60, 220, 180), fill=(160, 40, 30))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=95)
    source = upload(system, token, out.getvalue()).json()["id"]
    completed(system, token, source)
    path = f"/api/images/{source}/remove-background"
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    by_model = httpx.post(f"{system.url('media')}{path}", headers=headers, timeout=30)  # no body: the model
    by_grabcut = command(system, token, path, {"method": "grabcut"})
    assert (by_model.status_code, by_grabcut.status_code) == (202, 202), by_model.text
    for answer, method in ((by_model, "u2netp"), (by_grabcut, "grabcut")):
        made = completed(system, token, answer.json()["id"])
        assert (made["status"], made["type"], made["metadata"]["method"]) == ("COMPLETED", "BACKGROUND_REMOVED", method)
        with Image.open(io.BytesIO(get(system, token, made["url"]).content)) as result:
            assert (result.format, result.mode, result.size) == ("PNG", "RGBA", (320, 240))
            corner, centre = result.getpixel((3, 3)), result.getpixel((160, 120))
        assert isinstance(corner, tuple) and isinstance(centre, tuple)
        assert corner[3] == 0 and centre[3] >= 250  # background gone, subject kept
    assert command(system, token, path, {"method": "magic"}).status_code == 422
    wait_until(lambda: _balance(system, token, user_id) == 7, timeout=20, what="1 + 1 + 1 captured")
    view = assert_converged(system, token, user_id)
    assert [e["amount"] for e in view["entries"]] == [-1, -1, -1, 10]


def test_ten_generations_at_once_on_ten_credits_accept_exactly_three(system: System) -> None:
    token, user_id = welcomed(system)

    def ask(i: int) -> httpx.Response:
        return command(system, token, "/api/images/generate", {"prompt": f"storm {i}", "width": 64, "height": 64})

    # Ten: as many as one user may ask at once (the media-jobs burst, tests/e2e/test_abuse_limits.py).
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(ask, range(10)))
    assert sorted(a.status_code for a in answers) == [202] * 3 + [402] * 7
    assert {a.json()["available"] for a in answers if a.status_code == 402} == {1}  # refused only once 9 were held
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    assert {completed(system, token, i)["status"] for i in accepted} == {"COMPLETED"}
    assert {i["id"] for i in get(system, token, "/api/images").json()["images"]} == accepted  # refusals kept nothing
    wait_until(lambda: _balance(system, token, user_id) == 1, timeout=20, what="three captures of 3")
    view = assert_converged(system, token, user_id)
    assert [e["amount"] for e in view["entries"]] == [-3, -3, -3, 10]
