"""Users as identity knows them; no framework, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.contracts.identity import UserRegistered


@dataclass(frozen=True)
class Profile:
    """What a sign-in (token claims) or a Clerk webhook tells us about a user."""

    clerk_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    avatar: str | None = None


@dataclass(frozen=True)
class User:
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

    def registered(self) -> UserRegistered:
        return UserRegistered(
            user_id=self.id,
            clerk_id=self.clerk_id,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            avatar=self.avatar,
        )
