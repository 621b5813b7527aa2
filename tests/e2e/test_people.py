"""Profiles, friend requests, friendships and blocks, over the real cluster."""

from __future__ import annotations

import pytest

from im_schema.events import FriendAddedNotice, FriendRemovedNotice, FriendRequestNotice
from im_sdk import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from tests.e2e.conftest import wait_connected


@pytest.fixture(params=["sqlite", "postgres"])
def strict(request, shared_clusters):
    """A cluster that requires friendship for direct messages (the default for real deployments), on
    SQLite and on PostgreSQL, shared by the module's tests (they make users of their own)."""
    return shared_clusters(request.param, gateways=1, dm_requires_friendship=True)


async def test_profile_update_is_public(strict, closing):
    alice = await strict.user("alice")
    bob = await strict.user("bob")
    closing += [alice, bob]
    from im_schema.social import UpdateProfileRequest

    updated = await alice.request(
        UpdateProfileRequest(display_name="Alice A.", bio="likes tea", avatar="https://a/a.png")
    )
    assert (updated.display_name, updated.bio, updated.avatar) == ("Alice A.", "likes tea", "https://a/a.png")
    seen = await bob.get_user(alice.session.user.username)
    assert (seen.display_name, seen.bio) == ("Alice A.", "likes tea")
    with pytest.raises(BadRequestError):
        await alice.request(UpdateProfileRequest.model_construct(display_name="x" * 65))


async def test_friend_request_accept_remark_and_remove(strict, inboxes, closing):
    alice = await strict.user("alice")
    bob = await strict.user("bob")
    closing += [alice, bob]
    bob_in = inboxes(bob)
    await wait_connected(strict, bob)

    # Without friendship, direct messages are refused.
    with pytest.raises(ForbiddenError) as refused:
        await alice.send_text(bob.session.user.id, "hi")
    assert refused.value.code == "not_friends"

    request = await alice.friends.request(bob.session.user.username, "we met at the conference")
    assert request.status == "pending"
    notice = await bob_in.notice()
    assert isinstance(notice.notice, FriendRequestNotice)
    assert notice.notice.request.message == "we met at the conference"
    [incoming] = await bob.friends.requests()
    assert (incoming.id, incoming.from_user.id) == (request.id, alice.session.user.id)
    [outgoing] = await alice.friends.requests("outgoing")
    assert outgoing.id == request.id

    friend = await bob.friends.accept(request.id)
    assert friend.user.id == alice.session.user.id
    assert isinstance((await bob_in.notice()).notice, FriendAddedNotice)
    assert await bob.friends.requests() == []
    assert [f.user.id for f in await alice.friends.list()] == [bob.session.user.id]
    assert (await alice.friends.info(bob.session.user.id)).online  # bob's device is connected

    await alice.send_text(bob.session.user.id, "now we can talk")
    assert (await bob_in.next()).text == "now we can talk"

    await alice.friends.remark(bob.session.user.id, "Bobby")
    assert (await alice.friends.info(bob.session.user.username)).remark == "Bobby"
    assert (await bob.friends.info(alice.session.user.id)).remark is None  # remarks are private

    with pytest.raises(ConflictError) as again:
        await alice.friends.request(bob.session.user.id)
    assert again.value.code == "already_friends"

    await bob.friends.remove(alice.session.user.id)
    assert isinstance((await bob_in.notice()).notice, FriendRemovedNotice)
    assert await alice.friends.list() == []
    assert await bob.friends.list() == []
    with pytest.raises(ForbiddenError):
        await alice.send_text(bob.session.user.id, "hello?")
    with pytest.raises(NotFoundError):
        await alice.friends.info(bob.session.user.id)


async def test_mutual_requests_make_friends_and_decline_works(strict, closing):
    alice = await strict.user("alice")
    bob = await strict.user("bob")
    carol = await strict.user("carol")
    closing += [alice, bob, carol]
    await alice.friends.request(bob.session.user.id)
    crossed = await bob.friends.request(alice.session.user.id)
    assert crossed.status == "accepted"
    assert [f.user.id for f in await bob.friends.list()] == [alice.session.user.id]

    request = await carol.friends.request(alice.session.user.id)
    await alice.friends.decline(request.id)
    assert await alice.friends.requests() == []
    with pytest.raises(NotFoundError):
        await alice.friends.accept(request.id)  # declined requests are gone
    with pytest.raises(NotFoundError):
        await bob.friends.accept(request.id)  # and never bob's to decide
    with pytest.raises(BadRequestError):
        await alice.friends.request(alice.session.user.id)


async def test_blocked_users_cannot_message_or_request_and_learn_nothing(strict, inboxes, closing):
    carol = await strict.user("carol")
    dave = await strict.user("dave")
    closing += [carol, dave]
    await strict.friends(carol, dave)
    carol_in = inboxes(carol)
    await wait_connected(strict, carol)
    await dave.send_text(carol.session.user.id, "before the block")
    assert (await carol_in.next()).text == "before the block"

    await carol.friends.block(dave.session.user.id)
    assert [u.id for u in await carol.friends.blocked()] == [dave.session.user.id]
    with pytest.raises(ForbiddenError) as refused:
        await dave.send_text(carol.session.user.id, "after the block")
    assert refused.value.code == "forbidden"  # not "blocked": a block is not revealed
    await carol.friends.remove(dave.session.user.id)
    request = await dave.friends.request(carol.session.user.id, "please")
    assert request.status == "pending"  # looks like any request to dave...
    assert await carol.friends.requests() == []  # ...but carol never sees it

    await carol.friends.unblock(dave.session.user.id)
    with pytest.raises(NotFoundError):
        await carol.friends.unblock(dave.session.user.id)
    # Carol sends a request; dave's old one is pending, so they become friends at once.
    assert (await carol.friends.request(dave.session.user.id)).status == "accepted"
    await dave.send_text(carol.session.user.id, "hello again")
    assert (await carol_in.next()).text == "hello again"
    kinds = [(await carol_in.notice()).kind for _ in range(carol_in.notices.qsize())]
    assert "friend_request" not in kinds  # the request made while blocked was never announced to carol
    assert kinds[-1] == "friend_added"


async def test_bot_accounts_are_exempt_from_friendship(strict, closing):
    alice = await strict.user("alice")
    bot = await strict.user("helperbot")
    closing += [alice, bot]
    from sqlalchemy import update

    from im_server.storage.tables import users

    def make_bot(conn):
        conn.execute(update(users).where(users.c.id == bot.session.user.id).values(is_bot=True))

    await strict.loop.call(strict.api.node.db.write(make_bot))
    strict.api.node.social.forget([bot.session.user.id])
    message = await alice.send_text(bot.session.user.id, "help")
    reply = await bot.send_text(alice.session.user.id, "how can I help?")
    assert (message.seq, reply.seq) == (1, 2)
