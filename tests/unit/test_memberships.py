"""How words about a membership (Clerk's webhooks, org-scoped tokens) change it, in any order."""

from __future__ import annotations

import pytest

from services.identity.clerk import ClerkPayloadError, parse_event
from services.identity.domain import Membership, MembershipInfo, membership_change
from shared.auth import user_id_for

NOW = 10_000


def stored(
    role: str = "org:member", *, at: int = 100, mid: str | None = "orgmem_1", removed: bool = False
) -> Membership:
    from datetime import UTC, datetime

    return Membership("org_a", user_id_for("user_a"), "user_a", role, mid, at, datetime.now(UTC) if removed else None)  # type: ignore[arg-type]


def word(role: str = "org:member", *, at: int = 100, mid: str | None = "orgmem_1") -> MembershipInfo:
    return MembershipInfo("org_a", "user_a", role, at, mid)  # type: ignore[arg-type]


def test_the_first_word_adds_and_a_repeat_changes_nothing() -> None:
    assert membership_change(None, word(), remove=False, now_ms=NOW).event == "added"  # type: ignore[union-attr]
    assert membership_change(stored(), word(), remove=False, now_ms=NOW) is None


def test_a_newer_role_changes_it_and_an_older_one_does_not() -> None:
    newer = membership_change(stored(), word("org:admin", at=200), remove=False, now_ms=NOW)
    assert newer is not None and (newer.event, newer.role, newer.at) == ("role", "org:admin", 200)
    assert membership_change(stored(at=300), word("org:admin", at=200), remove=False, now_ms=NOW) is None


def test_a_removal_wins_over_everything_before_it_and_a_token_issued_before_it_cannot_undo_it() -> None:
    removal = membership_change(stored(at=100), word(at=50), remove=True, now_ms=NOW)
    assert removal is not None and (removal.event, removal.removed, removal.at) == ("removed", True, NOW)
    gone = stored(at=NOW, removed=True)
    assert membership_change(gone, word(at=NOW - 1, mid=None), remove=False, now_ms=NOW) is None  # an older token
    assert membership_change(gone, word(at=NOW + 1, mid=None), remove=False, now_ms=NOW).event == "added"  # type: ignore[union-attr]
    # The deleted membership's own late webhook does not revive it; a new membership does.
    assert membership_change(gone, word(at=NOW + 1), remove=False, now_ms=NOW) is None
    assert membership_change(gone, word(at=5, mid="orgmem_2"), remove=False, now_ms=NOW).event == "added"  # type: ignore[union-attr]


def test_a_late_removal_of_an_earlier_membership_leaves_the_new_one() -> None:
    assert membership_change(stored(mid="orgmem_2"), word(mid="orgmem_1"), remove=True, now_ms=NOW) is None
    removed_before_seen = membership_change(None, word(), remove=True, now_ms=NOW)
    assert removed_before_seen is not None and (removed_before_seen.removed, removed_before_seen.event) == (True, None)


def test_a_webhook_naming_a_membership_a_token_told_of_records_its_id_without_news() -> None:
    change = membership_change(stored(at=500, mid=None), word(at=100), remove=False, now_ms=NOW)
    assert change is not None and (change.event, change.at) == (None, 500)


def membership_event(kind: str, **data: object) -> dict[str, object]:
    membership = {
        "id": "orgmem_9", "role": "org:billing", "updated_at": 7,
        "organization": {"id": "org_acme", "name": "Acme", "slug": "acme", "updated_at": 3},
        "public_user_data": {"user_id": "user_x"},
    }  # fmt: skip
    return {"type": kind, "data": membership | data}


def test_clerk_membership_payloads_parse_to_their_word_and_a_custom_role_is_a_members() -> None:
    event = parse_event(membership_event("organizationMembership.created"))
    assert event.membership == MembershipInfo("org_acme", "user_x", "org:member", 7, "orgmem_9")
    assert event.org is not None and (event.org.name, event.org.slug, event.org.at) == ("Acme", "acme", 3)
    deleted = parse_event({"type": "organization.deleted", "data": {"id": "org_acme", "deleted": True}})
    assert deleted.org is not None and deleted.org.name == "org_acme"


@pytest.mark.parametrize(
    "data",
    [
        {"organization": {"id": "acme"}},  # not a Clerk organization id
        {"public_user_data": {}},
        {"updated_at": -1},
    ],
)
def test_a_membership_payload_without_what_it_must_say_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ClerkPayloadError):
        parse_event(membership_event("organizationMembership.updated", **data))
