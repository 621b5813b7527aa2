"""The life of a message after it is sent: reads and receipts, recall, edit, replies, mentions, typing,
presence; with two devices of one user and a peer spread over two gateways."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from im_schema.content import RecalledContent
from im_sdk import AsyncClient, BadRequestError, ForbiddenError, NotFoundError
from im_sdk.events import EditEvent, PresenceEvent, ReadEvent, RecallEvent, TypingEvent
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, PASSWORD, TestCluster


@pytest.fixture
def cluster(module_cluster: TestCluster) -> TestCluster:
    """The module's shared cluster (see ``module_cluster``): these tests make users of their own and
    leave the nodes as they found them."""
    return module_cluster


async def _two_devices_and_a_peer(cluster, inboxes, closing):
    alice = await cluster.user("alice", device="laptop")
    node = cluster.api.node
    home = node.assign_gateway(alice.session.user.id, "laptop").node_id
    name = next(
        f"phone{i}" for i in range(100) if node.assign_gateway(alice.session.user.id, f"phone{i}").node_id != home
    )
    phone = await cluster.device(alice, name)
    bob = await cluster.user("bob")
    closing += [alice, phone, bob]
    boxes = {name: inboxes(client) for name, client in (("laptop", alice), ("phone", phone), ("bob", bob))}
    nodes = {await wait_connected(cluster, client) for client in (alice, phone, bob)}
    return alice, phone, bob, boxes, nodes


async def test_devices_see_messages_reads_recalls_and_edits(cluster, inboxes, closing):
    alice, phone, bob, boxes, nodes = await _two_devices_and_a_peer(cluster, inboxes, closing)
    assert len(nodes) == 2  # alice's two devices are on different gateways
    sent = [await bob.send_text(alice.session.user.id, f"m{i}") for i in range(1, 4)]
    for device in ("laptop", "phone"):
        assert [e.text for e in await boxes[device].take(3)] == ["m1", "m2", "m3"]
    mine = await alice.send_text(bob.session.user.id, "from the laptop")
    assert (await boxes["phone"].next()).seq == mine.seq  # the other device of the sender has it too
    assert (await boxes["bob"].next()).text == "from the laptop"

    conversation = sent[0].conversation
    await alice.mark_read(conversation, sent[1].seq)
    own = await boxes["phone"].event(ReadEvent)  # the phone clears its badge
    assert (own.user_id, own.read_seq) == (alice.session.user.id, mine.seq)
    receipt = await boxes["bob"].event(ReadEvent)  # and bob sees the read receipt
    assert (receipt.user_id, receipt.read_seq) == (alice.session.user.id, mine.seq)
    [bob_view] = await bob.conversations()
    assert bob_view.peer_read_seq == mine.seq

    recalled = await bob.recall(conversation, sent[2].seq)
    assert isinstance(recalled.content, RecalledContent)
    for device in ("laptop", "phone"):
        event = await boxes[device].event(RecallEvent)
        assert (event.conversation, event.seq, event.by) == (conversation, sent[2].seq, bob.session.user.id)
    assert (await bob.recall(conversation, sent[2].seq)).seq == sent[2].seq  # twice is harmless
    edited = await bob.edit(conversation, sent[1].seq, "m2, corrected")
    assert edited.edited_at is not None
    for device in ("laptop", "phone"):
        event = await boxes[device].event(EditEvent)
        assert (event.seq, event.text) == (sent[1].seq, "m2, corrected")

    history = {m.seq: m for m in (await phone.history(conversation, after=0)).messages}
    assert isinstance(history[sent[2].seq].content, RecalledContent)
    assert history[sent[1].seq].content.text == "m2, corrected"
    assert history[sent[1].seq].edited_at is not None
    events = [m.content.event for m in history.values() if m.content.kind == "system"]
    assert events == ["message_recalled", "message_edited"]  # one system message each, recalling twice added none


async def test_a_device_offline_during_a_recall_learns_it_by_sync(cluster, inboxes, closing):
    alice = await cluster.user("alice", device="laptop")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    message = await bob.send_text(alice.session.user.id, "oops")
    phone = await cluster.device(alice, "phone")
    closing.append(phone)
    first = inboxes(phone)
    assert (await first.next()).text == "oops"
    await first.close()  # the phone goes offline

    await bob.recall(message.conversation, message.seq)
    await bob.send_text(alice.session.user.id, "after")
    later = inboxes(phone)  # the same client comes back: it resumes from where it was
    assert (await later.event(RecallEvent)).seq == message.seq
    assert (await later.next()).text == "after"


async def test_recall_window_and_moderators(make_cluster, db_url, closing):
    cluster = make_cluster(gateways=1, db_url=db_url, recall_window=0.0, edit_window=0.0)
    owner = await cluster.user("owner")
    member = await cluster.user("member")
    other = await cluster.user("other")
    closing += [owner, member, other]
    group = await owner.groups.create("g", [member.session.user.id, other.session.user.id])
    said = await member.send_text(group.conversation, "regrettable")
    with pytest.raises(ForbiddenError):
        await member.recall(group.conversation, said.seq)  # outside the (zero) window
    with pytest.raises(ForbiddenError):
        await other.recall(group.conversation, said.seq)  # not theirs, and not a moderator
    with pytest.raises(ForbiddenError):
        await member.edit(group.conversation, said.seq, "better")  # outside the edit window
    recalled = await owner.recall(group.conversation, said.seq)  # owners and admins may, any time
    assert recalled.content.by == owner.session.user.id
    with pytest.raises(NotFoundError):
        await owner.recall(group.conversation, 999)
    first = (await owner.history(group.conversation, after=0, limit=1)).messages[0]
    with pytest.raises(ForbiddenError):
        await owner.recall(group.conversation, first.seq)  # system messages stay


async def test_unread_counts_stay_exact(cluster, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    sent = [await bob.send_text(alice.session.user.id, f"n{i}") for i in range(5)]
    conversation = sent[0].conversation

    async def unread() -> tuple[int, int]:
        [summary] = await alice.conversations()
        total = sum(s.unread for s in await alice.conversations())
        return summary.unread, total

    assert await unread() == (5, 5)
    assert (await alice.mark_read(conversation, sent[1].seq)).unread == 3
    await bob.recall(conversation, sent[3].seq)  # an unread message gone: one less
    assert await unread() == (2, 2)
    await bob.edit(conversation, sent[4].seq, "n4, edited")  # an edit adds nothing to read
    assert await unread() == (2, 2)
    await bob.recall(conversation, sent[0].seq)  # an already read message: no change
    assert await unread() == (2, 2)
    group = await bob.groups.create("g", [alice.session.user.id])  # the group_created notice is not unread
    await bob.send_text(group.conversation, "in the group")
    summaries = {s.id: s.unread for s in await alice.conversations()}
    assert summaries == {conversation: 2, group.conversation: 1}
    state = await alice.mark_read(conversation, 10**6)
    assert (state.read_seq, state.unread) == (sent[4].seq + 3, 0)  # capped at max_seq
    await alice.send_text(conversation, "back to you")
    assert {s.id: s.unread for s in await alice.conversations()}[conversation] == 0


async def test_group_receipts(cluster, closing):
    owner = await cluster.user("owner")
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    outsider = await cluster.user("out")
    closing += [owner, ann, ben, outsider]
    group = await owner.groups.create("g", [ann.session.user.id, ben.session.user.id])
    said = await owner.send_text(group.conversation, "read me")
    await ann.mark_read(group.conversation, said.seq)
    receipts = await ben.receipts(group.conversation, said.seq)
    assert receipts.read == [ann.session.user.id]
    assert receipts.unread == [ben.session.user.id]
    with pytest.raises(NotFoundError):
        await outsider.receipts(group.conversation, said.seq)


async def test_replies_quote_and_lose_the_quote_on_recall(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    bob = await cluster.user("bob")
    closing += [alice, bob]
    question = await alice.send_text(bob.session.user.id, "lunch at noon?")
    bob_in = inboxes(bob)
    received = await bob_in.next()
    answer_sent = await received.reply("yes, see you there")
    assert answer_sent.reply_to.seq == question.seq
    assert answer_sent.reply_to.preview == "lunch at noon?"
    assert answer_sent.reply_to.sender == alice.session.user.id
    with pytest.raises(BadRequestError):
        await bob.send_text(question.conversation, "to nothing", reply_to=999)
    await alice.recall(question.conversation, question.seq)
    page = await bob.history(question.conversation, after=question.seq)
    assert page.messages[0].reply_to.preview == "[recalled]"


async def test_mentions_flag_the_summary(cluster, closing):
    owner = await cluster.user("owner")
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    stranger = await cluster.user("stranger")
    closing += [owner, ann, ben, stranger]
    group = await owner.groups.create("g", [ann.session.user.id, ben.session.user.id])
    sent = await ben.send_text(group.conversation, "@ann look", mentions=[ann.session.user.id])
    assert sent.mentions == [ann.session.user.id]
    flags = {c.id: c.mentioned for c in await ann.conversations()}
    assert flags[group.conversation] is True
    assert {c.id: c.mentioned for c in await owner.conversations()}[group.conversation] is False
    await ann.mark_read(group.conversation, sent.seq)
    assert {c.id: c.mentioned for c in await ann.conversations()}[group.conversation] is False

    with pytest.raises(ForbiddenError):
        await ben.send_text(group.conversation, "@all hi", mention_all=True)
    with pytest.raises(BadRequestError):
        await ben.send_text(group.conversation, "@stranger", mentions=[stranger.session.user.id])
    await owner.send_text(group.conversation, "@all meeting", mention_all=True)
    assert {c.id: c.mentioned for c in await ann.conversations()}[group.conversation] is True
    assert {c.id: c.mentioned for c in await ben.conversations()}[group.conversation] is True


async def test_typing_reaches_members_but_never_across_a_block(make_cluster, db_url, inboxes, closing):
    cluster = make_cluster(gateways=1, db_url=db_url)
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    cat = await cluster.user("cat")
    closing += [ann, ben, cat]
    group = await ann.groups.create("g", [ben.session.user.id, cat.session.user.id])
    await cat.friends.block(ann.session.user.id)
    ben_in, cat_in = inboxes(ben), inboxes(cat)
    await wait_connected(cluster, ben)
    await wait_connected(cluster, cat)
    await ben_in.next()
    await cat_in.next()  # group_created

    await ann.typing(group.conversation)
    typing = await ben_in.event(TypingEvent)
    assert (typing.conversation, typing.user_id, typing.active) == (group.conversation, ann.session.user.id, True)
    await ann.typing(group.conversation, active=False)
    assert (await ben_in.event(TypingEvent)).active is False
    await ann.send_text(group.conversation, "sentinel")
    assert (await cat_in.next()).text == "sentinel"  # one gateway: a typing notice would have come first
    assert not any(isinstance(e, TypingEvent) for e in list(cat_in.notices._queue))
    with pytest.raises(NotFoundError):
        await (await cluster.user("nobody")).typing(group.conversation)


async def test_presence_for_friends_only(make_cluster, db_url, inboxes, closing):
    cluster = make_cluster(gateways=1, db_url=db_url)
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    dan = await cluster.user("dan")
    closing += [ann, ben, dan]
    await cluster.friends(ann, ben)
    await cluster.friends(ann, dan)
    await dan.friends.block(ann.session.user.id)
    ben_in, dan_in = inboxes(ben), inboxes(dan)
    await wait_connected(cluster, ben)
    await wait_connected(cluster, dan)

    ann_in = inboxes(ann)
    await wait_connected(cluster, ann)
    online = await ben_in.event(PresenceEvent)
    assert (online.user_id, online.online) == (ann.session.user.id, True)
    assert (await ben.presence(ann.session.user.id)).online
    with pytest.raises(NotFoundError):
        await dan.presence(ann.session.user.id)  # dan blocked ann: no presence either way
    with pytest.raises(NotFoundError):
        await ann.presence(dan.session.user.id)
    stranger = await cluster.user("stranger")
    closing.append(stranger)
    with pytest.raises(NotFoundError):
        await stranger.presence(ann.session.user.id)

    await ann_in.close()
    offline = await ben_in.event(PresenceEvent)
    assert (offline.user_id, offline.online) == (ann.session.user.id, False)
    assert offline.last_seen is not None
    seen = await ben.presence(ann.session.user.id)
    assert not seen.online
    assert seen.last_seen is not None
    assert not any(isinstance(e, PresenceEvent) for e in list(dan_in.notices._queue))


async def _sees(viewer: AsyncClient, subject: AsyncClient) -> bool:
    assert subject.session is not None
    try:
        await viewer.presence(subject.session.user.id)
    except NotFoundError:
        return False
    return True


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll ``check`` until true (a change made through one API node reaches the other's cache by NATS)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_presence_follows_social_changes_on_two_api_nodes(make_cluster, db_url, inboxes, closing):
    """Both API nodes cache the graphs; a friend added or removed, a block and a group joined or left
    through one node change what the other shows, and the pushes to friends follow (whichever node
    sends them)."""
    cluster = make_cluster(gateways=1, db_url=db_url)
    other = cluster.add_api()
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    cat = await cluster.user("cat")
    assert ben.session is not None
    ben_there = AsyncClient(other.url, backoff=FAST)  # ben's requests through the second node
    await ben_there.login(ben.session.user.username, PASSWORD, device="there")
    closing += [ann, ben, cat, ben_there]
    await cluster.friends(ann, cat)  # cat's push is the sign that ann's presence change was handled
    ben_in, cat_in = inboxes(ben), inboxes(cat)
    await wait_connected(cluster, ben)
    await wait_connected(cluster, cat)

    async def ben_sees_ann(expected: bool) -> None:
        for viewer in (ben, ben_there):
            await _until(lambda viewer=viewer: _expect(viewer, expected))

    async def _expect(viewer: AsyncClient, expected: bool) -> bool:
        return await _sees(viewer, ann) is expected

    async def ann_comes() -> object:
        ann_in = inboxes(ann)
        await wait_connected(cluster, ann)
        assert (await cat_in.event(PresenceEvent)).online is True
        return ann_in

    async def ann_goes(ann_in: object) -> None:
        await ann_in.close()
        assert (await cat_in.event(PresenceEvent)).online is False

    def pushed_to_ben() -> bool:
        return any(isinstance(event, PresenceEvent) for event in list(ben_in.notices._queue))

    await ben_sees_ann(False)  # strangers; both nodes now cache both graphs

    await cluster.friends(ann, ben)  # through the first node
    await ben_sees_ann(True)
    await ann_goes(await ann_comes())
    assert (await ben_in.event(PresenceEvent)).online is True
    assert (await ben_in.event(PresenceEvent)).online is False

    await ben_there.friends.block(ann.session.user.id)  # through the second node
    await ben_sees_ann(False)
    await ann_goes(await ann_comes())
    assert not pushed_to_ben()
    await ben_there.friends.unblock(ann.session.user.id)
    await ben_sees_ann(True)
    await ann_comes()  # the fifth change: a user's presence changes are limited to a burst of five
    assert (await ben_in.event(PresenceEvent)).online is True

    await ann.friends.remove(ben.session.user.id)
    await ben_sees_ann(False)
    group = await ann.groups.create("g", [ben.session.user.id])
    await ben_sees_ann(True)  # a fellow member: presence on request, no pushes
    await ben_there.friends.block(ann.session.user.id)
    await ben_sees_ann(False)  # never across a block, even in a group
    await ben_there.friends.unblock(ann.session.user.id)
    await ben_sees_ann(True)
    await ben_there.groups.leave(group.id)
    await ben_sees_ann(False)


async def test_graph_misses_are_read_together_and_a_change_during_the_read_is_not_cached(cluster, closing):
    """The cache's batched path on the cluster's database: several misses, one read; a graph forgotten
    while its read is under way is not kept."""
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    closing += [ann, ben]
    await cluster.friends(ann, ben)
    ids = [ann.session.user.id, ben.session.user.id, ben.session.user.id + 1_000_000]
    social = cluster.api.node.social

    async def together() -> tuple[int, dict[int, object]]:
        social.forget(ids)
        runs = social._loader.runs
        graphs = await social.graphs(ids)
        return social._loader.runs - runs, graphs

    runs, graphs = await cluster.loop.call(together())
    assert runs == 1
    assert graphs[ids[0]].friends == {ids[1]} and graphs[ids[1]].friends == {ids[0]}
    assert not graphs[ids[2]].friends

    async def forgotten_while_read() -> tuple[object, bool]:
        social.forget(ids[:1])
        task = asyncio.create_task(social.graph(ids[0]))
        async with asyncio.timeout(10):
            while ids[0] not in social._loading:
                await asyncio.sleep(0)
        social.forget(ids[:1])
        return await task, ids[0] in social._graphs

    graph, cached = await cluster.loop.call(forgotten_while_read())
    assert graph.friends == {ids[1]}
    assert not cached
