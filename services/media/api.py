"""Media's HTTP API: the price list, the image operations and video processing (each paid through a
hold), a user's own images and videos and their files."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from services.media.application import MediaLibrary
from services.media.domain import (
    CancelVideo,
    Extend,
    Generate,
    InsufficientCreditsError,
    Media,
    MediaNotFoundError,
    NotProcessingError,
    NotReadyError,
    Paid,
    ProcessVideo,
    RemoveBackground,
    Transform,
    UnusableInputError,
    Upload,
    UploadsBusyError,
    WithFile,
)
from services.media.images import MAX_PIXELS, MAX_UPLOAD_BYTES, TooManyPixelsError
from services.media.uploads import MalformedUploadError, UploadTooLargeError
from services.media.video import MAX_VIDEO_BYTES
from shared.auth import Principal, SignedInUser
from shared.credits import OPERATION_COSTS
from shared.guard import GuardedRoute, body_limit
from shared.idempotency import IdempotencyConflictError
from shared.inputs import TEXT_PATTERN, LongText, ShortText, Whole
from shared.limits import rate_limited
from shared.paging import After, newest_first
from shared.params import IdempotencyKey, PageCursor
from shared.problems import Problem, responses

router = APIRouter(tags=["media"], route_class=GuardedRoute)
# Multipart framing and the two text fields on top of the file itself.
UPLOAD_FRAMING = 64 * 1024


async def get_library(request: Request) -> MediaLibrary:
    return request.app.state.library


LibraryDep = Annotated[MediaLibrary, Depends(get_library)]


class MediaPublic(BaseModel):
    KIND: ClassVar[str]  # image | video: its routes are under /api/<KIND>s

    id: str
    user_id: str
    title: str | None
    description: str | None
    status: str
    url: str | None  # the file, once it is made
    thumbnail_url: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, media: Media) -> Self:
        return cls(**cls.fields(media))

    @classmethod
    def fields(cls, media: Media) -> dict[str, Any]:
        file = f"/api/{cls.KIND}s/{media.id}/file"
        return dict(
            id=media.id, user_id=media.user_id, title=media.title, description=media.description,
            status=str(media.status), url=file if media.file_key else None,
            thumbnail_url=f"{file}?thumbnail=true" if media.thumbnail_key else None,
            metadata=media.metadata, created_at=media.created_at, updated_at=media.updated_at,
        )  # fmt: skip


class ImagePublic(MediaPublic):
    KIND = "image"

    type: str  # UPLOADED, GENERATED, TRANSFORMED, BACKGROUND_REMOVED or EXTENDED

    @classmethod
    def of(cls, media: Media) -> Self:
        return cls(type=media.type, **cls.fields(media))


class VideoPublic(MediaPublic):
    """status: PROCESSING, COMPLETED, FAILED or CANCELLED."""

    KIND = "video"


class ImagePage(BaseModel):
    images: list[ImagePublic]
    next_cursor: str | None


class VideoPage(BaseModel):
    videos: list[VideoPublic]
    next_cursor: str | None


P = TypeVar("P", bound=MediaPublic)
ARTICLED = {"image": "an image", "video": "a video"}


# What a paid operation on one of the user's images answers: 202 with the new record, or why not.
def payer(principal: Principal) -> str | None:
    """The account a credit-costing request spends: the token's active organization's (as its member, whose
    monthly limit applies), else the user's own (None)."""
    return principal.org.account_id if principal.org is not None else None


# Every request that makes a job takes from the user's media-jobs bucket first.
A_JOB = [rate_limited("media-jobs")]
ON_AN_IMAGE: dict[str, Any] = {
    "response_model": ImagePublic, "status_code": 202, "responses": responses(402, 404, 409, 422, 429),
    "dependencies": A_JOB,
}  # fmt: skip


class UploadFields(BaseModel):
    """The text parts beside an upload's file (others are ignored, as a form's would be)."""

    title: ShortText | None = None
    description: LongText | None = None


def _multipart(file_doc: str, limit: int) -> dict[str, Any]:
    """The OpenAPI of an upload's body (read by the route itself, as it streams: FastAPI never sees it)."""
    texts = UploadFields.model_json_schema()["properties"]
    properties = {
        "file": {"type": "string", "format": "binary", "description": file_doc},
        **{name: next(s for s in texts[name]["anyOf"] if s.get("type") == "string") for name in texts},
    }
    schema = {"type": "object", "required": ["file"], "properties": properties}
    body = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    return {"requestBody": body, **body_limit(limit)}


def _upload(
    command: type[WithFile], public: type[MediaPublic], *, operation: str, name: str, limit: int, file_doc: str,
    doc: str,
) -> None:  # fmt: skip
    """POST /api/<kind>s, the same for images and videos: a file (multipart, with a title and a description)
    kept once its cost is held. Before a byte of the body is read: the user's limit, room in this process
    (503) and their available credit (402); while it streams: its size (413)."""
    body_limit_of_kind = limit + UPLOAD_FRAMING

    @router.post(f"/api/{public.KIND}s", name=name, description=inspect.cleandoc(doc), response_model=public,
                 status_code=202, responses=responses(400, 402, 409, 413, 429, 503),
                 openapi_extra=_multipart(file_doc, body_limit_of_kind), dependencies=A_JOB)  # fmt: skip
    async def upload(
        request: Request, principal: SignedInUser, library: LibraryDep, key: IdempotencyKey
    ) -> MediaPublic:
        with _refusals(public.KIND):
            async with library.receiving(principal.user_id, operation, payer(principal)) as receive:
                file, fields = await receive(request.stream(), request.headers.get("content-type", ""), limit)
            try:
                texts = UploadFields.model_validate(fields)
            except ValidationError as exc:
                await library.discard(file)
                errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                raise RequestValidationError(errors) from exc
            asked = command(user_id=principal.user_id, account_id=payer(principal), key=key, file=file,
                            title=texts.title, description=texts.description)  # fmt: skip
            return public.of(await library.handle(asked))


def _own_reads(
    public: type[MediaPublic], page: type[BaseModel], *, listed: str, file: str, file_types: dict[str, Any]
) -> None:
    """The reads of the token's user's own records of one kind, the same for images and videos: GET
    /api/<kind>s (newest first), /api/<kind>s/{<kind>_id} and /api/<kind>s/{<kind>_id}/file, named
    `my_<kind>s`, `my_<kind>` and `my_<kind>_file` (a route's name makes its OpenAPI operation id)."""
    kind = public.KIND
    records, path, id_name = f"{kind}s", f"/api/{kind}s/{{{kind}_id:uuid}}", f"{kind}_id"

    @router.get(f"/api/{records}", name=f"my_{records}", description=listed, response_model=page,
                responses=responses(400))  # fmt: skip
    async def my_records(
        principal: SignedInUser,
        library: LibraryDep,
        cursor: PageCursor = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> BaseModel:
        async def fetch(after: After, n: int) -> list[Media]:
            return await library.page(principal.user_id, kind, after, n)

        found, next_cursor = await newest_first(cursor, limit, fetch)
        return page.model_validate({records: [public.of(m) for m in found], "next_cursor": next_cursor})

    # The id's alias goes in its default, for the reason `file`'s description does in _upload.
    @router.get(path, name=f"my_{kind}", response_model=public, responses=responses(404))
    async def my_record(
        principal: SignedInUser, library: LibraryDep, media_id: uuid.UUID = Path(alias=id_name)
    ) -> MediaPublic:
        return public.of(await _mine(library, principal.user_id, media_id, kind))

    @router.get(f"{path}/file", name=f"my_{kind}_file", description=file,
                responses={**responses(404), 200: {"content": file_types}})  # fmt: skip
    async def my_file(
        principal: SignedInUser, library: LibraryDep, media_id: uuid.UUID = Path(alias=id_name), thumbnail: bool = False
    ) -> Response:
        return await _file(library, await _mine(library, principal.user_id, media_id, kind), thumbnail)


@router.get("/api/operations")
async def operations() -> dict[str, int]:
    """What each credit-costing operation costs."""
    return OPERATION_COSTS


_upload(
    Upload, ImagePublic, operation="image_upload", name="upload_image", limit=MAX_UPLOAD_BYTES,
    file_doc="a PNG, JPEG, WebP or GIF image, at most 20 MB",
    doc="""Upload an image (1 credit, held until it is processed): 202 with the record while a worker makes
    the original and its thumbnail; 402 with the balance if the credit cannot be held (nothing is kept).""",
)  # fmt: skip


Pixels = Annotated[int, Field(strict=True, ge=1, le=8000), Whole]
Offset = Annotated[int, Field(strict=True, ge=0, le=8000), Whole]


class Size(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: Pixels
    height: Pixels


class Box(Size):
    left: Offset
    top: Offset


class TransformRequest(BaseModel):
    """At least one of these; applied in this order: crop, resize, rotate, flip, then format and quality."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    crop: Box | None = None
    resize: Size | None = None
    rotate: Annotated[int, Field(strict=True, ge=-360, le=360), Whole] | None = Field(
        default=None, description="degrees clockwise"
    )
    flip: Literal["horizontal", "vertical"] | None = None
    format: Literal["png", "jpeg", "webp"] | None = None
    quality: Annotated[int, Field(strict=True, ge=1, le=100), Whole] | None = None

    @model_validator(mode="after")
    def _something(self) -> TransformRequest:
        if not self.model_dump(exclude_none=True):
            raise ValueError("a transform needs at least one of crop, resize, rotate, flip, format, quality")
        return self


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=TEXT_PATTERN)]
    seed: Annotated[int, Field(strict=True, ge=0, le=2**31 - 1), Whole] = 0
    width: Annotated[int, Field(strict=True, ge=16, le=2048), Whole] = 512
    height: Annotated[int, Field(strict=True, ge=16, le=2048), Whole] = 512


async def _answer(library: MediaLibrary, command: Paid, public: type[P], media_id: uuid.UUID | None = None) -> P:
    """A credit-costing request's record, or the problem its refusal is (the same for every operation)."""
    with _refusals(public.KIND, media_id):
        return public.of(await library.handle(command))


@contextmanager
def _refusals(noun: str, media_id: uuid.UUID | None = None) -> Iterator[None]:
    """Why media does not do what it was asked, as problem details."""
    try:
        yield
    except TooManyPixelsError as exc:
        raise Problem(422, f"Too large: {exc}.", max_pixels=MAX_PIXELS) from exc
    except UnusableInputError as exc:
        raise Problem(400, f"Not {ARTICLED[noun]} this service takes: {exc}") from exc
    except MalformedUploadError as exc:
        raise Problem(400, f"Not an upload this endpoint takes: {exc}.") from exc
    except UploadTooLargeError as exc:
        raise Problem(413, str(exc)) from exc
    except UploadsBusyError as exc:
        raise Problem(503, f"Try again shortly: {exc}.", headers={"Retry-After": "1"}) from exc
    except MediaNotFoundError as exc:
        raise Problem(404, f"You have no {noun} {media_id}.") from exc
    except NotReadyError as exc:
        raise Problem(409, f"The image {media_id} is not made yet (or failed): there is nothing to work on.") from exc
    except IdempotencyConflictError as exc:
        raise Problem(409, "This Idempotency-Key was used for a different request.") from exc
    except InsufficientCreditsError as exc:
        job = exc.job
        refusal = job.refusal or {"account": "user", "reason": "credits"}
        if refusal["reason"] == "cap":
            detail = (f"{job.cost} credits asked: this account's monthly cap is {refusal['cap']},"
                      f" {refusal['used']} of it used or held this month.")  # fmt: skip
        elif refusal["reason"] == "limit":
            detail = (f"{job.cost} credits asked: your monthly limit in this organization is {refusal['limit']},"
                      f" {refusal['used']} of it used or held.")  # fmt: skip
        else:
            whose = "the organization's" if refusal["account"] == "org" else "your"
            detail = f"{job.cost} credits asked, {job.available} available in {whose} account."
        raise Problem(
            402, detail, balance=job.balance, available=job.available, amount=job.cost, **refusal
        ) from exc  # fmt: skip


@router.post("/api/images/{image_id:uuid}/transform", **ON_AN_IMAGE)
async def transform_image(
    image_id: uuid.UUID, body: TransformRequest, principal: SignedInUser, library: LibraryDep, key: IdempotencyKey
) -> ImagePublic:
    """A transformed copy of one of your images (1 credit): 202 with the new record while it is made."""
    spec = body.model_dump(exclude_none=True)
    if "format" in spec:
        spec["format"] = spec["format"].upper()
    transform = Transform(user_id=principal.user_id, account_id=payer(principal), key=key, image_id=str(image_id),
                          spec=spec)  # fmt: skip
    return await _answer(library, transform, ImagePublic, image_id)


class RemoveBackgroundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["u2netp", "grabcut"] = Field(
        default="u2netp",
        description="u2netp: the U²-Net-p segmentation model (one clear subject); grabcut: OpenCV, no model "
        "(plain backgrounds)",
    )


@router.post("/api/images/{image_id:uuid}/remove-background", **ON_AN_IMAGE)
async def remove_background(
    image_id: uuid.UUID, principal: SignedInUser, library: LibraryDep, key: IdempotencyKey,
    body: RemoveBackgroundRequest | None = None,
) -> ImagePublic:  # fmt: skip
    """A copy of one of your images with its background made transparent, as PNG (1 credit). The body
    is optional: the model is the default."""
    method = (body or RemoveBackgroundRequest()).method
    remove = RemoveBackground(user_id=principal.user_id, account_id=payer(principal), key=key, image_id=str(image_id),
                              method=method)  # fmt: skip
    return await _answer(library, remove, ImagePublic, image_id)


Border = Annotated[int, Field(strict=True, ge=0, le=1024), Whole]


class ExtendRequest(BaseModel):
    """Pixels to add on each side (at least one side more than 0); the result is at most 8000 px a side."""

    model_config = ConfigDict(extra="forbid")

    left: Border = 0
    right: Border = 0
    top: Border = 0
    bottom: Border = 0

    @model_validator(mode="after")
    def _something(self) -> ExtendRequest:
        if not any(self.model_dump().values()):
            raise ValueError("an extension adds at least one pixel on some side")
        return self


@router.post("/api/images/{image_id:uuid}/extend", **ON_AN_IMAGE)
async def extend_image(
    image_id: uuid.UUID, body: ExtendRequest, principal: SignedInUser, library: LibraryDep, key: IdempotencyKey
) -> ImagePublic:
    """One of your images on a bigger canvas (2 credits), the new border filled from its edges (OpenCV
    Telea inpainting: smooth backgrounds extend well, busy ones smear)."""
    extend = Extend(
        user_id=principal.user_id, account_id=payer(principal), key=key, image_id=str(image_id), left=body.left,
        right=body.right, top=body.top,
        bottom=body.bottom,
    )  # fmt: skip
    return await _answer(library, extend, ImagePublic, image_id)


@router.post(
    "/api/images/generate", response_model=ImagePublic, status_code=202, responses=responses(402, 409, 429),
    dependencies=A_JOB,
)  # fmt: skip
async def generate_image(
    body: GenerateRequest, principal: SignedInUser, library: LibraryDep, key: IdempotencyKey
) -> ImagePublic:
    """A picture from a prompt (3 credits): the same prompt, seed and size always give the same pixels."""
    generate = Generate(
        user_id=principal.user_id,
        account_id=payer(principal),
        key=key,
        prompt=body.prompt,
        seed=body.seed,
        width=body.width,
        height=body.height,
    )
    return await _answer(library, generate, ImagePublic)


_own_reads(
    ImagePublic, ImagePage, listed="The token's user's images, newest first.",
    file="The image's file (or its PNG thumbnail), once it is made.", file_types={"image/*": {}},
)  # fmt: skip


_upload(
    ProcessVideo, VideoPublic, operation="video_processing", name="upload_video", limit=MAX_VIDEO_BYTES,
    file_doc="a video (MP4/MOV, WebM/MKV, AVI, MPEG-TS or Ogg), at most 200 MB",
    doc="""Upload a video to be processed (2 credits, held until it is done): a worker probes it, transcodes
    it to H.264 MP4 and makes a thumbnail. 202 with the record while it works; 402 with the balance if
    the credits cannot be held (nothing is kept). A file that turns out not to decode ends FAILED, and
    its hold is released.""",
)  # fmt: skip


_own_reads(
    VideoPublic, VideoPage, listed="The token's user's videos, newest first.",
    file="The processed video (H.264 MP4) or its PNG thumbnail, once it is made.",
    file_types={"video/mp4": {}, "image/png": {}},
)  # fmt: skip


@router.post("/api/videos/{video_id:uuid}/cancel", response_model=VideoPublic, responses=responses(404, 409))
async def cancel_video(video_id: uuid.UUID, principal: SignedInUser, library: LibraryDep) -> VideoPublic:
    """Stop processing a video: it ends CANCELLED and its held credits are released (never charged).
    Cancelling it again answers the same; a video that is already made or failed is a 409."""
    try:
        return VideoPublic.of(await library.handle(CancelVideo(user_id=principal.user_id, video_id=str(video_id))))
    except MediaNotFoundError as exc:
        raise Problem(404, f"You have no video {video_id}.") from exc
    except NotProcessingError as exc:
        raise Problem(409, f"The video {video_id} is {exc.media.status}: there is nothing to cancel.") from exc


async def _mine(library: MediaLibrary, user_id: str, media_id: uuid.UUID, kind: str) -> Media:
    try:
        media = await library.get(user_id, str(media_id))
    except MediaNotFoundError:
        media = None
    if media is None or media.kind != kind:
        raise Problem(404, f"You have no {kind} {media_id}.")
    return media


async def _file(library: MediaLibrary, media: Media, thumbnail: bool) -> Response:
    key = media.thumbnail_key if thumbnail else media.file_key
    if key is None:
        raise Problem(404, f"The {media.kind} {media.id} has no file yet ({media.status}).")
    data = await asyncio.to_thread(library.storage.get, key)
    media_type = "image/png" if thumbnail else str(media.metadata.get("media_type", "application/octet-stream"))
    return Response(data, media_type=media_type)
