"""Clerk webhook payloads → identity commands. Parsing only: the signature is checked before this runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.identity.domain import ROLES, Profile

HANDLED = ("user.created", "user.updated", "user.deleted")


class ClerkPayloadError(ValueError):
    pass


@dataclass(frozen=True)
class ClerkEvent:
    type: str
    clerk_id: str | None = None
    profile: Profile | None = None  # for user.created / user.updated


def parse_event(payload: Any) -> ClerkEvent:
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ClerkPayloadError("a Clerk event is an object with a type")
    kind = payload["type"]
    if kind not in HANDLED:
        return ClerkEvent(type=kind)
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ClerkPayloadError(f"{kind} carries no user id")
    if kind == "user.deleted":
        return ClerkEvent(type=kind, clerk_id=data["id"])
    return ClerkEvent(type=kind, clerk_id=data["id"], profile=_profile(data))


def _profile(data: dict[str, Any]) -> Profile:
    email = _primary_email(data)
    if not email:
        raise ClerkPayloadError("the user has no email address")
    metadata = data.get("public_metadata")
    role = metadata.get("role") if isinstance(metadata, dict) else None
    return Profile(
        clerk_id=data["id"],
        email=email,
        first_name=_text(data.get("first_name")),
        last_name=_text(data.get("last_name")),
        avatar=_text(data.get("image_url")),
        role=role if role in ROLES else "user",
    )


def _primary_email(data: dict[str, Any]) -> str | None:
    addresses = [a for a in data.get("email_addresses") or [] if isinstance(a, dict)]
    primary = data.get("primary_email_address_id")
    for address in addresses:
        if address.get("id") == primary and isinstance(address.get("email_address"), str):
            return address["email_address"]
    # No primary marked: the first address is what Clerk shows the user first.
    first = addresses[0].get("email_address") if addresses else None
    return first if isinstance(first, str) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
