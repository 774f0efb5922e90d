"""Events published by the identity service on the IDENTITY stream."""

from __future__ import annotations

from shared.contracts.envelope import EventData
from shared.inputs import LongText, MediumText, ShortText


class UserRegistered(EventData):
    type = "identity.user.registered"
    user_id: ShortText
    clerk_id: ShortText
    email: MediumText
    first_name: ShortText | None
    last_name: ShortText | None
    avatar: LongText | None


class UserUpdated(EventData):
    type = "identity.user.updated"
    user_id: ShortText
    clerk_id: ShortText
    email: MediumText
    first_name: ShortText | None
    last_name: ShortText | None
    avatar: LongText | None


class UserDeactivated(EventData):
    type = "identity.user.deactivated"
    user_id: ShortText
    reason: MediumText | None = None


class UserReactivated(EventData):
    type = "identity.user.reactivated"
    user_id: ShortText
