"""Media's tables (images, videos and jobs arrive with the media issue; the outbox and inbox are shared)."""

from __future__ import annotations

DDL: tuple[str, ...] = ()
