"""Reading a stream from a given sequence with an ordered push consumer: what a replay or an audit does.
nats-py's pull `fetch` costs an asyncio task per message, three times slower for a whole stream."""

from __future__ import annotations

from nats.aio.msg import Msg

V1_ACK_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery, from its reply subject (what `msg.metadata` parses,
    without the timestamp it also builds for every message)."""
    tokens = (msg.reply or "").split(".")
    return int(tokens[5] if len(tokens) == V1_ACK_TOKENS else tokens[Msg.Ack.StreamSeq])
