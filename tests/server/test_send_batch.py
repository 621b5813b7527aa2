"""A batch of forwarded sends through the message service, on a real SQLite store.

Sends whose rules cached state settles are prepared without waiting; the others take the full path. Either
way the rules hold (a block refuses at once), and a device told to retry later has its later sends of the
batch refused too, so that its retried send never lands behind them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from im_schema.content import TextContent
from im_schema.errors import ErrorCode
from im_schema.ids import direct_conversation
from im_server.errors import Forbidden, ServerError
from im_server.services.commit import GroupCommitter
from im_server.services.messaging import MessagingService, Send, UserDirectory
from im_server.settings import Settings
from im_server.storage import Database, MessageStore, NewMessage, UserStore, Written

T0 = 1_700_000_000_000


class Blocks:
    """Direct-message rules: a set of (sender, recipient) pairs refused."""

    def __init__(self) -> None:
        self.blocked: set[tuple[int, int]] = set()
        self.asked = 0

    async def check(self, sender: int, recipient: int) -> None:
        self.asked += 1
        if (sender, recipient) in self.blocked:
            raise Forbidden("this user does not accept your messages")

    def cached(self, sender: int, recipient: int) -> bool | None:
        return (sender, recipient) not in self.blocked


@pytest.fixture
async def parts(sqlite_url: str) -> AsyncIterator[tuple[MessageStore, UserStore]]:
    database = Database(sqlite_url)
    await database.migrate()
    yield MessageStore(database), UserStore(database)
    await database.close()


def _send(to: int, key: str) -> Send:
    return Send(to, None, key, TextContent(text=key))


async def test_cached_rules_still_refuse_a_blocked_sender(parts):
    store, users = parts
    a = (await users.create_user("alice", "hash", "A", now=T0)).id
    b = (await users.create_user("bob", "hash", "B", now=T0)).id
    committer = GroupCommitter(store)
    committer.start()
    blocks = Blocks()
    messaging = MessagingService(
        Settings(send_rate=1000, send_burst=1000),
        store,
        UserDirectory(users),
        committer,
        check_direct=blocks.check,
        direct_allowed=blocks.cached,
    )
    try:
        first = await messaging.send_in_order([(a, "phone", _send(b, "first-key"))])
        asked = blocks.asked  # the first send took the full path (the conversation was new)
        second = await messaging.send_in_order([(a, "phone", _send(b, "second-key"))])
        assert blocks.asked == asked  # settled from cached state
        blocks.blocked.add((a, b))
        third = await messaging.send_in_order([(a, "phone", _send(b, "third-key"))])
        assert [written.seq for written in first + second if isinstance(written, Written)] == [1, 2]
        assert isinstance(third[0], Forbidden)
    finally:
        await committer.stop()


async def test_a_device_told_to_retry_has_its_later_sends_of_the_batch_refused_too(parts):
    store, users = parts
    a = (await users.create_user("alice", "hash", "A", now=T0)).id
    b = (await users.create_user("bob", "hash", "B", now=T0)).id
    c = (await users.create_user("carol", "hash", "C", now=T0)).id
    # Any wait is too long: a new send that finds another one queued is refused (the node is "busy").
    committer = GroupCommitter(store, max_queue_wait=0.0)
    committer.start()
    messaging = MessagingService(Settings(send_rate=1000, send_burst=1000), store, UserDirectory(users), committer)
    try:
        await messaging.send_in_order([(a, "phone", _send(b, "warm-up-1"))])  # alice -> bob now cached
        queued = committer.enqueue(NewMessage(direct_conversation(a, b), a, "queued-key", TextContent(text="q")))
        results = await messaging.send_in_order(
            [
                (a, "phone", _send(b, "first-key")),  # refused: a send is queued
                (c, "tablet", _send(10**9, "missing-key")),  # no such user: waits on the database meanwhile
                (a, "phone", _send(b, "later-key")),  # the queue is empty by now, but alice was told to retry
            ]
        )
        assert (await queued).seq == 2
        codes = [result.code if isinstance(result, ServerError) else None for result in results]
        assert codes == [ErrorCode.UNAVAILABLE, ErrorCode.USER_NOT_FOUND, ErrorCode.UNAVAILABLE]
        # Retried in order (one at a time: here any queued send makes the next one wait), both are stored.
        retried = [await messaging.send_in_order([(a, "phone", _send(b, key))]) for key in ("first-key", "later-key")]
        assert [result[0].seq for result in retried if isinstance(result[0], Written)] == [3, 4]
    finally:
        await committer.stop()
