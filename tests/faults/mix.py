"""The load the fault cases run under: virtual users that sign in (a Clerk-style token and identity's
sync), get an admin grant, then debit, hold and capture or release, buy packs paid at localstripe,
subscribe, generate images and update their Clerk profile by webhook, and spend an organization's shared
account as its members (debits and holds), each command with its key.

Every command and every answer it got is recorded (`Sent`); a command that got no answer is retried
with its key after the load (`settle`), which settles whether it was applied. What the ledger must then
hold is derived from this record alone (see verdict.py)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.contracts.identity import org_account_id_for
from tests.conftest import System
from tests.e2e.auth_support import clerk_delivery, clerk_user
from tests.e2e.stripe_support import GOOD_CARD

CARD = {"type": "card", "card[number]": GOOD_CARD, "card[exp_month]": "12", "card[exp_year]": "2034",
        "card[cvc]": "123"}  # fmt: skip
GRANT = 100
ORG_GRANT = 400  # the shared organization's: its members spend it down and get refused past it
PACK, PLAN = "basic", "starter"
OPS_PER_USER = 25  # then the virtual user signs a new user in
UNSETTLED = (None, 503)  # answers that leave the outcome open (see `Sent`)


@dataclass
class Sent:
    """One command of the load and what became of it. `status` is the answer the client saw (None: no
    answer at all); `settled` what a retry with the same key answered afterwards, for one with none or a 503:
    a 503 may come after PostgreSQL stored the commit but before it could say so (it crashed in between),
    so, as no answer, it leaves the outcome open, and a retry with the key settles it."""

    kind: str
    key: str
    user_id: str
    amount: int = 0  # credits it moves when applied (debits negative)
    status: int | None = None
    settled: int | None = None
    ref: str = ""  # what it made: a reservation, a transaction, a job
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> int | None:
        return self.settled if self.settled is not None else self.status

    @property
    def applied(self) -> bool:
        return self.outcome is not None and 200 <= self.outcome < 300


@dataclass
class User:
    clerk_id: str
    user_id: str
    token: str


@dataclass
class Retry:
    """How to send a command again with its key: the method, URL, body and headers it was sent with."""

    method: str
    service: str
    path: str
    json: dict[str, Any] | None
    headers: dict[str, str]
    content: bytes | None = None


class Mix:
    """`clients` virtual users working through the mix until `stop()`; every command in `sent`."""

    def __init__(self, system: System, clients: int, *, seed: int = 13) -> None:
        self.system = system
        self.clients = clients
        # Commands per second over all clients, None: as fast as answers come (closed loop). May change
        # while it runs (the soak measures the peak, then runs at half of it).
        self.rate: float | None = None
        self._next_slot = 0.0
        self.sent: list[Sent] = []
        self.users: list[User] = []
        self.retries: dict[int, Retry] = {}  # index in `sent` → how to send it again
        self.deliveries: list[tuple[bytes, dict[str, str]]] = []  # every Clerk webhook sent, to replay
        self._random = random.Random(seed)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._numbers = itertools.count()
        self._admin = ""
        self._generate_cost = 0
        self._http = httpx.AsyncClient(timeout=10)
        self._org_id = f"org_load{uuid.uuid4().hex[:10]}"
        self._org: User | None = None  # its account, as its admin reads it
        self._member_tokens: dict[str, str] = {}  # each virtual user's token active in the organization

    # -- running

    async def start(self) -> None:
        self._admin = await self._token(f"admin_load_{uuid.uuid4().hex[:8]}", role="admin")
        costs = await self._http.get(f"{self.url('media')}/api/operations")
        self._generate_cost = int(costs.json()["image_generation"])
        self._org = await self._open_org()
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        await self._http.aclose()

    def url(self, service: str) -> str:
        """A copy of the service, picked at random when there are several (see `System.copies`)."""
        copies = getattr(self.system, "copies", {}).get(service)
        return self._random.choice(copies) if copies else self.system.url(service)

    async def _client(self, n: int) -> None:
        while not self._stopping.is_set():
            user = await self._sign_in()
            if user is None:
                continue
            actions: list[Callable[[User], Awaitable[None]]] = [
                self._debit, self._debit, self._debit, self._hold, self._hold, self._purchase, self._media,
                self._media, self._profile, self._org_spend,
            ]  # fmt: skip
            subscribed = False
            for _ in range(OPS_PER_USER):
                if self._stopping.is_set():
                    return
                if not subscribed and self._random.random() < 0.08:
                    subscribed = await self._subscribe(user)
                    continue
                await self._random.choice(actions)(user)

    # -- commands

    async def _send(
        self, sent: Sent, method: str, service: str, path: str, *, json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None, content: bytes | None = None,
    ) -> httpx.Response | None:  # fmt: skip
        """Send a command and record its answer; None when it got none (refused connection, cut, timeout)."""
        await self._pace()
        index = len(self.sent)
        self.sent.append(sent)
        self.retries[index] = Retry(method, service, path, json, headers or {}, content)
        try:
            response = await self._http.request(
                method, self.url(service) + path, json=json, headers=headers, content=content
            )
        except httpx.HTTPError:
            await asyncio.sleep(0.05)  # a dead service must not turn the client into a busy loop
            return None
        sent.status = response.status_code
        if response.status_code in (503, 502):
            await asyncio.sleep(0.05)
        return response

    async def _pace(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        slot, self._next_slot = max(now, self._next_slot), max(now, self._next_slot) + 1 / self.rate
        await asyncio.sleep(slot - now)

    def _keyed(self, token: str) -> tuple[str, dict[str, str]]:
        key = f"load-{next(self._numbers)}-{uuid.uuid4().hex[:8]}"
        return key, {"Authorization": f"Bearer {token}", "Idempotency-Key": key}

    async def _token(self, clerk_id: str, role: str = "user", **org: str) -> str:
        """A dev session token (what Clerk's frontend would hold; with `org_id` and `org_role`, one active in
        that organization); asked again until identity answers."""
        while True:
            try:
                response = await self._http.post(
                    f"{self.url('identity')}/dev/token",
                    json={"clerk_id": clerk_id, "email": f"{clerk_id}@example.com", "role": role, **org},
                )
                if response.status_code == 200:
                    return str(response.json()["token"])
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)

    async def _sign_in(self) -> User | None:
        clerk_id = f"user_load_{uuid.uuid4().hex[:10]}"
        token = await self._token(clerk_id)
        sent = Sent("sign_in", clerk_id, "")
        response = await self._send(sent, "POST", "identity", "/api/user/sync",
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        if response is None or response.status_code != 200:
            return None  # settled afterwards; this client signs someone else in
        user = User(clerk_id, str(response.json()["user"]["id"]), token)
        sent.user_id = sent.ref = user.user_id
        sent.amount = 10
        self.users.append(user)
        key, headers = self._keyed(self._admin)
        await self._send(
            Sent("grant", key, user.user_id, GRANT), "POST", "ledger", f"/api/accounts/{user.user_id}/grants",
            json={"amount": GRANT, "type": "ADMIN_ADJUSTMENT", "description": key}, headers=headers,
        )  # fmt: skip
        return user

    async def _open_org(self) -> User:
        """The organization the virtual users share, made by its admin's first sign-in, with an admin grant."""
        clerk_id = f"user_load_admin_{uuid.uuid4().hex[:10]}"
        token = await self._token(clerk_id, org_id=self._org_id, org_role="org:admin")
        while True:
            try:
                synced = await self._http.post(f"{self.url('identity')}/api/user/sync",
                                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                if synced.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        org = User(clerk_id, org_account_id_for(self._org_id), token)
        self.users.append(org)
        key, headers = self._keyed(self._admin)
        await self._send(
            Sent("grant", key, org.user_id, ORG_GRANT), "POST", "ledger", f"/api/accounts/{org.user_id}/grants",
            json={"amount": ORG_GRANT, "type": "ADMIN_ADJUSTMENT", "description": key}, headers=headers,
        )  # fmt: skip
        return org

    async def _org_spend(self, user: User) -> None:
        """As a member of the shared organization: a debit of its account, or a hold captured or released."""
        assert self._org is not None, "opened at start"
        token = self._member_tokens.get(user.clerk_id)
        if token is None:
            token = self._member_tokens[user.clerk_id] = await self._token(user.clerk_id, org_id=self._org_id,
                                                                           org_role="org:member")  # fmt: skip
        account, amount = self._org.user_id, self._random.randint(1, 3)
        key, headers = self._keyed(token)
        if self._random.random() < 0.6:
            await self._send(Sent("debit", key, account, -amount), "POST", "ledger", f"/api/accounts/{account}/debits",
                             json={"amount": amount, "description": key}, headers=headers)  # fmt: skip
            return
        hold = Sent("hold", key, account, amount)
        held = await self._send(hold, "POST", "ledger", f"/api/accounts/{account}/reservations",
                                json={"amount": amount}, headers=headers)  # fmt: skip
        if held is not None and held.status_code == 201:
            hold.ref = str(held.json()["reservation_id"])
            await self.settle_hold(token, account, hold.ref, amount, capture=self._random.random() < 0.6)

    async def _debit(self, user: User) -> None:
        amount = self._random.randint(1, 3)
        key, headers = self._keyed(user.token)
        await self._send(Sent("debit", key, user.user_id, -amount), "POST",
                         "ledger", f"/api/accounts/{user.user_id}/debits",
                         json={"amount": amount, "description": key}, headers=headers)  # fmt: skip

    async def _hold(self, user: User) -> None:
        amount = self._random.randint(1, 4)
        key, headers = self._keyed(user.token)
        hold = Sent("hold", key, user.user_id, amount)
        held = await self._send(hold, "POST", "ledger",
                                f"/api/accounts/{user.user_id}/reservations",
                                json={"amount": amount}, headers=headers)  # fmt: skip
        if held is None or held.status_code != 201:
            return
        hold.ref = reservation = str(held.json()["reservation_id"])
        await self.settle_hold(user.token, user.user_id, reservation, amount, capture=self._random.random() < 0.6)

    async def settle_hold(self, token: str, user_id: str, reservation: str, amount: int, *, capture: bool) -> None:
        key, headers = self._keyed(token)
        path = f"/api/accounts/{user_id}/reservations/{reservation}"
        if capture:
            capture_it = Sent("capture", key, user_id, -amount, ref=reservation)
            await self._send(
                capture_it, "POST", "ledger", f"{path}/capture", json={"description": key}, headers=headers
            )
        else:
            await self._send(Sent("release", key, user_id, ref=reservation), "POST", "ledger", f"{path}/release",
                             json={}, headers=headers)  # fmt: skip

    async def _purchase(self, user: User) -> None:
        key, headers = self._keyed(user.token)
        sent = Sent("purchase", key, user.user_id)
        made = await self._send(sent, "POST", "payments", "/api/checkout", json={"package_id": PACK},
                                headers=headers)  # fmt: skip
        if made is None or made.status_code != 201:
            return
        answer = made.json()
        sent.ref, sent.amount = str(answer["transaction_id"]), int(answer["credits"])
        intent = str(answer["client_secret"]).split("_secret_")[0]
        sent.body = {"payment_intent": intent, "paid": await self._pay(intent)}

    async def _stripe(self, path: str, **form: str) -> dict[str, Any]:
        response = await self._http.post(
            f"{self.system.env['STRIPE_API_BASE']}/v1/{path}", data=form,
            headers={"Authorization": f"Bearer {self.system.env['STRIPE_SECRET_KEY']}"},
        )  # fmt: skip
        response.raise_for_status()
        return dict(response.json())

    async def _pay(self, intent: str) -> bool:
        """What Stripe.js does with the client secret: a card, attached, then confirmed (at localstripe,
        which no case breaks). True when the PaymentIntent succeeded."""
        method = await self._stripe("payment_methods", **CARD)
        await self._stripe(f"payment_intents/{intent}", payment_method=str(method["id"]))
        return (await self._stripe(f"payment_intents/{intent}/confirm"))["status"] == "succeeded"

    async def _subscribe(self, user: User) -> bool:
        method = await self._stripe("payment_methods", **CARD)
        auth = {"Authorization": f"Bearer {user.token}"}
        try:
            saved = await self._http.post(f"{self.url('payments')}/api/billing/payment-methods",
                                          json={"payment_method": method["id"]}, headers=auth)  # fmt: skip
        except httpx.HTTPError:
            return False
        if saved.status_code != 201:
            return False
        key, headers = self._keyed(user.token)
        sent = Sent("subscribe", key, user.user_id)
        made = await self._send(sent, "POST", "payments", "/api/subscriptions", json={"plan_id": PLAN},
                                headers=headers)  # fmt: skip
        if made is not None and made.status_code == 201:
            sent.ref, sent.amount = str(made.json()["id"]), int(made.json()["plan"]["credits"])
        return True

    async def _media(self, user: User) -> None:
        key, headers = self._keyed(user.token)
        sent = Sent("media", key, user.user_id, -self._generate_cost)
        made = await self._send(sent, "POST", "media", "/api/images/generate",
                                json={"prompt": key, "width": 32, "height": 32}, headers=headers)  # fmt: skip
        if made is not None and made.status_code == 202:
            sent.ref = str(made.json()["id"])

    async def _profile(self, user: User) -> None:
        """A Clerk user.updated webhook, signed by Svix's scheme: a new first name."""
        name = f"N{next(self._numbers)}"
        data = clerk_user(user.clerk_id, f"{user.clerk_id}@example.com", first_name=name)
        body, headers = clerk_delivery(self.system.env["CLERK_WEBHOOK_SECRET"], "user.updated", data)
        self.deliveries.append((body, headers))
        await self._send(Sent("profile", headers["svix-id"], user.user_id, ref=name), "POST",
                         "identity", "/webhooks/clerk", headers=headers, content=body)  # fmt: skip

    # -- after the load

    async def settle(self, *, within: float = 120) -> None:
        """Retry every command that got no answer (or a 503) with its own key until it gets one: that answer
        says whether it is applied (now, or it was already). A hold settled so is then released."""
        deadline = time.monotonic() + within
        for index, sent in enumerate(list(self.sent)):
            if sent.status not in UNSETTLED or sent.settled is not None:
                continue
            retry = self.retries[index]
            response: httpx.Response | None = None
            while response is None or response.status_code >= 500:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sent.kind} {sent.key} got no answer to its retries")
                try:
                    url = self.url(retry.service) + retry.path
                    response = await self._http.request(retry.method, url, json=retry.json, headers=retry.headers,
                                                        content=retry.content)  # fmt: skip
                except httpx.HTTPError:
                    response = None
                if response is None or response.status_code >= 500:
                    await asyncio.sleep(0.2)
            sent.settled = response.status_code
            self._learn(sent, retry, response)

    def _learn(self, sent: Sent, retry: Retry, response: httpx.Response) -> None:
        """What a settled command made, as its first answer would have said."""
        if not sent.applied:
            return
        answer = response.json()
        match sent.kind:
            case "sign_in":
                sent.user_id = sent.ref = str(answer["user"]["id"])
                sent.amount = 10
                token = retry.headers["Authorization"].removeprefix("Bearer ")
                self.users.append(User(sent.key, sent.user_id, token))
            case "hold":
                sent.ref = str(answer["reservation_id"])
            case "purchase":
                sent.ref, sent.amount = str(answer["transaction_id"]), int(answer["credits"])
                sent.body = {"payment_intent": str(answer["client_secret"]).split("_secret_")[0], "paid": False}
            case "subscribe":
                sent.ref, sent.amount = str(answer["id"]), int(answer["plan"]["credits"])
            case "media":
                sent.ref = str(answer["id"])

    async def finish(self) -> None:
        """After `stop()`: settle every open command, release the holds left undecided, close the client."""
        try:
            await self.settle()
            await self.release_settled_holds()
        finally:
            await self.close()

    async def release_settled_holds(self) -> None:
        """A hold with no capture or release applied (its reservation settled by a retry, or its capture
        refused with a 503) is released, as a client retrying would."""
        decided = {s.ref for s in self.sent if s.kind in ("capture", "release") and s.applied}
        tokens = {u.user_id: u.token for u in self.users}
        for sent in list(self.sent):
            if sent.kind == "hold" and sent.applied and sent.ref not in decided and sent.user_id in tokens:
                await self.settle_hold(tokens[sent.user_id], sent.user_id, sent.ref, sent.amount, capture=False)
        if any(s.status in UNSETTLED and s.settled is None for s in self.sent):
            await self.settle()
