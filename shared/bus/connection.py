"""Every connection to NATS: who it logs in as (shared/bus/users.py), over TLS when configured, and what
the server refused it.

A publish the server does not permit is dropped: JetStream answers nothing, so the publisher only sees a
timeout. The server says why on the connection's error callback; each such refusal is logged, counted for
the connection (a service's GET /alarms reports its own: a service refused what its code does is a
misconfiguration an operator must see) and counted as a metric.
"""

from __future__ import annotations

import logging
import ssl
import weakref
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import DEFAULT_INBOX_PREFIX, DEFAULT_PENDING_SIZE, Client

from shared import metrics
from shared.bus.users import inbox_prefix
from shared.settings import Settings

log = logging.getLogger(__name__)


class LoginRefusedError(ConnectionError):
    """The server refused the user and password (or an anonymous connection)."""


@dataclass(frozen=True)
class Login:
    """A NATS user and password (none: an anonymous connection, refused by our servers) and the TLS
    context of the connection (none: plain TCP, as on the loopback of the embedded server)."""

    user: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(
        cls,
        user: str | None,
        password: str | None,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> Login:
        return cls(user, password, tls_context(ca, cert, key))


def login(settings: Settings) -> Login:
    """The login of a service: NATS_USER, NATS_PASSWORD and NATS_TLS_CA / _CERT / _KEY."""
    password = settings.nats_password.get_secret_value() if settings.nats_password else None
    return Login.of(
        settings.nats_user, password, ca=settings.nats_tls_ca, cert=settings.nats_tls_cert, key=settings.nats_tls_key
    )


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A client context that trusts `ca` (else the system's roots when a certificate is given), with
    `cert`/`key` as the client's own certificate where the server asks for one."""
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


@dataclass
class Refusals:
    """What the server refused one connection."""

    count: int = 0
    last: str | None = None

    def problem(self) -> str | None:
        if not self.count:
            return None
        return f"NATS refused {self.count} operation(s) of this process as not permitted (last: {self.last})"


_refused: weakref.WeakKeyDictionary[Client, Refusals] = weakref.WeakKeyDictionary()


def refusals(nc: Client) -> Refusals:
    return _refused.setdefault(nc, Refusals())


def servers(url: str) -> list[str]:
    """NATS_URL as a server list: "nats://a:4222,nats://b:4222" names the nodes of a cluster. nats-py takes
    a list; it reads a comma-joined string as one URL and refuses it as invalid."""
    return [server.strip() for server in url.split(",") if server.strip()]


async def connect(
    url: str, name: str, login: Login | None = None, *, pending_size: int = DEFAULT_PENDING_SIZE
) -> Client:
    """Every connection to NATS goes through here, so a cluster's comma-separated URL works for all of them.
    nats-py shuffles the list (connections spread over the nodes) and, on a lost connection, tries the
    next node in it and those the cluster told it about."""
    login = login or Login()
    seen = Refusals()
    connected = False

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        if not connected and "authorization violation" in text.lower():
            # Raised here, it ends `nats.connect` (which would otherwise try again for good): a login the
            # server refuses will not become a good one by retrying.
            raise LoginRefusedError(f"NATS refused the login of {login.user or 'an anonymous connection'}") from exc
        if "permissions violation" in text.lower():
            seen.count += 1
            seen.last = text.removeprefix("nats: ")
            metrics.NATS_PERMISSION_DENIED.add(1)
            log.error("%s: NATS refused: %s", name, seen.last)
        else:
            log.warning("%s: NATS: %s", name, text or type(exc).__name__)

    # Reconnect forever: a NATS restart (or a cluster node's death) must not take a service down with it.
    nc = await nats.connect(
        servers(url),
        name=name,
        user=login.user,
        password=login.password,
        tls=login.tls,
        # Replies come to subjects only this user may subscribe to (users.py), not to the shared `_INBOX`.
        inbox_prefix=inbox_prefix(login.user) if login.user else DEFAULT_INBOX_PREFIX,
        error_cb=on_error,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        pending_size=pending_size,
    )
    connected = True
    _refused[nc] = seen
    return nc
