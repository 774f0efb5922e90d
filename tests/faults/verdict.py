"""After a fault case: let the system drain, then hold the ledger to what the client's record of the load
says (tests/faults/mix.py): every command it saw succeed is there exactly once, none it saw fail left a
trace, the client's tally equals the ledger's sums per entry type, no balance or lot ever went below zero,
every paid PaymentIntent is credited once, every image job is captured or released once, the read models
equal the ledger and the audit is clean. The figures become one row of the summary table."""

from __future__ import annotations

import functools
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import in_an_org, ledger_view, parked_messages, projected_view
from tests.faults.mix import UNSETTLED, Mix, Sent

ENDED = ("COMPLETED", "FAILED", "CANCELLED")
# Per kind: the entry type an applied command leaves (a release and a profile update leave none).
ENTRY_TYPE = {"sign_in": "BONUS", "grant": "ADMIN_ADJUSTMENT", "debit": "USAGE", "capture": "USAGE",
              "purchase": "PURCHASE", "subscribe": "PURCHASE", "media": "USAGE"}  # fmt: skip


@dataclass
class Row:
    case: str
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0  # a 4xx or a 502 answer: must have left no trace
    unanswered: int = 0  # no answer or a 503: settled afterwards by a retry with the same key
    lost: int = 0
    duplicated: int = 0
    leaked: int = 0  # refused, yet applied
    recovery: float = 0.0
    drained: float = 0.0
    reconciled: float = 0.0  # of `drained`: payments' reconcile (it reads every PaymentIntent back from Stripe)
    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    COLUMNS = ("case", "sent", "acknowledged", "refused", "no answer or 503", "lost", "duplicated", "leaked",
               "recovery s", "drained s")  # fmt: skip

    def cells(self) -> list[str]:
        counts = (self.sent, self.acknowledged, self.refused, self.unanswered, self.lost, self.duplicated, self.leaked)
        return [self.case, *map(str, counts), f"{self.recovery:.1f}", f"{self.drained:.1f}"]


ROWS: list[Row] = []  # this run's cases, for the summary (tests/faults/conftest.py)


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(Row.COLUMNS) + " |", "|" + "---|" * len(Row.COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def drain(system: System, mix: Mix, admin: str) -> float:
    """Until nothing is on its way: Stripe's missed webhooks recovered (localstripe never retries one, as
    Stripe would: reconcile asks Stripe), every image job ended, every hold decided, every read model
    caught up with the ledger. Answers how long the reconcile took."""
    # Generous: after a 10-minute soak it reads thousands of PaymentIntents back from localstripe, whose
    # every list page scans its whole store.
    started = time.monotonic()
    reconciled = httpx.post(f"{system.url('payments')}/api/admin/payments/reconcile", json={}, headers=bearer(admin),
                            timeout=900)  # fmt: skip
    assert reconciled.status_code == 200, reconciled.text
    reconcile_seconds = time.monotonic() - started
    tokens = {u.user_id: u.token for u in mix.users}
    for sent in mix.sent:
        if sent.kind == "media" and sent.applied:
            ended = functools.partial(_ended, system, tokens[sent.user_id], sent.ref)
            wait_until(ended, timeout=180, what=f"image job {sent.ref} ended")
    for user in mix.users:
        decided = functools.partial(_decided, system, user.token, user.user_id)
        mine = [(s.kind, s.status, s.settled, s.ref) for s in mix.sent if s.user_id == user.user_id]
        wait_until(decided, timeout=120, what=f"{user.user_id}'s holds decided; its commands: {mine}")
        caught_up = functools.partial(_caught_up, system, user.token, ledger_view(system, user.token, user.user_id))
        wait_until(caught_up, timeout=120, what=f"projections = ledger for {user.user_id}")
    return reconcile_seconds


def _job(system: System, token: str, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{system.url('media')}/api/images/{job_id}", headers=bearer(token), timeout=30).json())


def _ended(system: System, token: str, job_id: str) -> bool:
    return _job(system, token, job_id)["status"] in ENDED


def _decided(system: System, token: str, user_id: str) -> bool:
    return bool(ledger_view(system, token, user_id)["reserved"] == 0)


def _caught_up(system: System, token: str, expected: dict[str, Any]) -> bool:
    return projected_view(system, token) == expected


def judge(system: System, mix: Mix, row: Row, admin: str) -> Row:
    started = time.monotonic()
    row.reconciled = drain(system, mix, admin)
    row.drained = time.monotonic() - started
    row.sent = len(mix.sent)
    for sent in mix.sent:
        row.answers[f"{sent.kind} {sent.status}"] += 1
        if sent.status in UNSETTLED:
            row.unanswered += 1
        elif 200 <= sent.status < 300:
            row.acknowledged += 1
        else:
            row.refused += 1
            if sent.status >= 500 and sent.status != 502:  # Stripe unreachable is a 502 by design
                row.problems.append(f"{sent.kind} {sent.key} answered {sent.status}")
    tokens = {u.user_id: u.token for u in mix.users}
    views = {user_id: ledger_view(system, token, user_id) for user_id, token in tokens.items()}
    jobs = _jobs(system, mix, tokens)
    tally: Counter[str] = Counter()
    for sent in mix.sent:
        _count(row, sent, views, jobs, tally)
    _conservation(row, views, tally)
    for user_id, view in views.items():
        _never_negative(row, system, user_id, tokens[user_id], view)
    if parked := {k: v for k, v in parked_messages(system).items() if v}:
        row.problems.append(f"parked messages: {parked}")
    try:  # after a fault it may wait for projections (30 s) and for a stalled stream read (about 80 s)
        audit = system.cli("audit", timeout=240)
    except subprocess.TimeoutExpired as hung:
        row.problems.append(f"audit still running after 240 s; it had said:\n{_text(hung.output)}{_text(hung.stderr)}")
    else:
        if audit.returncode != 0:
            row.problems.append(f"audit exited {audit.returncode}:\n{audit.stdout[-3000:]}{audit.stderr[-2000:]}")
    return row


def _text(output: str | bytes | None) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text[-3000:]


def _jobs(system: System, mix: Mix, tokens: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every image job media holds, by the key of the command that asked for it (its prompt, hence its
    title), as media's API answers it, with the id of the job (what the ledger's capture names; media's
    API does not show it, its own table does). A refused command must have none."""
    query = "SELECT m.title, m.id::text, j.id::text FROM media.media m JOIN media.jobs j ON j.media_id = m.id"
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        made = {title: (media_id, job_id) for title, media_id, job_id in conn.execute(query).fetchall()}
    users = {s.key: s.user_id for s in mix.sent if s.kind == "media"}
    return {key: {**_job(system, tokens[users[key]], media_id), "job_id": job_id}
            for key, (media_id, job_id) in made.items() if key in users}  # fmt: skip


def _traces(sent: Sent, entries: list[dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(how many entries the command left, how many it should have left)."""
    match sent.kind:
        case "sign_in":
            return sum(e["type"] == "BONUS" for e in entries), int(sent.applied)
        case "grant" | "debit" | "capture":
            return sum(e["description"] == sent.key for e in entries), int(sent.applied)
        case "purchase":
            mine = sum(e["type"] == "PURCHASE" and e["metadata"].get("transaction_id") == sent.ref for e in entries)
            return mine, int(sent.applied and bool(sent.body.get("paid")))
        case "subscribe":
            return sum(e["metadata"].get("subscription_id") == sent.ref for e in entries), int(sent.applied)
        case "media":
            if (job := jobs.get(sent.key)) is None:
                return 0, int(sent.applied)  # applied yet no job: lost
            mine = sum(e["metadata"].get("job_id") == job["job_id"] for e in entries if e["type"] == "USAGE")
            if not sent.applied:
                return 1 + mine, 0  # a job made for a refused command is a trace, charged or not
            return mine, int(job["status"] == "COMPLETED")
    return 0, 0


def _count(
    row: Row, sent: Sent, views: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]], tally: Counter[str]
) -> None:
    if sent.kind not in ENTRY_TYPE or not sent.user_id or sent.user_id not in views:
        return
    found, expected = _traces(sent, views[sent.user_id]["entries"], jobs)
    if expected:
        tally[ENTRY_TYPE[sent.kind]] += sent.amount
    if found < expected:
        row.lost += 1
        row.problems.append(f"lost: {sent.kind} {sent.key} ({sent.ref}) answered {sent.outcome}, not in the ledger")
    elif found > expected and expected:
        row.duplicated += 1
        row.problems.append(f"duplicated: {sent.kind} {sent.key} ({sent.ref}) is in the ledger {found} times")
    elif found > expected:
        row.leaked += 1
        row.problems.append(f"leaked: {sent.kind} {sent.key} answered {sent.outcome}, yet is in the ledger")


def _conservation(row: Row, views: dict[str, dict[str, Any]], tally: Counter[str]) -> None:
    """The ledger's sums per entry type over the load's users equal the client's own tally; their balances
    add up to those sums (grants - debits - expiries)."""
    sums: Counter[str] = Counter()
    for view in views.values():
        for entry in view["entries"]:
            sums[entry["type"]] += entry["amount"]
    ledger, client = ({k: v for k, v in c.items() if v} for c in (sums, tally))
    if ledger != client:
        row.problems.append(f"conservation: ledger sums per type {ledger} != client tally {client}")
    if sum(v["balance"] for v in views.values()) != sum(sums.values()):
        row.problems.append("conservation: the balances do not add up to the entries")


def _never_negative(row: Row, system: System, user_id: str, token: str, view: dict[str, Any]) -> None:
    """Over the whole history (every entry's balance after it), not only at the end; and no lot."""
    if view["balance"] < 0 or any(e["balance_after"] < 0 for e in view["entries"]):
        row.problems.append(f"negative balance in {user_id}'s history")
    if sum(e["amount"] for e in view["entries"]) != view["balance"]:
        row.problems.append(f"{user_id}: balance != sum of entries")
    board = "/api/org/dashboard" if in_an_org(token) else "/api/user/dashboard"
    lots = httpx.get(f"{system.url('projections')}{board}", headers=bearer(token), timeout=30).json()["lots"]
    if any(lot["remaining"] < 0 for lot in lots) or sum(lot["remaining"] for lot in lots) != view["balance"]:
        row.problems.append(f"{user_id}'s lots {lots} do not add up to the balance {view['balance']} (or one is < 0)")
