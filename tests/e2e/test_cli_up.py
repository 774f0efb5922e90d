"""`creditstream up` as a developer runs it: a killed service comes back on its own while the others keep
running, the dev Clerk webhook secret lets `creditstream clerk-webhook` create a user, the CLI's service
tokens work while the services hold only the public service key, and a terminal's Ctrl-C stops everything
cleanly. One run of `up` serves the whole module; the Ctrl-C test goes last."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest

from shared import bus
from shared.auth import user_id_for
from shared.bus import credentials
from shared.bus.credentials import Credentials
from shared.contracts import Envelope
from shared.contracts.payments import PaymentSucceeded
from shared.service_tokens import DEV_KEY_FILE, dev_public_key_pem
from shared.settings import SERVICES
from shared.testing.waiting import free_port, port_open, wait_until

CLI = str(Path(sys.executable).with_name("creditstream"))
# Unset, so that `up` starts its own PostgreSQL, NATS, localstripe and webhook secret.
EMBEDDED = ("DATABASE_URL", "NATS_URL", "STRIPE_API_BASE", "CLERK_WEBHOOK_SECRET")


@dataclass
class Up:
    """A running `creditstream up`: its process, environment, ports and every line it printed."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    data_dir: Path
    ports: dict[str, int]  # the five services, "nats" and "localstripe"
    lines: list[str] = field(default_factory=list)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def printed(self, *words: str, since: int = 0) -> bool:
        return any(all(word in line for word in words) for line in self.lines[since:])

    def tail(self, count: int = 80) -> str:
        return "creditstream up printed (last lines):\n" + "\n".join(self.lines[-count:])

    def wait_for(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        try:
            wait_until(condition, timeout=timeout, interval=0.1, what=what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data_dir = tmp_path_factory.mktemp("up")
    ports = {name: free_port() for name in (*SERVICES, "nats", "localstripe")}
    env = {name: value for name, value in os.environ.items() if name not in EMBEDDED}
    env.update({f"{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env["MEDIA_WORKER_PORT"] = str(free_port())
    env.update(AUTH_MODE="dev", DATA_DIR=str(data_dir), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    # Its own process group, as a shell gives a foreground job: the Ctrl-C test signals the whole group.
    process = subprocess.Popen(
        [CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    run = Up(process, env, data_dir, ports)
    threading.Thread(target=_read, args=(process, run.lines), daemon=True).start()
    try:
        run.wait_for(
            lambda: run.printed("Ctrl-C stops everything") or process.poll() is not None,
            timeout=120,
            what="creditstream up to be up",
        )
        assert process.poll() is None, f"creditstream up exited with {process.returncode}\n{run.tail()}"
        yield run
    finally:
        _leave_nothing_behind(run)


def _read(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def _leave_nothing_behind(run: Up) -> None:
    """After a failed test: stop what the run left, by process id."""
    if run.process.poll() is None:
        os.killpg(run.process.pid, signal.SIGINT)
        try:
            run.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
    for pid in processes_of(run.data_dir):
        os.kill(pid, signal.SIGKILL)


def listening_pid(port: int) -> int | None:
    """The process listening on `port`, from /proc (psutil is not installed)."""
    sockets = _listening_sockets(port)
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if sockets and any(os.readlink(fd) in sockets for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:  # it exited while we looked
            continue
    return None


def _listening_sockets(port: int) -> set[str]:
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for row in table.read_text().splitlines()[1:] if table.exists() else ():
            fields = row.split()  # local address is hex ip:port, state 0A is LISTEN, field 9 the inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def processes_of(data_dir: Path) -> dict[int, str]:
    """Live processes whose command line (nats-server, postgres) or environment (services, localstripe)
    names `data_dir`: what this run of `up` started."""
    needle = str(data_dir).encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            found[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def admin_token(up: Up) -> str:
    response = httpx.post(
        f"{up.url('identity')}/dev/token",
        json={"clerk_id": "admin_cli_up", "email": "admin@example.com", "role": "admin"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]


def test_a_killed_service_is_restarted_while_the_others_keep_running(up: Up) -> None:
    before = {name: listening_pid(up.ports[name]) for name in SERVICES}
    assert all(before.values()), f"a service without a listener: {before}\n{up.tail()}"
    ledger, mark = before["ledger"], len(up.lines)
    assert ledger is not None

    os.kill(ledger, signal.SIGKILL)

    up.wait_for(
        lambda: up.printed("ledger", "SIGKILL", "restarting", since=mark), timeout=15, what="a restart announced"
    )
    up.wait_for(
        lambda: healthy(up.url("ledger")) and listening_pid(up.ports["ledger"]) not in (None, ledger),
        timeout=60,
        what="a new ledger answering /healthz",
    )
    others = {name: listening_pid(up.ports[name]) for name in SERVICES if name != "ledger"}
    assert others == {name: pid for name, pid in before.items() if name != "ledger"}, up.tail()
    assert up.process.poll() is None, up.tail()


def test_clerk_webhook_creates_a_user_signed_with_the_dev_secret_up_made(up: Up) -> None:
    secret_file = up.data_dir / "clerk-webhook-secret"
    assert secret_file.read_text().startswith("whsec_"), up.tail()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert up.printed("creditstream", "clerk-webhook"), up.tail()
    clerk_id = f"user_{uuid.uuid4().hex[:12]}"

    names = ["--first-name", "Ada", "--last-name", "Lovelace"]
    sent = subprocess.run(
        [CLI, "clerk-webhook", "--clerk-id", clerk_id, "--email", f"{clerk_id}@example.com", *names],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert sent.returncode == 0, f"{sent.stdout}{sent.stderr}\n{up.tail()}"
    user = httpx.get(
        f"{up.url('identity')}/api/admin/users/{user_id_for(clerk_id)}",
        headers={"Authorization": f"Bearer {admin_token(up)}"},
        timeout=30,
    )
    assert user.status_code == 200, f"{user.text}\n{up.tail()}"
    assert (user.json()["email"], user.json()["first_name"], user.json()["last_name"]) == (
        f"{clerk_id}@example.com",
        "Ada",
        "Lovelace",
    )


def test_a_purchase_forged_on_the_bus_is_refused_to_anyone_but_payments(up: Up) -> None:
    """The attack of issue 19 on `creditstream up` as a newcomer runs it: a hand-written
    `payments.payment.succeeded` naming a fresh transaction, its own user and a million credits."""
    victim, control = _signed_in(up), _signed_in(up)
    logins = Credentials.load_or_create(up.data_dir / "nats" / credentials.FILE)
    url = f"nats://127.0.0.1:{up.ports['nats']}"

    async def attack() -> dict[str, int]:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
        refused = {}
        for user in ("media", "identity", "ops"):
            nc = await bus.connect(url, "attacker", logins.login(user))
            try:
                forged = _forged_purchase(victim)
                with pytest.raises(nats.errors.TimeoutError):  # the server drops it: no ack comes
                    await nc.jetstream().publish(forged.type, forged.to_bytes(), timeout=2)
                await nc.flush()
                refused[user] = bus.refusals(nc).count
                assert 'publish to "payments.payment.succeeded"' in (bus.refusals(nc).last or "")
            finally:
                await nc.close()
        # The control: the same envelope from payments' own user is a purchase, so the refusals above are
        # what kept the victim's balance, not a malformed event.
        nc = await bus.connect(url, "payments-as-itself", logins.login("payments"))
        try:
            genuine = _forged_purchase(control)
            await bus.publish(nc.jetstream(), genuine.type, genuine.to_bytes(), msg_id=str(genuine.id))
        finally:
            await nc.close()
        return refused

    assert asyncio.run(attack()) == {"media": 1, "identity": 1, "ops": 1}
    up.wait_for(lambda: _balance(up, control) == 1_000_010, timeout=30, what="the control's purchase applied")
    assert _balance(up, victim) == 10
    stored = asyncio.run(_payments_for(url, logins.login("ops"), victim.user_id))
    assert stored == [], f"PAYMENTS holds the forged purchase: {stored}"


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    token: str


def _signed_in(up: Up) -> SignedIn:
    clerk_id = f"user_{uuid.uuid4().hex[:12]}"
    token = httpx.post(
        f"{up.url('identity')}/dev/token", json={"clerk_id": clerk_id, "email": f"{clerk_id}@example.com"}, timeout=30
    ).json()["token"]
    user = SignedIn(user_id_for(clerk_id), token)
    synced = httpx.post(f"{up.url('identity')}/api/user/sync", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert synced.status_code == 200, synced.text
    up.wait_for(lambda: _balance(up, user) == 10, timeout=30, what="the welcome bonus")
    return user


def _balance(up: Up, user: SignedIn) -> int | None:
    answer = httpx.get(
        f"{up.url('ledger')}/api/accounts/{user.user_id}", headers={"Authorization": f"Bearer {user.token}"}, timeout=30
    )
    return int(answer.json()["balance"]) if answer.status_code == 200 else None


def _forged_purchase(user: SignedIn) -> Envelope:
    purchase = PaymentSucceeded(
        transaction_id=str(uuid.uuid4()), user_id=user.user_id, credits=1_000_000, amount_cents=0, currency="usd",
        stripe_payment_intent_id=None,
    )  # fmt: skip
    return Envelope.wrap(purchase, user_id=user.user_id)


async def _payments_for(url: str, ops: bus.Login, user_id: str) -> list[str]:
    """The PAYMENTS messages that name `user_id`, read as an operator would."""
    nc = await bus.connect(url, "operator", ops)
    try:
        js = nc.jetstream()
        last = (await js.stream_info("PAYMENTS")).state.last_seq
        found = []
        for seq in range(1, last + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                data = (await js.get_msg("PAYMENTS", seq)).data or b""
                if user_id.encode() in data:
                    found.append(data.decode())
        return found
    finally:
        await nc.close()


def test_the_cli_signs_with_the_dev_key_up_made_and_the_services_hold_only_its_public_half(up: Up) -> None:
    key_file = up.data_dir / DEV_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, up.tail()
    public = dev_public_key_pem(up.data_dir)  # the file exists: this only reads it
    for name in SERVICES:
        pid = listening_pid(up.ports[name])
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        assert f"SERVICE_JWT_PUBLIC_KEY={public}" in environ, name
        assert not [entry for entry in environ if "PRIVATE KEY" in entry or "SERVICE_JWT_PRIVATE" in entry], name

    reconciled = subprocess.run(
        [CLI, "payments", "reconcile", "--since", "1h"], env=up.env, capture_output=True, text=True, timeout=120
    )

    assert reconciled.returncode == 0, f"{reconciled.stdout}{reconciled.stderr}\n{up.tail()}"
    assert "PaymentIntents checked" in reconciled.stdout


def test_ctrl_c_stops_everything_cleanly(up: Up) -> None:
    os.killpg(up.process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group

    try:
        code = up.process.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 20 s after Ctrl-C\n{up.tail()}") from None
    up.wait_for(lambda: up.printed("All stopped"), timeout=5, what="the last line read")
    assert code == 0, up.tail()
    tracebacks = [line for line in up.lines if "Traceback" in line]
    assert not tracebacks, f"{len(tracebacks)} tracebacks\n{up.tail(200)}"
    assert [name for name, port in up.ports.items() if port_open(port)] == [], up.tail()
    assert processes_of(up.data_dir) == {}, up.tail()
