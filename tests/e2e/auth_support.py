"""Helpers for the identity and auth end-to-end tests: tokens signed with the running system's own
keys (read from its DATA_DIR, as an attacker with a stolen key could), Svix-signed Clerk webhooks,
and counts of what reached the streams and the outbox."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from nats.js.errors import NotFoundError
from svix.webhooks import Webhook

from shared import keys
from shared.service_tokens import DEV_KEY_FILE, ServiceKey
from shared.settings import DEV_AUTHORIZED_PARTY, DEV_ISSUER
from tests.conftest import System


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_clerk_id() -> str:
    return f"user_{uuid.uuid4().hex[:12]}"


def signed_in(system: System, clerk_id: str | None = None, **token_args: Any) -> tuple[str, str]:
    """Sign a new user in through identity: (token, user id)."""
    token = system.token(clerk_id or new_clerk_id(), **token_args)
    response = httpx.post(f"{system.url('identity')}/api/user/sync", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    return token, response.json()["user"]["id"]


def admin_token(system: System) -> str:
    return system.token(f"admin_{uuid.uuid4().hex[:8]}", role="admin")


def dev_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user_forged",
        "email": "forged@example.com",
        "iss": DEV_ISSUER,
        "azp": DEV_AUTHORIZED_PARTY,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class DevKey:
    """The dev Clerk stand-in's private key, so a test can make tokens wrong in exactly one way."""

    def __init__(self, system: System) -> None:
        self.private = keys.private_from_pem((Path(system.env["DATA_DIR"]) / "dev-jwt-key.pem").read_bytes())
        self.kid = keys.key_id(self.private.public_key(), "dev")

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


def service_key(system: System) -> ServiceKey:
    return ServiceKey.of_private(keys.load_or_create(Path(system.env["DATA_DIR"]) / DEV_KEY_FILE))


def clerk_user(clerk_id: str, email: str, **fields: Any) -> dict[str, Any]:
    """The `data` of a Clerk user.created / user.updated event."""
    return {
        "id": clerk_id,
        "object": "user",
        "email_addresses": [{"id": "idn_1", "email_address": email}],
        "primary_email_address_id": "idn_1",
        "first_name": fields.get("first_name"),
        "last_name": fields.get("last_name"),
        "image_url": fields.get("image_url"),
        "public_metadata": fields.get("public_metadata", {}),
    }


def clerk_delivery(
    secret: str, kind: str, data: dict[str, Any], *, svix_id: str | None = None, at: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery as Svix sends it: body and headers, signed with `secret`."""
    svix_id = svix_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    body = json.dumps({"type": kind, "object": "event", "data": data})
    signature = Webhook(secret).sign(svix_id, at, body)
    headers = {
        "svix-id": svix_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


def outbox_events(system: System, subject: str, user_id: str) -> int:
    """Events identity committed for `user_id` on `subject`: what will reach the stream, exactly."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM identity.outbox WHERE subject = %s"
            " AND convert_from(payload, 'UTF8')::jsonb ->> 'user_id' = %s",
            (subject, user_id),
        ).fetchone()
    return int(row[0]) if row else 0


def stream_events(system: System, stream: str, subject: str, user_id: str) -> list[dict[str, Any]]:
    """Envelopes on `stream` with `subject` for `user_id`, read straight from JetStream."""

    async def read() -> list[dict[str, Any]]:
        nc = await system.connect("ops")
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            found = []
            seq = info.state.first_seq
            while info.state.messages and seq <= info.state.last_seq:
                try:
                    msg = await js.get_msg(stream, seq=seq, next=True, subject=subject)
                except NotFoundError:  # no further message on the subject
                    break
                envelope = json.loads(msg.data or b"{}")
                if envelope.get("user_id") == user_id:
                    found.append(envelope)
                seq = (msg.seq or seq) + 1
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def new_org_id() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


def clerk_org(org_id: str, name: str, slug: str | None = None, *, updated_at: int = 1) -> dict[str, Any]:
    """The `data` of a Clerk organization.created / .updated event (times in ms, as Clerk sends them)."""
    return {"id": org_id, "object": "organization", "name": name, "slug": slug, "created_at": 1,
            "updated_at": updated_at, "members_count": 1, "public_metadata": {}}  # fmt: skip


def clerk_membership(
    org: dict[str, Any], clerk_id: str, role: str = "org:member", *, membership_id: str | None = None,
    updated_at: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """The `data` of a Clerk organizationMembership.* event."""
    return {
        "id": membership_id or f"orgmem_{uuid.uuid4().hex[:12]}",
        "object": "organization_membership",
        "role": role,
        "organization": org,
        "public_user_data": {"user_id": clerk_id, "identifier": f"{clerk_id}@example.com", "first_name": None},
        "created_at": 1,
        "updated_at": updated_at,
    }


def org_rows(system: System, org_id: str) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
    """What identity stores of an organization and its memberships, without the times of storing them."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        org = conn.execute(
            "SELECT id, name, slug, deleted_at IS NOT NULL FROM identity.organizations WHERE id = %s", (org_id,)
        ).fetchone()
        members = conn.execute(
            "SELECT user_id::text, clerk_user_id, role, removed_at IS NOT NULL FROM identity.memberships"
            " WHERE org_id = %s ORDER BY user_id",
            (org_id,),
        ).fetchall()
    return org, members


def org_outbox(system: System, org_id: str) -> list[str]:
    """The subjects identity committed about an organization, in order."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT subject FROM identity.outbox WHERE convert_from(payload, 'UTF8')::jsonb -> 'data' ->> 'org_id' = %s"
            " ORDER BY position",
            (org_id,),
        ).fetchall()
    return [subject for (subject,) in rows]
