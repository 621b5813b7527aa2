"""Message traces: what each node remembers of recent messages, and the scatter-gather that asks them.

Every node keeps a bounded :class:`TraceRing` of the last ``IM_TRACE_CAPACITY`` messages it handled,
keyed by ``(conversation, seq)``:

- an **API node** records that it stored a message (when), and to which gateway nodes it published it
  with how many devices each;
- a **gateway** records the devices it pushed a message to (when), and the ``ack`` it wrote to the
  sender's own device.

At most ``IM_TRACE_DEVICES`` devices are listed per record (the count goes on), so the memory of a ring
is bounded whatever the group size. When the ring is full the oldest message is forgotten; a node's
answer says since when its ring is complete, so that a trace can say that records *aged out* rather
than pretend a message was never pushed.

``im cluster trace`` asks through an API node, which publishes one request on ``<prefix>.trace``
(only API nodes may publish there, see :mod:`im_server.bus.permissions`) with a reply inbox of its own;
every live node answers that inbox only (``allow_responses``). The request and the answers are plain
JSON; a node ignores a request it cannot parse.

:func:`frame_key` finds the message of an already-encoded frame without decoding it: message and ack
frames are built by this server with the message's ``conversation`` and ``seq`` as its first fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..bus.nats import Bus

__all__ = [
    "TRACE_TIMEOUT",
    "NodeTrace",
    "TraceRecord",
    "TraceResponder",
    "TraceRing",
    "decode_request",
    "encode_request",
    "frame_key",
    "gather",
]

log = logging.getLogger(__name__)

TRACE_TIMEOUT = 1.0
"""Seconds a trace waits for the last live node (one that does not answer is reported as silent)."""

MAX_ANSWER_BYTES = 256 * 1024
"""A node's answer is dropped if larger (the device lists are bounded far below this)."""

Key = tuple[str, int]

_FRAME = re.compile(
    rb'\{"type":"(message|ack)",(?:"client_msg_id":"[A-Za-z0-9_-]{1,64}",)?'
    rb'"message":\{"conversation":"([dg]:[0-9:]{1,40})","seq":([0-9]{1,19})[,}]'
)


def frame_key(frame: bytes) -> tuple[str, Key] | None:
    """``(kind, (conversation, seq))`` of a ``message`` or ``ack`` frame, else ``None`` (cheap: no decoding)."""
    match = _FRAME.match(frame)
    if match is None:
        return None
    return match.group(1).decode(), (match.group(2).decode(), int(match.group(3)))


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class TraceRecord:
    """What one node remembers of one message."""

    stored_at: int | None = None
    """API node: when it committed the message (ms since the epoch)."""
    published: dict[str, int] = field(default_factory=dict)
    """API node: gateway node -> devices the message was published to there."""
    published_at: int | None = None
    pushes: list[tuple[int, str, str, int]] = field(default_factory=list)
    """Gateway: ``(user, device, "push" | "ack", at ms)``, at most the ring's ``devices`` entries."""
    pushed: int = 0
    """Gateway: devices pushed to (or acked), including those beyond the listed ones."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stored_at": self.stored_at,
            "published": self.published,
            "published_at": self.published_at,
            "pushes": self.pushes,
            "pushed": self.pushed,
        }


class TraceRing:
    """The last ``capacity`` messages one node handled, oldest forgotten first (``capacity=0``: off)."""

    def __init__(self, capacity: int, devices: int = 16) -> None:
        self.capacity = capacity
        self.devices = devices
        self._records: OrderedDict[Key, TraceRecord] = OrderedDict()
        self.since = _ms()
        """From this time (ms) on, nothing was forgotten: the node's start, or the newest forgotten record."""
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, key: Key) -> TraceRecord | None:
        if self.capacity <= 0:
            return None
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = TraceRecord()
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)
                self.evicted += 1
                self.since = _ms()
        return record

    def stored(self, key: Key, at: int | None = None) -> None:
        """An API node committed the message."""
        record = self._record(key)
        if record is not None:
            record.stored_at = at if at is not None else _ms()

    def published(self, key: Key, node: str, devices: int) -> None:
        """An API node published the message to a gateway node for ``devices`` devices."""
        record = self._record(key)
        if record is not None:
            record.published[node] = record.published.get(node, 0) + devices
            record.published_at = record.published_at or _ms()

    def pushed(self, key: Key, recipients: Iterable[tuple[int, str]], count: int, kind: str = "push") -> None:
        """A gateway wrote the message to ``count`` devices; ``recipients`` lists them (only the first
        :attr:`devices` of a record are read, so a large group costs no more than a small one)."""
        record = self._record(key)
        if record is None:
            return
        record.pushed += count
        room = self.devices - len(record.pushes)
        if room > 0:
            now = _ms()
            record.pushes.extend((user, device, kind, now) for user, device in islice(recipients, room))

    def get(self, key: Key) -> TraceRecord | None:
        """The record of a message, if still kept."""
        return self._records.get(key)


def encode_request(conversation: str, seq: int) -> bytes:
    """The payload of a trace request."""
    return orjson.dumps({"c": conversation, "s": seq})


def decode_request(payload: bytes) -> Key | None:
    """``(conversation, seq)`` of a trace request, or ``None`` if it is not one (never raises)."""
    if len(payload) > 256:
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    conversation, seq = data.get("c"), data.get("s")
    if not isinstance(conversation, str) or len(conversation) > 48 or type(seq) is not int or not 0 <= seq < 2**63:
        return None
    return conversation, seq


@dataclass(frozen=True, slots=True)
class NodeTrace:
    """One node's answer to a trace request."""

    node_id: str
    role: str
    record: dict[str, Any] | None
    since: int
    """The node's ring is complete from this time (ms) on."""
    evicted: int
    capacity: int


class TraceResponder:
    """Answers trace requests from this node's ring."""

    def __init__(self, bus: Bus, node_id: str, role: str, ring: TraceRing) -> None:
        self._bus = bus
        self._node_id = node_id
        self._role = role
        self.ring = ring
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._bus.nc.subscribe(self._bus.subjects.trace, cb=self._on_request)

    async def _on_request(self, msg: Msg) -> None:
        key = decode_request(msg.data)
        if key is None or not msg.reply:
            return
        record = self.ring.get(key)
        answer = {
            "node": self._node_id,
            "role": self._role,
            "record": None if record is None else record.to_json(),
            "since": self.ring.since,
            "evicted": self.ring.evicted,
            "capacity": self.ring.capacity,
        }
        with contextlib.suppress(Exception):
            await msg.respond(orjson.dumps(answer))

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()


def _node_trace(payload: bytes) -> NodeTrace | None:
    if len(payload) > MAX_ANSWER_BYTES:
        return None
    try:
        data = orjson.loads(payload)
        record = data["record"]
        return NodeTrace(
            node_id=str(data["node"])[:128],
            role="gateway" if data["role"] == "gateway" else "api",
            record=record if isinstance(record, dict) else None,
            since=int(data["since"]),
            evicted=int(data["evicted"]),
            capacity=int(data["capacity"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def gather(
    bus: Bus, conversation: str, seq: int, expected: Sequence[str], wait: float = TRACE_TIMEOUT
) -> list[NodeTrace]:
    """Ask every node for its record of a message; waits for the ``expected`` node ids, or ``wait`` seconds."""
    nc = bus.nc
    inbox = nc.new_inbox()
    answers: dict[str, NodeTrace] = {}
    waiting = set(expected)
    done = asyncio.get_running_loop().create_future()

    async def on_answer(msg: Msg) -> None:
        answer = _node_trace(msg.data)
        if answer is None:
            return
        answers[answer.node_id] = answer
        waiting.discard(answer.node_id)
        if not waiting and not done.done():
            done.set_result(None)

    subscription = await nc.subscribe(inbox, cb=on_answer)
    try:
        await nc.publish(bus.subjects.trace, encode_request(conversation, seq), reply=inbox)
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await done
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return sorted(answers.values(), key=lambda answer: answer.node_id)
