"""Events published by the identity service on the IDENTITY stream."""

from __future__ import annotations

from shared.contracts.envelope import EventData
from shared.inputs import LongText, MediumText, ShortText


class _Profile(EventData):
    user_id: ShortText
    clerk_id: ShortText
    email: MediumText
    first_name: ShortText | None
    last_name: ShortText | None
    avatar: LongText | None


class UserRegistered(_Profile):
    type = "identity.user.registered"


class UserUpdated(_Profile):
    type = "identity.user.updated"


class UserDeactivated(EventData):
    type = "identity.user.deactivated"
    user_id: ShortText
    reason: MediumText | None = None


class UserReactivated(EventData):
    type = "identity.user.reactivated"
    user_id: ShortText


class UserErased(EventData):
    """Forget the person (GDPR Art. 17): every service drops what it holds of them but the financial
    record, which stays under the pseudonymous user id. Identity has deactivated them first."""

    type = "identity.user.erased"
    user_id: ShortText
