"""Events published by the identity service on the IDENTITY stream."""

from __future__ import annotations

from shared.contracts.envelope import EventData


class UserRegistered(EventData):
    type = "identity.user.registered"
    user_id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None


class UserUpdated(EventData):
    type = "identity.user.updated"
    user_id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None


class UserDeactivated(EventData):
    type = "identity.user.deactivated"
    user_id: str
    reason: str | None = None


class UserReactivated(EventData):
    type = "identity.user.reactivated"
    user_id: str
