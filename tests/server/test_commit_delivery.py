"""The window between a commit and its publish, on a real SQLite store (no timing: the pushes are held).

An ack must imply a publish (a node killed after answering has handed its pushes to the bus first), and
a retried send that finds its message already stored (a node died between its commit and its publish)
pushes it again, so no stored message waits for an unrelated sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from im_schema.content import TextContent
from im_schema.ids import direct_conversation
from im_server.services.commit import Committed, GroupCommitter
from im_server.storage import Database, MessageStore, NewMessage, UserStore

T0 = 1_700_000_000_000


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[MessageStore]:
    database = Database(sqlite_url)
    await database.migrate()
    yield MessageStore(database)
    await database.close()


async def _pair(store: MessageStore) -> tuple[int, int, str]:
    users = UserStore(store.db)
    a = (await users.create_user("alice", "hash", "A", now=T0)).id
    b = (await users.create_user("bob", "hash", "B", now=T0)).id
    conversation = direct_conversation(a, b)
    await store.ensure_direct(conversation, a, b, now=T0)
    return a, b, conversation


class HeldPushes:
    """An ``on_commit`` that records what it is given and waits until released."""

    def __init__(self) -> None:
        self.pushed: list[Committed] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, committed: Sequence[Committed]) -> None:
        self.pushed += committed
        self.entered.set()
        await self.release.wait()


async def test_a_sender_is_answered_only_after_its_pushes_were_handed_over(store):
    a, _, conversation = await _pair(store)
    pushes = HeldPushes()
    committer = GroupCommitter(store, on_commit=pushes)
    committer.start()
    try:
        future = committer.enqueue(NewMessage(conversation, a, "key-1", TextContent(text="hi")), "phone")
        await pushes.entered.wait()
        # Stored and being published: not acked yet (an ack first would leave a window in which a node
        # killed after answering never published).
        assert [entry.written.seq for entry in pushes.pushed] == [1]
        assert not future.done()
        pushes.release.set()
        written = await future
        assert (written.seq, written.duplicate) == (1, False)
    finally:
        pushes.release.set()
        await committer.stop()


async def test_a_retry_that_finds_its_message_stored_by_another_node_pushes_it_again(store):
    a, _, conversation = await _pair(store)
    # Node 1 stored the send, then died before publishing it (its pushes never leave).
    dead = HeldPushes()
    first = GroupCommitter(store, on_commit=dead)
    first.start()
    item = NewMessage(conversation, a, "retried-key", TextContent(text="hello"))
    pending = first.enqueue(item, "phone")
    await dead.entered.wait()
    assert not pending.done()  # so its sender got no answer and tries another node
    # Node 2 gets the same send (same client_msg_id): stored once, pushed by node 2.
    pushes = HeldPushes()
    pushes.release.set()
    second = GroupCommitter(store, on_commit=pushes)
    second.start()
    try:
        written = await second.enqueue(NewMessage(conversation, a, "retried-key", TextContent(text="hello")), "phone")
        assert (written.seq, written.duplicate) == (1, True)
        assert [(entry.written.seq, entry.device_id) for entry in pushes.pushed] == [(1, "phone")]
        assert second.messages == 0  # not counted as a new message
        # A repeat this node answers from memory was pushed by this node already: not again.
        again = await second.enqueue(NewMessage(conversation, a, "retried-key", TextContent(text="hello")), "phone")
        assert again.duplicate and len(pushes.pushed) == 1
    finally:
        dead.release.set()
        await first.stop()
        await second.stop()


class _Bus:
    """The bus seam of the deliverer: connected, and keeps what is published."""

    def __init__(self) -> None:
        self.nc = type("Connection", (), {"is_connected": True})()
        self.published: list[dict[str, list[tuple[bytes, list[tuple[int, str]]]]]] = []
        self.listeners: dict[str, Any] = {}

    def listen(self, **callbacks: object) -> None:
        self.listeners.update({kind: callback for kind, callback in callbacks.items() if callback is not None})

    async def publish_deliveries(self, plan: dict[str, list[tuple[bytes, list[tuple[int, str]]]]]) -> int:
        self.published.append(plan)
        return len(plan)


async def test_a_device_that_moved_off_a_dead_gateway_resyncs_for_what_was_held_back():
    from im_schema.events import PresenceNotice
    from im_server.bus.routes import NodeInfo, NodeTable, RouteTable
    from im_server.services.delivery import Deliverer
    from im_server.services.membership import MembershipCache

    clock = [0.0]
    nodes = NodeTable(ttl=1.5, clock=lambda: clock[0])
    for node in ("gw-dead", "gw-live"):
        nodes.heartbeat(NodeInfo(node_id=node, role="gateway", url=None, connections=0, started_at=0.0))
    routes = RouteTable()
    routes.set(7, "phone", "gw-dead")
    routes.set(8, "phone", "gw-live")
    mirror = type("Mirror", (), {"routes": routes, "nodes": nodes, "current": True})()
    bus = _Bus()
    deliverer = Deliverer(bus, mirror, MembershipCache(None))  # type: ignore[arg-type]
    clock[0] = 2.0  # gw-dead's heartbeat expired; gw-live keeps beating
    nodes.heartbeat(NodeInfo(node_id="gw-live", role="gateway", url=None, connections=0, started_at=0.0))
    # A message for users 7 and 8 while 7's device is still routed to the dead node: 8 gets it, 7 is held.
    await deliverer.notice([7, 8], PresenceNotice(user_id=9, online=True))
    assert [list(plan) for plan in bus.published] == [["gw-live"]]
    await deliverer.settle()
    assert len(bus.published) == 1  # 7 is still routed to the dead node: nothing to tell yet
    # 7's device reconnected on the live node (its route moved) after it had synced: it must sync again.
    routes.set(7, "phone", "gw-live")
    await deliverer.settle()
    resync = bus.published[-1]
    assert list(resync) == ["gw-live"] and resync["gw-live"][0][1] == [(7, "phone")]
    assert b'"type":"resync"' in resync["gw-live"][0][0]
    assert deliverer.owed == 0
    await deliverer.settle()
    assert len(bus.published) == 2  # told once


async def test_a_retry_of_a_send_still_being_stored_here_waits_for_it_and_is_not_pushed_again(store):
    a, _, conversation = await _pair(store)
    pushes = HeldPushes()
    committer = GroupCommitter(store, on_commit=pushes)
    committer.start()
    try:
        item = NewMessage(conversation, a, "slow-key", TextContent(text="once"))
        first = committer.enqueue(item, "phone")
        await pushes.entered.wait()  # committed, its publish held: not answered yet
        retry = committer.enqueue(item, "phone")  # a gateway that gave up waiting sends it again
        assert not retry.done()
        pushes.release.set()
        written, again = await first, await retry
        assert (written.seq, written.duplicate) == (1, False)
        assert (again.seq, again.duplicate) == (1, True)
        assert [entry.written.seq for entry in pushes.pushed] == [1]  # pushed once, not once per retry
    finally:
        pushes.release.set()
        await committer.stop()


async def test_a_retry_of_a_send_whose_sender_gave_up_is_told_to_try_again(store):
    a, _, conversation = await _pair(store)
    pushes = HeldPushes()
    committer = GroupCommitter(store, on_commit=pushes)
    committer.start()
    try:
        item = NewMessage(conversation, a, "abandoned-key", TextContent(text="hi"))
        first = committer.enqueue(item, "phone")
        await pushes.entered.wait()
        retry = committer.enqueue(item, "phone")
        first.cancel()  # the first waiter gave up
        await asyncio.sleep(0)
        with pytest.raises(Exception, match="try again"):
            await retry
        pushes.release.set()
        await asyncio.sleep(0.05)
        third = committer.enqueue(item, "phone")  # stored meanwhile: answered from memory
        assert ((await third).seq, (await third).duplicate) == (1, True)
    finally:
        pushes.release.set()
        await committer.stop()


class HeldStore(MessageStore):
    """A real store whose transactions wait until released (the writer is busy)."""

    def __init__(self, store: MessageStore) -> None:
        super().__init__(store.db)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def write_batch(self, items, *, now):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        return await super().write_batch(items, now=now)


async def test_an_overloaded_committer_refuses_new_sends_at_once_and_takes_them_again_later(store):
    from im_schema.errors import ErrorCode
    from im_server.errors import Unavailable

    a, _, conversation = await _pair(store)
    held = HeldStore(store)
    # Any wait is too long here: a send that finds another one queued is refused.
    committer = GroupCommitter(held, max_queue_wait=0.0)
    committer.start()

    def send(key: str) -> asyncio.Future:
        return committer.enqueue(NewMessage(conversation, a, key, TextContent(text=key)), "phone")

    try:
        first = send("first-key")
        await held.entered.wait()  # its transaction runs (held): the next send waits in the queue
        second = send("second-key")
        retry = send("second-key")  # a retry of a queued send adds no work: it waits for the original
        with pytest.raises(Unavailable) as refused:
            send("third-key")
        assert refused.value.code == ErrorCode.UNAVAILABLE and refused.value.retry_after
        held.release.set()
        assert [(await first).seq, (await second).seq, (await retry).seq] == [1, 2, 2]
        # The backlog is written: new sends are taken again.
        assert (await send("third-key")).seq == 3
    finally:
        held.release.set()
        await committer.stop()


class _Outage:
    """A deliverer over a fake bus and registry, with a clock of its own, for NATS outages."""

    def __init__(self) -> None:
        from im_server.bus.routes import NodeTable, RouteTable
        from im_server.services.delivery import Deliverer
        from im_server.services.membership import MembershipCache

        self.clock = [0.0]
        self.nodes = NodeTable(ttl=1.5, clock=lambda: self.clock[0])
        self.routes = RouteTable()
        self.mirror = type("Mirror", (), {"routes": self.routes, "nodes": self.nodes, "current": True})()
        self.bus = _Bus()
        self.deliverer = Deliverer(
            self.bus,  # type: ignore[arg-type]
            self.mirror,  # type: ignore[arg-type]
            MembershipCache(None),  # type: ignore[arg-type]
            clock=lambda: self.clock[0],
        )
        self.deliverer.start(3600)  # listens to the bus; settled by hand below

    def beat(self, *nodes: str) -> None:
        from im_server.bus.routes import NodeInfo

        for node in nodes:
            self.nodes.heartbeat(NodeInfo(node_id=node, role="gateway", url=None, connections=0, started_at=0.0))

    async def push(self, users: list[int], who: int = 99) -> None:
        from im_schema.events import PresenceNotice

        await self.deliverer.notice(users, PresenceNotice(user_id=who, online=True))

    async def push_while_down(self, users: list[int], who: int = 99) -> None:
        """A push made while NATS is away, then NATS comes back."""
        self.bus.nc.is_connected = False
        await self.push(users, who)
        self.bus.nc.is_connected = True
        self.bus.listeners["on_reconnect"]()

    def pushes(self) -> list[tuple[str, int, list[tuple[int, str]]]]:
        """``(node, who, recipients)`` of every presence push published."""
        return [
            (node, orjson.loads(frame)["notice"]["user_id"], recipients)
            for plan in self.bus.published
            for node, items in plan.items()
            for frame, recipients in items
            if b'"type":"notice"' in frame
        ]

    def resyncs(self) -> list[tuple[str, list[tuple[int, str]]]]:
        return [
            (node, recipients)
            for plan in self.bus.published
            for node, items in plan.items()
            for frame, recipients in items
            if b'"type":"resync"' in frame
        ]

    async def settle_at(self, when: float) -> None:
        self.clock[0] = when
        self.beat(*self.nodes.known())
        await self.deliverer.settle()


async def test_a_gateway_that_resynced_its_clients_after_an_outage_settles_what_the_api_owed():
    from im_server.services.delivery import RECOVERY_WAIT

    world = _Outage()
    world.beat("gw-1", "gw-2")
    world.routes.set(7, "phone", "gw-1")
    world.routes.set(8, "phone", "gw-2")
    await world.push_while_down([7, 8])
    await world.settle_at(1.0)  # back: both gateways live, maybe restoring their routes; nothing yet
    assert world.resyncs() == []
    # gw-1 restored its routes: the barrier answer it got carries a mark given after 7 was remembered;
    # it told every client to resync, then says so.
    mark = world.deliverer.mark()
    world.deliverer.resynced("gw-1", mark)
    await world.settle_at(1.0 + RECOVERY_WAIT + 0.1)
    # gw-2 never said so (it did not lose NATS, or its notice was lost): its device is told by the API.
    assert world.resyncs() == [("gw-2", [(8, "phone")])]
    assert world.deliverer.settled == 1 and world.deliverer.owed == 0


async def test_a_resync_announced_with_an_earlier_mark_does_not_cover_a_later_lost_push():
    from im_server.services.delivery import RECOVERY_WAIT

    world = _Outage()
    world.beat("gw-1")
    world.routes.set(7, "phone", "gw-1")
    early = world.deliverer.mark()  # answered before the push was lost: the gateway's resync came first
    await world.push_while_down([7])
    world.deliverer.resynced("gw-1", early)
    world.deliverer.resynced("gw-1", early + 5)  # a mark this node never gave: ignored
    await world.settle_at(1.0)
    await world.settle_at(1.0 + RECOVERY_WAIT + 0.1)
    assert world.resyncs() == [("gw-1", [(7, "phone")])]
    assert world.deliverer.settled == 0


async def test_resyncs_owed_on_a_gateway_that_looks_dead_wait_for_it():
    from im_server.services.delivery import RECOVERY_WAIT, UNROUTED_KEEP

    world = _Outage()
    world.beat("gw-1", "gw-2")
    world.routes.set(7, "phone", "gw-1")
    world.routes.set(8, "phone", "gw-2")
    await world.push_while_down([7, 8])
    world.clock[0] = 10.0  # the outage was longer than the TTL: neither has beaten since
    world.beat("gw-2")
    await world.deliverer.settle()
    assert world.deliverer.owed == 2  # 7's gateway is not back yet: kept, not dropped
    await world.settle_at(10.0 + RECOVERY_WAIT + 0.1)  # gw-1 beats again, and is waited for in turn
    assert world.resyncs() == [("gw-2", [(8, "phone")])]
    await world.settle_at(10.0 + 2 * RECOVERY_WAIT + 0.2)
    assert sorted(world.resyncs()) == [("gw-1", [(7, "phone")]), ("gw-2", [(8, "phone")])]
    # One that never comes back is forgotten after a while: its devices reconnect elsewhere and sync.
    await world.push_while_down([7])
    world.clock[0] = 100.0
    world.beat("gw-2")
    await world.deliverer.settle()
    world.clock[0] = 100.0 + UNROUTED_KEEP + 1
    world.beat("gw-2")
    await world.deliverer.settle()
    assert world.deliverer.owed == 0 and len(world.resyncs()) == 2


async def test_pushes_made_while_nats_is_away_wait_until_their_gateway_is_back_on_the_bus():
    from im_server.services.delivery import UNROUTED_KEEP

    world = _Outage()
    world.beat("gw-1", "gw-2")
    world.routes.set(7, "phone", "gw-1")
    world.routes.set(8, "phone", "gw-2")
    world.clock[0] = 1.0
    try:
        # Not handed to the NATS client: it would flush them before the gateways subscribe again.
        await world.push_while_down([7, 8], who=1)
        assert world.pushes() == []
        await world.deliverer.settle()  # the heartbeats known are from before NATS came back
        assert world.pushes() == []
        world.clock[0] = 1.2
        world.beat("gw-1")  # gw-1 wrote a heartbeat since: it has subscribed again
        await world.deliverer.settle()
        assert world.pushes() == [("gw-1", 1, [(7, "phone")])]
        await world.push([7, 8], who=2)  # gw-2 still has pushes held: this one waits behind them
        assert world.pushes() == [("gw-1", 1, [(7, "phone")]), ("gw-1", 2, [(7, "phone")])]
        world.clock[0] = 1.4
        world.beat("gw-2")
        await world.deliverer.settle()
        assert world.pushes()[2:] == [("gw-2", 1, [(8, "phone")]), ("gw-2", 2, [(8, "phone")])]
        await world.push([8], who=3)  # nothing held any more: straight out
        assert world.pushes()[4:] == [("gw-2", 3, [(8, "phone")])]
        # Held pushes for a gateway that never comes back are dropped after a while; their users are
        # still owed a resync (it is sent if the gateway comes back and does not say it resynced).
        await world.push_while_down([7], who=4)
        world.clock[0] = 2.0 + UNROUTED_KEEP
        world.beat("gw-2")
        await world.deliverer.settle()
        assert [who for _, who, _ in world.pushes()] == [1, 2, 1, 2, 3]
        assert world.deliverer.owed >= 1
    finally:
        await world.deliverer.stop()


@pytest.mark.parametrize(
    "notice",
    [
        b"{",
        b"{}",
        b'{"resynced": "gw-1"}',
        b'{"resynced": "", "marks": {"api-1": 1}}',
        b'{"resynced": "gw-1", "marks": ["api-1", 1]}',
        b'{"resynced": "gw-1", "marks": {"api-1": "many"}}',
        b'{"resynced": "' + b"g" * 129 + b'", "marks": {"api-1": 1}}',
        b'{"resynced": "gw-1", "marks": {' + b",".join(b'"n%d": 1' % i for i in range(1025)) + b"}}",
        b'{"resynced": "gw-1", "marks": {"api-1": 99}}',  # a mark api-1 never gave
        b'{"resynced": "gw-1", "marks": {"api-1": -1}}',
        b'{"resynced": "gw-1", "marks": {"api-2": 1}}',  # another node's mark
    ],
)
async def test_a_resync_notice_that_is_malformed_or_names_marks_never_given_settles_nothing(notice):
    from types import SimpleNamespace

    from im_server.api.node import ApiNode

    world = _Outage()
    world.deliverer.mark()  # api-1 gave mark 1
    ApiNode._on_resynced(SimpleNamespace(deliverer=world.deliverer, node_id="api-1"), notice)  # type: ignore[arg-type]
    assert world.deliverer._resynced == {}
    await world.deliverer.stop()


async def test_a_resync_notice_with_a_mark_given_is_taken():
    from types import SimpleNamespace

    from im_server.api.node import ApiNode

    world = _Outage()
    world.deliverer.mark()
    notice = b'{"resynced": "gw-1", "marks": {"api-1": 1, "api-2": 7}}'
    ApiNode._on_resynced(SimpleNamespace(deliverer=world.deliverer, node_id="api-1"), notice)  # type: ignore[arg-type]
    assert world.deliverer._resynced == {"gw-1": 1}
    await world.deliverer.stop()
