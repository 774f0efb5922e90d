"""Payments' tables (transactions arrive with the payments issue; the outbox and inbox are shared)."""

from __future__ import annotations

DDL: tuple[str, ...] = ()
