"""Users as identity knows them; no framework, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.contracts.identity import UserDeactivated, UserErased, UserReactivated, UserRegistered, UserUpdated

ROLES = ("user", "admin")


@dataclass(frozen=True)
class Profile:
    """What a sign-in (token claims) or a Clerk webhook tells us about a user."""

    clerk_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    avatar: str | None = None
    role: str = "user"


@dataclass(frozen=True)
class User:
    """The stored user. `role` records what Clerk said last; authorisation reads the token, not this."""

    id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    avatar: str | None
    is_active: bool
    role: str
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None  # forgotten: no profile any more, never active again

    def registered(self) -> UserRegistered:
        return UserRegistered(**self._profile())

    def updated(self) -> UserUpdated:
        return UserUpdated(**self._profile())

    def _profile(self) -> dict[str, str | None]:
        """What a registration and an update announce of the user."""
        return {
            "user_id": self.id, "clerk_id": self.clerk_id, "email": self.email, "first_name": self.first_name,
            "last_name": self.last_name, "avatar": self.avatar,
        }  # fmt: skip

    def deactivated(self, reason: str | None) -> UserDeactivated:
        return UserDeactivated(user_id=self.id, reason=reason)

    def reactivated(self) -> UserReactivated:
        return UserReactivated(user_id=self.id)

    def erased(self) -> UserErased:
        return UserErased(user_id=self.id)


class UserErasedError(Exception):
    """A forgotten user cannot be active again."""


class UserNotFoundError(LookupError):
    pass


class UserDeactivatedError(PermissionError):
    pass


class SelfDeactivationError(ValueError):
    """An admin may not lock themselves out."""
