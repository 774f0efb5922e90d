"""Event contracts: the envelope and one typed body per subject of SPEC.md's table.

Importing this package registers every body, so `Envelope.body()` can type any event.
"""

from shared.contracts import identity, ledger, media, payments
from shared.contracts.envelope import NAMESPACE, Envelope, EventData, UnknownEventError, derive_id

__all__ = [
    "NAMESPACE",
    "Envelope",
    "EventData",
    "UnknownEventError",
    "derive_id",
    "identity",
    "ledger",
    "media",
    "payments",
]
