"""An organization's account: members spend it within their monthly limits, measured with what they hold, in
the month each spend is asked; the account itself never goes below zero."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.answers import answer
from services.ledger.application import Ledger
from services.ledger.commands import ChargeJob, HoldForJob, OpenOrganization, SetMemberLimit, SetUsageCap
from shared.contracts.identity import org_account_id_for
from tests.ledger_asks import ask

DEC = datetime(2026, 12, 20, tzinfo=UTC)
JAN = datetime(2027, 1, 2, tzinfo=UTC)
A, B, C = (str(uuid.uuid4()) for _ in range(3))


def org_with(credits: int, **limits: int | None) -> tuple[Ledger, str]:
    ledger, org = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}), org_account_id_for("org_test")
    ledger.execute_batch([OpenOrganization(user_id=org, key="org:opened")])
    ledger.execute_batch([ask("grant", org, "bought", entry_type="PURCHASE", amount=credits)])
    for member, limit in limits.items():
        ledger.execute_batch([SetMemberLimit(user_id=org, key=f"limit-{member}", member_id=member_ids[member],
                                             monthly_credits=limit, admin_id="admin")])  # fmt: skip
    return ledger, org


member_ids = {"A": A, "B": B, "C": C}


def spend(ledger: Ledger, org: str, key: str, member: str, amount: int, now: datetime = DEC) -> Any:
    return answer(ledger.execute_batch([ask("debit", org, key, amount=amount, member_id=member, now=now)])[0])


def test_a_member_within_their_limit_spends_and_past_it_is_refused_naming_the_limit() -> None:
    ledger, org = org_with(20, A=5)
    assert spend(ledger, org, "a1", A, 3).status == 201
    refused = spend(ledger, org, "a2", A, 3)
    assert refused.status == 402
    assert {k: refused.body[k] for k in ("account", "reason", "limit", "used", "amount", "available")} == {
        "account": "org", "reason": "limit", "limit": 5, "used": 3, "amount": 3, "available": 17,
    }  # fmt: skip
    assert spend(ledger, org, "b1", B, 12).status == 201  # no limit: the organization's credit is B's to spend
    account = ledger.account(org)
    assert account is not None and (account.balance, account.member_used(A, "2026-12")) == (5, 3)
    short = spend(ledger, org, "b2", B, 6)
    assert (short.status, short.body["account"], short.body["reason"]) == (402, "org", "credits")


def test_a_members_holds_count_against_their_limit_and_a_release_gives_the_room_back() -> None:
    ledger, org = org_with(20, A=5)
    held = answer(ledger.execute_batch([ask("reserve", org, "h", amount=4, ttl_seconds=60, member_id=A, now=DEC)])[0])
    assert held.status == 201
    assert spend(ledger, org, "a", A, 2).body["reason"] == "limit"
    ledger.execute_batch([ask("release", org, "r", reservation_id=held.body["reservation_id"])])
    assert spend(ledger, org, "a-again", A, 2).status == 201


def test_a_job_held_and_charged_for_a_member_counts_once_in_the_month_it_is_charged() -> None:
    ledger, org = org_with(20, A=5)
    hold = HoldForJob(user_id=org, key="job:1:reserve", reservation_id="r1", job_id="1", cost=3,
                      expires_at=DEC + timedelta(minutes=5), member_id=A, asked_at=DEC)  # fmt: skip
    charge = ChargeJob(user_id=org, key="job:1:capture", job_id="1", cost=3, operation="image_generation",
                       member_id=A, asked_at=DEC)  # fmt: skip
    ledger.execute_batch([hold])
    ledger.execute_batch([charge])
    ledger.execute_batch([charge])  # redelivered: applied once
    account = ledger.account(org)
    assert account is not None and (account.balance, account.member_used(A, "2026-12")) == (17, 3)
    assert spend(ledger, org, "next", A, 3).body["reason"] == "limit"
    assert spend(ledger, org, "next-month", A, 3, now=JAN).status == 201  # a new month, a new allowance


def test_a_limit_can_be_lifted_and_a_personal_account_knows_no_members() -> None:
    ledger, org = org_with(20, A=0)
    assert spend(ledger, org, "a", A, 1).body["reason"] == "limit"
    ledger.execute_batch([SetMemberLimit(user_id=org, key="lift", member_id=A, monthly_credits=None, admin_id="x")])
    assert spend(ledger, org, "a2", A, 1).status == 201
    user = str(uuid.uuid4())
    ledger.execute_batch([ask("grant", user, "g", entry_type="BONUS", amount=2)])
    short = answer(ledger.execute_batch([ask("debit", user, "d", amount=3)])[0])
    assert (short.body["account"], short.body["reason"]) == ("user", "credits")


@settings(max_examples=60, deadline=None)
@given(
    credits=st.integers(0, 40),
    limits=st.tuples(*[st.none() | st.integers(0, 15)] * 3),
    asks=st.lists(
        st.tuples(st.sampled_from("ABC"), st.sampled_from(["debit", "hold", "capture", "release"]), st.integers(1, 6)),
        max_size=40,
    ),
)
def test_members_spending_in_any_order_never_overdraw_the_account_or_pass_a_limit(
    credits: int, limits: tuple[int | None, ...], asks: list[tuple[str, str, int]]
) -> None:
    ledger, org = org_with(max(credits, 1), **dict(zip("ABC", limits, strict=True)))
    held: dict[str, list[str]] = {m: [] for m in "ABC"}
    for i, (who, what, amount) in enumerate(asks):
        member = member_ids[who]
        if what == "debit":
            spend(ledger, org, f"k{i}", member, amount)
        elif what == "hold":
            done = answer(ledger.execute_batch([ask("reserve", org, f"k{i}", amount=amount, ttl_seconds=60,
                                                    member_id=member, now=DEC)])[0])  # fmt: skip
            if done.status == 201:
                held[who].append(done.body["reservation_id"])
        elif held[who]:
            verb = {"capture": "capture", "release": "release"}[what]
            ledger.execute_batch([ask(verb, org, f"k{i}", reservation_id=held[who].pop(), now=DEC)])
        account = ledger.account(org)
        assert account is not None
        assert account.balance >= 0 and account.available >= 0
        for name, limit in zip("ABC", limits, strict=True):
            if limit is not None:
                assert account.member_used(member_ids[name], "2026-12") <= limit


def test_an_organizations_account_snapshot_keeps_its_members() -> None:
    ledger, org = org_with(20, A=5)
    spend(ledger, org, "a", A, 2)
    ledger.take_snapshot(uuid.UUID(org))
    fresh = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    fresh.recorder.insert_events(list(ledger.recorder.select_events(uuid.UUID(org))))
    assert fresh.snapshots is not None and ledger.snapshots is not None
    fresh.snapshots.recorder.insert_events(list(ledger.snapshots.recorder.select_events(uuid.UUID(org))))
    account = fresh.account(org)
    assert account is not None and account.member_used(A, "2026-12") == 2 and account.members[A].limit == 5


def test_an_accounts_monthly_cap_counts_every_spend_and_holds_and_opens_again_next_month() -> None:
    ledger, user = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}), str(uuid.uuid4())
    ledger.execute_batch([ask("grant", user, "g", entry_type="BONUS", amount=20)])
    ledger.execute_batch([SetUsageCap(user_id=user, key="cap", monthly_credits=5, set_by=user)])
    assert answer(ledger.execute_batch([ask("debit", user, "d1", amount=3, now=DEC)])[0]).status == 201
    refused = answer(ledger.execute_batch([ask("debit", user, "d2", amount=3, now=DEC)])[0])
    assert {k: refused.body[k] for k in ("account", "reason", "cap", "used")} == {
        "account": "user", "reason": "cap", "cap": 5, "used": 3,
    }  # fmt: skip
    held = answer(ledger.execute_batch([ask("reserve", user, "h", amount=2, ttl_seconds=60, now=DEC)])[0])
    assert held.status == 201  # 3 + 2 = 5: at the cap, not past it
    assert (
        answer(ledger.execute_batch([ask("reserve", user, "h2", amount=1, ttl_seconds=60, now=DEC)])[0]).status == 402
    )
    assert answer(ledger.execute_batch([ask("debit", user, "jan", amount=3, now=JAN)])[0]).status == 201
    account = ledger.account(user)
    assert account is not None and account.balance == 14  # the refusals took nothing
