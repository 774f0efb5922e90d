"""The passwords of the NATS users (shared/bus/users.py) where one machine runs the whole system: made
once (`creditstream up`, the test fixtures) and kept in one owner-only JSON file beside the embedded
nats-server's data, which holds only their bcrypt hashes in its config. Each service is handed its own
user's password through its environment (NATS_USER, NATS_PASSWORD), the CLI takes `ops`'s.

Passwords rather than nkeys: nats-py and nats-server take them with nothing more installed, a
Kubernetes Secret passes them to a pod as it passes any other, and the server's config need hold only
hashes; what nkeys add (no secret on the wire) TLS gives production, and the embedded server listens on
the loopback only.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from shared.bus.connection import Login
from shared.bus.users import HARNESS, USERS
from shared.secret_files import create_private, read_private

FILE = "nats-users.json"
ROUTE_USER = "route"  # how the nodes of a cluster log in to each other
HARNESS_USER = HARNESS.name
# Checked at every connection: cost 10 takes about 60 ms of the server's time, on connect only.
BCRYPT_COST = 10


@dataclass(frozen=True)
class Credentials:
    passwords: dict[str, str]
    hashes: dict[str, str]

    @classmethod
    def load_or_create(cls, path: Path, *, harness: bool = False) -> Credentials:
        """The credentials kept at `path`, made there (mode 0600) on first use; a user the table gained
        since gets its password then too."""
        names = [*USERS, ROUTE_USER, *([HARNESS_USER] if harness else [])]
        text = read_private(path)
        if text is None:
            text = create_private(path, json.dumps(_made(names)))
        kept: dict[str, dict[str, str]] = json.loads(text)
        if missing := [name for name in names if name not in kept]:
            kept |= _made(missing)
            path.write_text(json.dumps(kept))  # the file is ours and 0600 already
        return cls({n: u["password"] for n, u in kept.items()}, {n: u["bcrypt"] for n, u in kept.items()})

    def login(self, user: str) -> Login:
        return Login(user, self.passwords[user])

    def env(self, user: str) -> dict[str, str]:
        """What a process running as `user` needs in its environment."""
        return {"NATS_USER": user, "NATS_PASSWORD": self.passwords[user]}


def _made(names: list[str]) -> dict[str, dict[str, str]]:
    made = {}
    for name in names:
        password = secrets.token_urlsafe(24)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
        made[name] = {"password": password, "bcrypt": hashed}
    return made
