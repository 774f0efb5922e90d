"""The event envelope: the one shape that crosses a service boundary."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from shared.inputs import ShortText

# Namespace for every id this system derives deterministically (user ids, ledger event ids, ...).
NAMESPACE = uuid.UUID("6f1d7e0a-4c1b-5a8e-9d2c-3b7f0e5a1c42")


def derive_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts))


class EventData(BaseModel):
    """Base of every typed event body; subclasses name their subject in `type`."""

    # Unknown fields are ignored so an older consumer reads a newer producer; missing ones fail.
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: ClassVar[str]
    # The version producers of this code write. A change an older reader could not take (a field renamed,
    # made required, its meaning changed) is a new version, with the step that reads the one before it.
    schema_version: ClassVar[int] = 1
    # upcasts[n]: a body written at version n as version n + 1 would have said it.
    upcasts: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
    registry: ClassVar[dict[str, builtins.type[EventData]]] = {}  # builtins: `type` is a field here

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            EventData.registry[cls.type] = cls
            missing = set(range(1, cls.schema_version)) - set(cls.upcasts)
            assert not missing, f"{cls.type} v{cls.schema_version} cannot read versions {sorted(missing)}"

    @classmethod
    def read(cls, data: dict[str, Any], version: int) -> Self:
        """A body written at `version`, brought up to this one. A newer one is read as it is: its added
        fields are ignored, and what this code needs is still there or it is refused (ValidationError)."""
        for step in range(version, cls.schema_version):
            data = cls.upcasts[step](dict(data))
        return cls.model_validate(data)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    type: str
    schema_version: int
    occurred_at: datetime
    user_id: ShortText | None
    correlation_id: ShortText
    causation_id: ShortText | None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def wrap(
        cls,
        body: EventData,
        *,
        user_id: str | None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> Self:
        event_id = event_id or uuid.uuid4()
        return cls(
            id=event_id,
            type=body.type,
            schema_version=body.schema_version,
            occurred_at=occurred_at or datetime.now(UTC),
            user_id=user_id,
            correlation_id=correlation_id or str(event_id),
            causation_id=causation_id,
            data=body.model_dump(mode="json"),
        )

    def body(self) -> EventData:
        """The typed body; raises UnknownEventError or pydantic.ValidationError."""
        model = EventData.registry.get(self.type)
        if model is None:
            raise UnknownEventError(self.type)
        return model.read(self.data, self.schema_version)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        return cls.model_validate_json(raw)


class UnknownEventError(ValueError):
    pass
