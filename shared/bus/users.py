"""Who may do what on the bus: one NATS user per process kind, with the subjects it needs and no others.

The table below is the whole trust boundary of the bus. A service publishes only the events it owns
(JetStream stores what any permitted connection publishes, and every consumer trusts a stored event:
a payments event published by anyone else would be a forged purchase), reaches the JetStream API
only for its own durable consumers and the streams it reads, and subscribes only to its own replies
(`_INBOX_<user>.>`, the inbox prefix its connection uses) and to what it serves. Stream creation,
deletion and purge, and re-driving dead letters, belong to the `ops` user the CLI connects as.

Consumer names matter as much as subjects: `$JS.API.CONSUMER.CREATE.<stream>` without a name in the
subject creates or *updates* whatever consumer its body names (tried: it rewrote another service's
filter), so no service may call it; each gets the named form for its own durables only, where the
server takes the name from the subject.

The same table renders the `authorization` block of the embedded nats-server and of `deploy/nats/`
(a test keeps those in step), with bcrypt hashes or environment references in place of passwords.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shared.bus.streams import STREAMS, stream_of

OPS = "ops"
# The ledger's request/reply API (services/ledger/rpc.py): answers whoever may publish there.
LEDGER_RPC = "ledger.rpc.>"
LEDGER_BALANCE = "ledger.rpc.balance"
REDRIVE_PREFIX = "creditstream.redrive"
DEADLETTER = "DEADLETTER"
READ_MODEL_STREAMS = ("IDENTITY", "LEDGER", "PAYMENTS", "MEDIA")


def inbox_prefix(user: str) -> str:
    """The reply subjects of `user`'s connection: nobody else may subscribe to them."""
    return f"_INBOX_{user}"


def replay_consumer(user: str, stream: str) -> str:
    """The one name `user` may give the consumer it reads `stream` from start to end with."""
    return f"{user}-replay-{stream.lower()}"


@dataclass(frozen=True)
class NatsUser:
    name: str
    publishes: tuple[str, ...] = ()  # the event subjects it owns (JetStream publishes)
    consumes: tuple[tuple[str, str], ...] = ()  # (stream, durable) pairs of its consumers
    reads: tuple[str, ...] = ()  # streams whose state and messages it reads (STREAM.INFO, MSG.GET)
    replays: tuple[str, ...] = ()  # streams it reads from sequence 1 (read models rebuilt)
    erases: tuple[str, ...] = ()  # streams of its own whose messages it deletes (a forgotten user's)
    serves: tuple[str, ...] = ()  # core subjects it answers requests on
    requests: tuple[str, ...] = ()  # core subjects it sends requests to
    # Given as they are, in place of what the fields above imply: the whole JetStream API for ops.
    granted: tuple[str, ...] = ()
    listens: tuple[str, ...] = ()  # subscribe subjects given as they are

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream it touches: a service waits at start until each exists."""
        owned = {stream_of(subject) for subject in self.publishes}
        used = {stream for stream, _ in self.consumes} | set(self.reads) | set(self.replays)
        if self.consumes:
            used.add(DEADLETTER)
        return tuple(sorted(owned | used))

    def publish_allow(self) -> list[str]:
        if self.granted:
            return list(self.granted)
        allow = [*self.publishes, "$JS.API.INFO", *(f"$JS.API.STREAM.INFO.{s}" for s in self.streams)]
        for stream, durable in self.consumes:
            api = f"$JS.API.CONSUMER.{{}}.{stream}.{durable}"
            allow += [
                api.format("CREATE"),
                api.format("CREATE") + ".>",  # the form with a filter subject after the name
                api.format("INFO"),
                api.format("MSG.NEXT"),
                f"$JS.ACK.{stream}.{durable}.>",
                f"deadletter.{durable}.>",
            ]
        if self.consumes:  # a re-driven dead letter is read, applied, then deleted by its consumer
            allow += [f"$JS.API.STREAM.MSG.GET.{DEADLETTER}", f"$JS.API.STREAM.MSG.DELETE.{DEADLETTER}"]
        allow += [f"$JS.API.STREAM.MSG.GET.{s}" for s in (*self.reads, *self.erases)]
        allow += [f"$JS.API.STREAM.MSG.DELETE.{s}" for s in self.erases]
        for stream in self.replays:
            name = replay_consumer(self.name, stream)
            allow += [
                f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{name}.>",
                f"$JS.API.CONSUMER.DELETE.{stream}.{name}",
                f"$JS.FC.{stream}.{name}.>",
            ]
        return _unique([*allow, *self.requests])

    def subscribe_allow(self) -> list[str]:
        redrives = [f"{REDRIVE_PREFIX}.{durable}" for _, durable in self.consumes]
        return _unique([*self.listens, f"{inbox_prefix(self.name)}.>", *redrives, *self.serves])

    def permissions(self) -> dict[str, object]:
        permissions: dict[str, object] = {
            "publish": {"allow": self.publish_allow()},
            "subscribe": {"allow": self.subscribe_allow()},
        }
        if self.serves or self.consumes:
            # Answers go to the asker's reply subject, whoever asked (the CLI re-driving, the media worker
            # asking the ledger): allowed for the messages it received, and only once each, briefly.
            permissions["allow_responses"] = {"max": 1, "expires": "1m"}
        return permissions


def _access(service: str) -> tuple[str, str]:
    """The consumer of deactivations every service with users keeps (shared/access.py)."""
    return ("IDENTITY", f"{service}-access")


USERS: dict[str, NatsUser] = {
    user.name: user
    for user in (
        NatsUser("identity", publishes=("identity.>",), consumes=(_access("identity"),), erases=("IDENTITY",)),
        NatsUser(
            "ledger",
            publishes=tuple(STREAMS["LEDGER"]),
            consumes=(
                ("IDENTITY", "ledger-identity"),
                ("PAYMENTS", "ledger-payments"),
                ("MEDIA", "ledger-media"),
                _access("ledger"),
            ),
            reads=("LEDGER",),  # its relay resumes after the last event already on the stream
            serves=(LEDGER_RPC,),
        ),
        NatsUser("payments", publishes=("payments.>",), consumes=(("LEDGER", "payments-ledger"), _access("payments"))),
        NatsUser(
            "media",
            publishes=("media.>", "mediawork.>"),
            consumes=(("LEDGER", "media-ledger"), _access("media")),
            requests=(LEDGER_BALANCE,),  # before it reads an upload's body: a read, it moves no credit
        ),
        # Shares media's outbox, so it relays media's events and work items too.
        NatsUser(
            "media-worker",
            publishes=("media.>", "mediawork.>"),
            consumes=(("MEDIAWORK", "media-worker"),),
            requests=(LEDGER_RPC,),
        ),
        NatsUser(
            "projections",
            consumes=(*((s, f"projections-{s.lower()}") for s in READ_MODEL_STREAMS), _access("projections")),
            reads=READ_MODEL_STREAMS,  # its status reads each stream's head
            replays=READ_MODEL_STREAMS,
        ),
        NatsUser(OPS, granted=("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", f"{REDRIVE_PREFIX}.>")),
    )
}
SERVICE_USERS = tuple(name for name in USERS if name != OPS)
# Only on the test suite's own servers: tests of one mechanism (a consumer, a relay) play every part.
HARNESS = NatsUser("tests", granted=(">",), listens=(">",))


def _unique(subjects: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(subjects))


def authorization(password: Callable[[str], str], users: Iterable[NatsUser] = USERS.values()) -> str:
    """The `authorization` block of a nats-server config: each user, its password as `password(name)`
    gives it (a quoted bcrypt hash, or `$VARIABLE` for the server to take from its environment)."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        permissions = json.dumps(user.permissions(), indent=2).replace("\n", "\n    ")
        lines.append(f'    {{ user: "{user.name}", password: {password(user.name)}, permissions: {permissions} }}')
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def quoted(hashes: Mapping[str, str]) -> Callable[[str], str]:
    return lambda name: json.dumps(hashes[name])


def environment_variable(name: str) -> str:
    """The variable a deployed nats-server reads `name`'s password (or its bcrypt hash) from."""
    return "NATS_PASSWORD_" + name.upper().replace("-", "_")
