"""Routing committed messages to the gateway nodes that hold their recipients' devices.

A push is a notification, storage is the truth; but a push that is lost must not leave a device
waiting until something unrelated happens. So the deliverer remembers who may have missed one, and
sends them a ``resync`` frame (the device runs its sync) as soon as it can:

- **NATS away**: pushes are not handed to the NATS client while it is disconnected (it would flush
  them the moment it reconnects, before the gateways have subscribed again, and they would be lost):
  they are held, per gateway node, and published once that node's heartbeat shows it back on the bus
  (a heartbeat written after this node reconnected: its subscription is in place by then); pushes to
  that node wait behind them, in order. Held pushes are bounded in bytes and kept a minute at most;
  their users are remembered for a resync all the same.
- **NATS away**, and what may still be lost: the users of every push held while disconnected, or
  published in the few seconds before the disconnect was noticed (those bytes may have gone into a
  dead socket), or whose publish failed, get a resync once the connection and the registry views are
  back, on each gateway that holds one of their devices (a gateway that looks dead is waited for, up
  to a minute: its devices reconnect elsewhere and sync).
  A gateway that lost NATS too tells all its clients to resync by itself once its routes are back; it
  then says so on the barrier subject, with the *mark* each API node gave it in the route barrier (see
  :meth:`Deliverer.mark`). What was remembered before that mark needs no second resync on that gateway:
  its clients synced after it. So an API node waits a few seconds after a gateway is live again before
  sending it the resyncs it owes, and a device gets one resync after an outage, not two.
- **No live route**: a device routed to a node whose heartbeat expired gets no push. If that node turns
  out to be alive (it was cut off, or its event loop stalled), its users on it get a resync when its
  heartbeat is seen again. If it stays dead, each such user gets a resync on their live devices once
  none of them is routed to it any more (a device that reconnected elsewhere may have synced before
  the message that was held back); a node is forgotten after a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import orjson
from pydantic import BaseModel

from im_schema.frames import ResyncFrame
from im_schema.ids import direct_users

from ..bus.nats import Bus, RegistryMirror
from ..bus.routes import plan_delivery
from ..cluster.metrics import SIZE_BUCKETS, Registry
from ..cluster.trace import TraceRing, frame_key
from ..storage import Written
from .commit import Committed
from .membership import MembershipCache

__all__ = ["Deliverer", "ack_frame", "message_frame", "notice_frame"]

log = logging.getLogger(__name__)

SUSPECT_WINDOW = 2.0
"""Seconds before a noticed disconnect during which publishes may have been lost."""
UNROUTED_KEEP = 60.0
"""Seconds users are remembered for a node that looked dead, in case it comes back."""
MAX_REMEMBERED = 200_000
"""Beyond this many remembered users, every connected device is told to resync instead."""
MAX_HELD_BYTES = 16 * 1024 * 1024
"""Pushes held while NATS is away, in bytes; beyond, they are dropped (their users resync)."""
RECOVERY_WAIT = 3.0
"""Seconds a gateway, once live again, gets to announce that its clients resynced before the resyncs
owed to its devices are sent anyway."""


class Deliverer:
    """Encodes each message once and publishes once per gateway node."""

    def __init__(
        self,
        bus: Bus,
        mirror: RegistryMirror,
        memberships: MembershipCache,
        metrics: Registry | None = None,
        *,
        trace: TraceRing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        metrics = metrics or Registry()
        self._clock = clock
        self.trace = trace
        """Where stored and published messages are remembered for ``im cluster trace``."""
        self._recipients = metrics.histogram(
            "im_delivery_recipients", "Devices one pushed frame goes to, over all gateways.", SIZE_BUCKETS
        )
        self._deliveries = metrics.counter(
            "im_deliveries_total", "Pushed frames published to gateways, counted once per recipient device."
        )
        self._bus = bus
        self._mirror = mirror
        self._memberships = memberships
        self.publishes = 0
        self.resyncs = 0
        """Resync publishes sent (one per gateway node per round)."""
        self.settled = 0
        """Owed resyncs (one per user and gateway) dropped because that gateway's own resync covered them."""
        self._mark = 0
        self._suspect: dict[int, int] = {}
        """Users who may have missed a push, with the mark when they were remembered."""
        self._everyone: int | None = None
        """The mark when every user was remembered (too many to list), if they were."""
        self._owed: dict[str, tuple[dict[int, int], float]] = {}
        """Per gateway node: the users owed a resync there (with their marks), and since when."""
        self._resynced: dict[str, int] = {}
        """Per gateway node: the greatest mark after which it told every client to resync."""
        self._live_since: dict[str, float] = {}
        """When each node was first seen live since the registry views came back."""
        self._held: dict[str, tuple[list[tuple[bytes, list[tuple[int, str]]]], float]] = {}
        """Per gateway node: pushes held until it is seen back on the bus, and since when."""
        self._held_bytes = 0
        self._back_at: float | None = None
        """When the NATS connection last came back."""
        self._recent: dict[int, float] = {}
        self._unrouted: dict[str, tuple[set[int], float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, interval: float) -> None:
        """Follow the bus, and try every ``interval`` seconds to send the resyncs that are owed."""
        self._bus.listen(on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)
        self._task = asyncio.create_task(self._run(interval), name="resync")

    async def stop(self) -> None:
        """Stop sending resyncs."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def owed(self) -> int:
        """Users remembered for a resync (once per gateway node holding one of their devices)."""
        return (
            len(self._suspect)
            + sum(len(users) for users, _ in self._owed.values())
            + sum(len(users) for users, _ in self._unrouted.values())
        )

    def mark(self) -> int:
        """A new mark, for an answer to a gateway's route barrier: everything remembered so far is below it."""
        self._mark += 1
        return self._mark

    def resynced(self, node: str, mark: int) -> None:
        """Gateway ``node`` told every client to resync after it was given ``mark`` (see :meth:`mark`)."""
        if 0 < mark <= self._mark:  # a mark this node never gave covers nothing
            self._resynced[node] = max(self._resynced.get(node, 0), mark)

    def _on_disconnect(self) -> None:
        now = self._clock()
        self._remember(user for user, at in self._recent.items() if now - at < SUSPECT_WINDOW)
        self._recent.clear()
        self._live_since.clear()

    def _on_reconnect(self) -> None:
        self._back_at = self._clock()

    def _remember(self, users: Iterable[int]) -> None:
        mark = self._mark
        if self._everyone is not None:
            self._everyone = mark
            return
        suspect = self._suspect
        for user in users:
            suspect[user] = mark
        if len(suspect) > MAX_REMEMBERED:
            self._everyone = mark
            suspect.clear()

    async def _run(self, interval: float) -> None:
        while True:
            # Held pushes go out as soon as their node is back: look more often while there are some.
            await asyncio.sleep(min(interval, 0.05) if self._held else interval)
            try:
                await self.settle()
            except Exception as exc:
                log.warning("resyncs not sent yet: %s", exc)

    async def settle(self) -> None:
        """Send the resyncs that are owed, if NATS and the registry views are back."""
        if not self._bus.nc.is_connected or not self._mirror.current:
            return
        now = self._clock()
        for user, at in list(self._recent.items()):
            if now - at >= SUSPECT_WINDOW:
                del self._recent[user]
        routes, nodes = self._mirror.routes, self._mirror.nodes
        for node, (items, since) in list(self._held.items()):
            beat = nodes.beat_at(node)
            back = nodes.is_live(node) and beat is not None and (self._back_at is None or beat > self._back_at)
            if not back and now - since <= UNROUTED_KEEP:
                continue
            # Taken out first: pushes made while this one is published go straight to the node, after it.
            del self._held[node]
            self._held_bytes -= sum(len(frame) for frame, _ in items)
            # Held pushes not published (a node that never came back, or an error) are not lost: their
            # users were remembered for a resync when they were held.
            if back:
                await self._bus.publish_deliveries({node: items})
                self._published({node: items})
        live = {info.node_id for info in nodes.live()}
        for node in list(self._live_since):
            if node not in live:
                del self._live_since[node]
        for node in live:
            self._live_since.setdefault(node, now)
        if self._everyone is not None or self._suspect:
            # Where each user's devices are now; a device that moves later syncs when it connects.
            if self._everyone is not None:
                everyone = self._everyone
                suspect = dict.fromkeys(routes.users(), everyone)
            else:
                suspect = self._suspect
            self._suspect, self._everyone = {}, None
            for user, mark in suspect.items():
                for node in set(routes.devices(user).values()):
                    owed, _ = self._owed.get(node, ({}, now))
                    owed[user] = max(owed.get(user, mark), mark)
                    self._owed[node] = (owed, now)  # kept a minute after the last one owed
        for node, (owed, since) in list(self._owed.items()):
            covered = self._resynced.get(node, 0)
            if covered:
                for user in [user for user, mark in owed.items() if mark < covered]:
                    del owed[user]
                    self.settled += 1
            if not owed:
                del self._owed[node]
                continue
            if node not in live:
                if now - since > UNROUTED_KEEP:
                    del self._owed[node]  # it stayed dead: its devices reconnected elsewhere and synced
                continue
            if now - self._live_since[node] < RECOVERY_WAIT:
                continue  # it may be restoring its routes, to tell every client to resync itself
            recipients = [
                (user, device) for user in owed for device, where in routes.devices(user).items() if where == node
            ]
            if recipients:
                await self._bus.publish_deliveries({node: [(_RESYNC_LOST, recipients)]})
                self.resyncs += 1
                log.info("sent resync to %d devices on %s whose pushes may have been lost", len(recipients), node)
            del self._owed[node]
        for node, (held, since) in list(self._unrouted.items()):
            if nodes.is_live(node):
                plan = plan_delivery([(_RESYNC_UNROUTED, held, None)], routes, nodes)
                if node in plan:
                    await self._bus.publish_deliveries({node: plan[node]})
                    self.resyncs += 1
                    log.info("node %s is back: sent resync to %d users", node, len(held))
                del self._unrouted[node]
                continue
            # A device that left the dead node may have reconnected elsewhere before this node's routes
            # showed it (its gateway's route barrier can time out under load), and synced before the
            # message it was not pushed: once none of a user's devices is routed to the dead node any
            # more, the user's live devices resync (those that did not move just sync once more).
            moved = [user for user in held if node not in routes.devices(user).values()]
            if moved:
                plan = plan_delivery([(_RESYNC_UNROUTED, moved, None)], routes, nodes)
                if plan:
                    await self._bus.publish_deliveries(plan)
                    self.resyncs += len(plan)
                held.difference_update(moved)
            if not held or now - since > UNROUTED_KEEP:
                del self._unrouted[node]

    async def recipients(self, written: Written) -> Iterable[int]:
        """The users a stored message goes to."""
        if written.conversation.startswith("d:"):
            return direct_users(written.conversation)
        return await self._memberships.recipients(written.conversation, written.seq, written.members_version)

    async def __call__(self, committed: Sequence[Committed]) -> None:
        frames = []
        for entry in committed:
            written = entry.written
            if self.trace is not None:
                self.trace.stored((written.conversation, written.seq))
            skip = (written.sender, entry.device_id) if entry.device_id is not None else None
            frames.append((message_frame(written.json), await self.recipients(written), skip))
        await self._publish(frames)

    async def written(self, written: Written) -> None:
        """Deliver a message the server wrote itself (a group change)."""
        if self.trace is not None:
            self.trace.stored((written.conversation, written.seq))
        await self._publish([(message_frame(written.json), await self.recipients(written), None)])

    async def notice(self, users: Iterable[int], notice: BaseModel, skip: tuple[int, str] | None = None) -> None:
        """Push a notice to every online device of ``users`` (but ``skip``)."""
        await self._publish([(notice_frame(notice), list(users), skip)])

    async def _publish(self, frames: list[tuple[bytes, Iterable[int], tuple[int, str] | None]]) -> None:
        unrouted: dict[str, set[int]] = {}
        plan = plan_delivery(frames, self._mirror.routes, self._mirror.nodes, unrouted)
        if unrouted:
            now = self._clock()
            for node, users in unrouted.items():
                known, since = self._unrouted.get(node, (set(), now))
                known.update(users)
                self._unrouted[node] = (known, since)
        if not plan:
            return
        connected = self._bus.nc.is_connected
        if not connected or self._held:
            held = {node: items for node, items in plan.items() if not connected or node in self._held}
            if held:
                self._hold(held)
                plan = {node: items for node, items in plan.items() if node not in held}
                if not plan:
                    return
        users = _users(plan)
        try:
            await self._bus.publish_deliveries(plan)
        except Exception as exc:
            log.warning("push of %d frames not published (%s); their users will resync", len(frames), exc)
            self._remember(users)
            return
        self._published(plan)
        now = self._clock()
        recent = self._recent
        for user in users:
            recent[user] = now

    def _hold(self, plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]]) -> None:
        """Keep pushes until their node is back on the bus (see :meth:`settle`); their users resync anyway."""
        self._remember(_users(plan))
        now = self._clock()
        for node, items in plan.items():
            size = sum(len(frame) for frame, _ in items)
            if self._held_bytes + size > MAX_HELD_BYTES:
                continue  # dropped: the resync brings them
            self._held_bytes += size
            held, _ = self._held.setdefault(node, ([], now))
            held.extend(items)

    def _published(self, plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]]) -> None:
        self.publishes += len(plan)
        per_frame: dict[int, int] = {}
        for items in plan.values():
            for frame, recipients in items:
                per_frame[id(frame)] = per_frame.get(id(frame), 0) + len(recipients)
        for count in per_frame.values():
            self._recipients.observe(count)
        if self.trace is not None:
            self._trace_published(plan)
        self._deliveries.inc(sum(per_frame.values()))

    def _trace_published(self, plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]]) -> None:
        assert self.trace is not None
        for node, items in plan.items():
            for frame, recipients in items:
                found = frame_key(frame)
                if found is not None:
                    self.trace.published(found[1], node, len(recipients))


def _users(plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]]) -> set[int]:
    return {user for items in plan.values() for _, recipients in items for user, _ in recipients}


_RESYNC_LOST = ResyncFrame(reason="pushes may have been lost while the bus was away").model_dump_json().encode()
_RESYNC_UNROUTED = ResyncFrame(reason="pushes were held back while your node looked down").model_dump_json().encode()


def message_frame(message_json: bytes) -> bytes:
    """The ``message`` frame around an already-serialized message."""
    return b'{"type":"message","message":' + message_json + b"}"


def notice_frame(notice: BaseModel) -> bytes:
    """The ``notice`` frame for a notice."""
    return b'{"type":"notice","notice":' + notice.__pydantic_serializer__.to_json(notice) + b"}"


def ack_frame(client_msg_id: str, message_json: bytes) -> bytes:
    """The ``ack`` frame around an already-serialized message."""
    return b'{"type":"ack","client_msg_id":%b,"message":%b}' % (orjson.dumps(client_msg_id), message_json)
