"""What a service token may do: one scope per kind of privileged operation, each of one service.

A scope's prefix is the service (the token's audience) whose endpoints it opens; an admin user holds
every scope, a plain user none. The endpoints name the scope they need (`shared/auth.privileged`)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    LEDGER_READ = "ledger:read"  # any user's account, can-spend and entries
    LEDGER_DEBIT = "ledger:debit"  # debit any user's account
    LEDGER_GRANT = "ledger:grant"  # grant credits
    LEDGER_HOLD = "ledger:hold"  # reserve, capture and release on any user's account
    LEDGER_ADJUST = "ledger:adjust"  # an operator's adjustment
    PAYMENTS_READ = "payments:read"  # every transaction
    PAYMENTS_REFUND = "payments:refund"
    PAYMENTS_RECONCILE = "payments:reconcile"
    PAYMENTS_PROMOS = "payments:promos"  # create, list and disable promo codes
    IDENTITY_READ = "identity:read"  # search and read users
    IDENTITY_MANAGE = "identity:manage"  # deactivate and reactivate users
    IDENTITY_ERASE = "identity:erase"  # forget a user (GDPR Art. 17): every service drops their personal data
    PROJECTIONS_STATUS = "projections:status"  # read models' positions and a replay's progress
    PROJECTIONS_REPLAY = "projections:replay"  # start a replay
    PROJECTIONS_READ = "projections:read"  # any user's read models (the admin console's user panel)
    PROJECTIONS_FINANCE = "projections:finance"  # the revenue report: what was sold, recognised and is owed
    # A service's alarms (GET /alarms): what an operator must act on
    IDENTITY_ALARMS = "identity:alarms"
    LEDGER_ALARMS = "ledger:alarms"
    PAYMENTS_ALARMS = "payments:alarms"
    MEDIA_ALARMS = "media:alarms"
    PROJECTIONS_ALARMS = "projections:alarms"

    @property
    def audience(self) -> str:
        return self.value.partition(":")[0]


def of_audience(audience: str) -> frozenset[Scope]:
    return frozenset(scope for scope in Scope if scope.audience == audience)
