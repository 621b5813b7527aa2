"""Streaming messages end to end: open, grow, finish; viewers online, connecting mid-stream, or reading
history; retries; hostile writes; idle streams closed by the sweep; two API nodes and a restart."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from im_sdk import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    StreamEvent,
)
from tests.e2e.conftest import wait_connected
from tests.support.cluster import TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster."""
    return shared_sqlite_cluster


async def _stream_event(inbox, predicate, timeout: float = 10) -> StreamEvent:
    """The first stream event that satisfies ``predicate`` (earlier, coalesced ones are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await inbox.event(StreamEvent, timeout)
            if predicate(event):
                return event


async def test_a_stream_grows_for_viewers_and_history_holds_the_final_text(cluster, inboxes, closing):
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)

    opened = await bot.open_stream(bob.session.user.id, "Hel", client_msg_id="answer-1")
    assert opened.stream == "open" and opened.content.text == "Hel"
    first = await bob_in.next()
    assert (first.seq, first.message.stream, first.text) == (opened.seq, "open", "Hel")

    progress = await bot.append_stream(opened.conversation, opened.seq, 3, "lo")
    assert (progress.length, progress.state) == (5, "open")
    grown = await _stream_event(bob_in, lambda e: e.text == "Hello")
    assert (grown.seq, grown.sender, grown.done) == (opened.seq, bot.session.user.id, False)
    again = await bot.append_stream(opened.conversation, opened.seq, 3, "lo")  # a retried write
    assert again.length == 5

    # A device connecting mid-stream reads the text so far, then sees it grow.
    phone = await cluster.device(bob, "phone")
    closing.append(phone)
    page = await phone.history(opened.conversation, after=0)
    [seen] = page.messages
    assert (seen.stream, seen.content.text) == ("open", "Hello")
    phone_in = inboxes(phone)
    await wait_connected(cluster, phone)
    await bot.append_stream(opened.conversation, opened.seq, 5, ",")
    assert (await _stream_event(phone_in, lambda e: e.text == "Hello,")).state == "open"

    final = await bot.finish_stream(opened.conversation, opened.seq, offset=6, text=" world")
    assert (final.stream, final.content.text) == ("finished", "Hello, world")
    for inbox in (bob_in, phone_in):
        closed = await _stream_event(inbox, lambda e: e.done)
        assert (closed.text, closed.state) == ("Hello, world", "finished")
    again_final = await bot.finish_stream(opened.conversation, opened.seq, offset=6, text=" world")
    assert again_final.content.text == "Hello, world"  # a retried finish answers the same

    [stored] = (await bob.history(opened.conversation, after=0)).messages
    assert (stored.stream, stored.content.text) == ("finished", "Hello, world")
    reopened = await bot.open_stream(bob.session.user.id, "Hel", client_msg_id="answer-1")
    assert (reopened.seq, reopened.stream) == (opened.seq, "finished")  # the same id opens nothing new
    with pytest.raises(ConflictError) as closed_error:
        await bot.append_stream(opened.conversation, opened.seq, 12, "!")
    assert closed_error.value.code == "stream_closed"


async def test_the_sdk_stream_finishes_abandons_and_recovers(cluster, inboxes, closing):
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    async with bot.stream(bob.session.user.id, interval=0) as stream:
        for piece in ("The ", "answer ", "is 42."):
            await stream.append(piece)
    assert stream.done and stream.message.stream == "finished"
    assert stream.message.content.text == "The answer is 42."

    broken = bot.stream(bob.session.user.id, interval=3600)

    async def fail() -> None:
        async with broken:
            await broken.append("Half an ")
            await broken.append("answer")  # waits for the interval: sent by the abandon
            raise RuntimeError("the model went away")

    with pytest.raises(RuntimeError):
        await fail()
    assert (broken.message.stream, broken.message.content.text) == ("abandoned", "Half an answer")

    async with bot.stream(bob.session.user.id) as empty:
        pass
    assert empty.message is None  # nothing appended: nothing stored

    # A restarted writer opens with the same id: an open stream is rewritten, a closed one is left alone.
    first = bot.stream(bob.session.user.id, client_msg_id="reply-to-7", interval=0)
    await first.append("draft that the crash cut")
    async with bot.stream(bob.session.user.id, client_msg_id="reply-to-7", interval=0) as second:
        await second.append("fresh ")
        await second.append("text")
    assert second.message.seq == first.message.seq
    assert second.message.content.text == "fresh text"
    async with bot.stream(bob.session.user.id, client_msg_id="reply-to-7", interval=0) as third:
        await third.append("ignored")
    assert third.done and third.message.content.text == "fresh text"
    page = await bob.history(first.message.conversation, after=0)
    assert [m.content.text for m in page.messages] == ["The answer is 42.", "Half an answer", "fresh text"]


async def test_the_blocking_client_streams_too(cluster, closing):
    from im_sdk import Client

    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    session = bot.session

    def write() -> str:
        with Client(cluster.url, access_token=session.access_token) as client:
            with client.stream(bob.session.user.id, interval=0) as stream:
                stream.append("blocking ")
                stream.append("pieces")
            return stream.message.content.text

    assert await asyncio.to_thread(write) == "blocking pieces"


async def test_hostile_writes_are_refused(make_cluster, closing):
    cluster = make_cluster(gateways=1, max_text_len=20, stream_max_open=2)
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    stranger = await cluster.user("stranger")
    closing += [bot, bob, stranger]
    stream = await bot.open_stream(bob.session.user.id, "start")
    conversation, seq = stream.conversation, stream.seq
    plain = await bot.send_text(bob.session.user.id, "plain")

    with pytest.raises(ForbiddenError):
        await bob.append_stream(conversation, seq, 5, " hijacked")  # a member, not the sender
    with pytest.raises(ForbiddenError):
        await bob.finish_stream(conversation, seq)
    with pytest.raises(NotFoundError):
        await stranger.append_stream(conversation, seq, 5, "!")  # not in the conversation
    with pytest.raises(BadRequestError):
        await bot.append_stream(conversation, plain.seq, 5, "!")  # not a streaming message
    with pytest.raises(NotFoundError):
        await bot.append_stream(conversation, 999, 0, "x")  # no such message
    with pytest.raises(NotFoundError):
        await bot.append_stream("d:999998:999999", 1, 0, "x")  # no such conversation
    with pytest.raises(ConflictError):
        await bot.append_stream(conversation, seq, 6, "x")  # past the text so far
    with pytest.raises(BadRequestError) as too_long:
        await bot.append_stream(conversation, seq, 5, "x" * 16)  # 21 characters in all
    assert too_long.value.code == "text_too_long"
    with pytest.raises(BadRequestError):
        await bot.append_stream(conversation, seq, 0, "")  # would leave it empty
    async with httpx.AsyncClient(base_url=cluster.url) as raw:
        headers = {"authorization": f"Bearer {bot.session.access_token}"}
        path = f"/v1/conversations/{conversation}/messages/{seq}/stream"
        for body in (
            {"offset": 0, "text": "x" * 16_001},  # past the schema's ceiling
            {"offset": -1, "text": "x"},
            {"offset": "5", "text": "x"},
            {"offset": 5, "text": "nul\x00"},
            {"offset": 5},
        ):
            answer = await raw.post(path, json=body, headers=headers)
            assert answer.status_code == 400, body
        answer = await raw.post(path, json={"offset": 5, "text": "x"})
        assert answer.status_code == 401
        answer = await raw.post(f"{path}/finish", json={"offset": 5}, headers=headers)
        assert answer.status_code == 400  # offset without text
    second = await bot.open_stream(bob.session.user.id, "second", client_msg_id="second-id")
    with pytest.raises(RateLimitedError) as quota:
        await bot.open_stream(bob.session.user.id, "third")  # two open at once at most here
    assert quota.value.code == "quota_exceeded"
    repeated = await bot.open_stream(bob.session.user.id, "second", client_msg_id="second-id")
    assert repeated.seq == second.seq  # a repeated open is not a new stream, even at the limit
    await bot.finish_stream(conversation, seq)
    await bot.open_stream(bob.session.user.id, "third")  # one finished: room again


async def test_write_rate_is_limited(make_cluster, closing):
    cluster = make_cluster(gateways=1, stream_write_rate=0.001, stream_write_burst=3)
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    stream = await bot.open_stream(bob.session.user.id, "a")
    for offset in range(1, 4):
        await bot.append_stream(stream.conversation, stream.seq, offset, "b")
    with pytest.raises(RateLimitedError):
        await bot.append_stream(stream.conversation, stream.seq, 4, "b")


async def test_an_idle_stream_is_abandoned(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=1, stream_idle_timeout=0.2, stream_sweep_interval=0.1)
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    stream = await bot.open_stream(bob.session.user.id, "thinking")
    closed = await _stream_event(bob_in, lambda e: e.done)
    assert (closed.seq, closed.state, closed.text) == (stream.seq, "abandoned", "thinking")
    [stored] = (await bob.history(stream.conversation, after=0)).messages
    assert stored.stream == "abandoned"
    with pytest.raises(ConflictError):
        await bot.append_stream(stream.conversation, stream.seq, 8, "...")
    await bot.open_stream(bob.session.user.id, "room again")  # closed streams do not count

    recalled = await bot.open_stream(bob.session.user.id, "regretted")
    await bot.recall(recalled.conversation, recalled.seq)
    with pytest.raises(ConflictError):
        await bot.append_stream(recalled.conversation, recalled.seq, 9, "!")  # recalled: closed


async def test_streams_live_in_the_database_across_api_nodes_and_restarts(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=1, stream_idle_timeout=3600)
    other = cluster.add_api()
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    stream = await bot.open_stream(bob.session.user.id, "one")
    from im_sdk import AsyncClient

    elsewhere = AsyncClient(other.url, access_token=bot.session.access_token)
    closing.append(elsewhere)
    await elsewhere.append_stream(stream.conversation, stream.seq, 3, " two")  # written through the other node
    assert (await _stream_event(bob_in, lambda e: e.text == "one two")).state == "open"

    cluster.loop.run(other.stop())  # that node goes away; a new one takes over
    cluster.extra_apis.remove(other)
    fresh = cluster.add_api()
    again = AsyncClient(fresh.url, access_token=bot.session.access_token)
    closing.append(again)
    await again.append_stream(stream.conversation, stream.seq, 7, " three")
    final = await bot.finish_stream(stream.conversation, stream.seq)
    assert (final.stream, final.content.text) == ("finished", "one two three")
    assert (await _stream_event(bob_in, lambda e: e.done)).text == "one two three"


async def test_writes_are_coalesced_into_few_pushes(make_cluster, inboxes, closing):
    # An interval longer than the test: the first write is pushed at once, every later one waits for the
    # next push, which only the finish sends (at once, with the final text).
    cluster = make_cluster(gateways=1, stream_push_interval=3600)
    bot = await cluster.user("bot")
    bob = await cluster.user("bob")
    closing += [bot, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    stream = await bot.open_stream(bob.session.user.id, "0")
    await bob_in.next()
    for offset in range(1, 31):
        await bot.append_stream(stream.conversation, stream.seq, offset, str(offset % 10))
    await bot.finish_stream(stream.conversation, stream.seq)
    final = "0" + "".join(str(offset % 10) for offset in range(1, 31))
    first = await bob_in.event(StreamEvent)
    assert (first.text, first.state) == ("01", "open")
    last = await bob_in.event(StreamEvent)
    assert (last.text, last.state) == (final, "finished")
    assert cluster.api.node.streams.pushes == 2


async def test_a_stream_in_a_group_reaches_every_member(sqlite_cluster, inboxes, closing):
    owner = await sqlite_cluster.user("owner")
    ann = await sqlite_cluster.user("ann")
    ben = await sqlite_cluster.user("ben")
    closing += [owner, ann, ben]
    group = await owner.groups.create("g", [ann.session.user.id, ben.session.user.id])
    boxes = [inboxes(client) for client in (owner, ben)]  # the writing device itself gets no notices
    for client in (owner, ben):
        await wait_connected(sqlite_cluster, client)
    async with ann.stream(group.conversation, interval=0) as stream:
        await stream.append("group ")
        await stream.append("answer")
        with pytest.raises(ForbiddenError):
            await ben.append_stream(group.conversation, stream.message.seq, 0, "mine now")
    for box in boxes:
        assert (await _stream_event(box, lambda e: e.done)).text == "group answer"
    await owner.groups.kick(group.id, ben.session.user.id)
    async with ben.stream(group.conversation) as refused:
        with pytest.raises(ForbiddenError):
            await refused.append("not a member any more")
