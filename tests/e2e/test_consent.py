"""Consent in groups over a real cluster: blocks, the "who can add me to groups" setting, invitations
(accept, decline, withdraw, expiry), the creation and invitation limits, and hostile input."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from im_schema.content import SystemContent
from im_schema.events import GroupInvitationNotice
from im_sdk import BadRequestError, ForbiddenError, NotFoundError, RateLimitedError, UserNotFoundError
from im_sdk.events import NoticeEvent
from tests.e2e.conftest import wait_connected
from tests.support.cluster import TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


def _id(client):
    return client.session.user.id


async def _invitation_notice(inbox):
    event = await inbox.event(NoticeEvent)
    while not isinstance(event.notice, GroupInvitationNotice):
        event = await inbox.event(NoticeEvent)
    return event.notice.invitation


async def _until(predicate, timeout: float = 10):
    """Poll an async predicate until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def consenting(request, shared_clusters):
    """A cluster with the shipped default (``friends``), on SQLite and on PostgreSQL (shared by the
    module's tests with the same settings: they make users of their own)."""

    def make(**settings):
        return shared_clusters(request.param, gateways=1, group_invites_default="friends", **settings)

    return make


# Blocks -------------------------------------------------------------------------------------------


async def test_a_blocked_user_cannot_put_the_blocker_into_a_group(cluster, inboxes, closing):
    alice = await cluster.user("alice")
    mallory = await cluster.user("mallory")
    bob = await cluster.user("bob")
    closing += [alice, mallory, bob]
    alice_in = inboxes(alice)
    await wait_connected(cluster, alice)

    # Before the block alice is in mallory's group; she blocks mallory and leaves.
    old = await mallory.groups.create("before", [_id(alice)])
    assert old.member_count == 2
    await alice.friends.block(_id(mallory))
    await alice.groups.leave(old.id)

    # Mallory cannot bring her back, nor create a group with her: she gets a hidden invitation, which
    # tells mallory nothing of the block.
    again = await mallory.groups.invite(old.id, [_id(alice)])
    assert again.member_count == 1
    created = await mallory.groups.create("after", [_id(alice), _id(bob)])
    assert created.member_count == 2  # mallory and bob
    [hidden] = await mallory.groups.invitations(created.id)
    assert (hidden.invitee.id, hidden.status) == (_id(alice), "pending")
    assert [i.invitee.id for i in await mallory.groups.invitations(old.id)] == [_id(alice)]

    # Alice never sees them and cannot accept them.
    assert await alice.groups.invitations() == []
    with pytest.raises(NotFoundError) as missing:
        await alice.groups.accept(hidden.id)
    assert missing.value.code == "invitation_not_found"
    with pytest.raises(NotFoundError):
        await alice.groups.decline(hidden.id)
    assert [g.id for g in await alice.groups.list()] == []
    # The first notice alice gets is bob's invitation, not mallory's: hers were never announced.
    await alice.friends.set_privacy(group_invites="nobody")
    bobs = await bob.groups.create("bob's", [_id(alice)])
    notice = await _invitation_notice(alice_in)
    assert (notice.group_id, notice.inviter.id) == (bobs.id, _id(bob))
    assert [i.group_id for i in await alice.groups.invitations()] == [bobs.id]


async def test_the_blocker_cannot_add_the_blocked_user_either(cluster, closing):
    alice = await cluster.user("alice")
    mallory = await cluster.user("mallory")
    bob = await cluster.user("bob")
    closing += [alice, mallory, bob]
    await alice.friends.block(mallory.session.user.username)

    with pytest.raises(ForbiddenError) as refused:
        await alice.groups.create("mine", [_id(bob), _id(mallory)])
    assert refused.value.code == "user_blocked"
    assert await alice.groups.list() == []  # nothing was created, bob was not added either

    group = await alice.groups.create("mine", [_id(bob)], join_policy="approval")
    with pytest.raises(ForbiddenError) as refused:
        await alice.groups.invite(group.id, [_id(mallory)])
    assert refused.value.code == "user_blocked"
    # Approving a join request is adding too.
    await mallory.groups.join(group.id)
    [request] = await alice.groups.requests(group.id)
    with pytest.raises(ForbiddenError):
        await alice.groups.approve(group.id, request.id)
    # Another admin may let mallory in: alice's block is hers, not the group's.
    await alice.groups.add_admin(group.id, _id(bob))
    await bob.groups.approve(group.id, request.id)
    assert (await mallory.groups.info(group.id)).my_role == "member"


async def test_a_block_after_the_invitation_voids_it(cluster, closing):
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    closing += [owner, guest]
    await guest.friends.set_privacy(group_invites="nobody")
    group = await owner.groups.create("g", [_id(guest)])
    [invitation] = await guest.groups.invitations()
    await owner.friends.block(_id(guest))  # either side's block voids it
    assert await guest.groups.invitations() == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(invitation.id)
    await owner.friends.unblock(_id(guest))
    joined = await guest.groups.accept(invitation.id)
    assert (joined.id, joined.my_role) == (group.id, "member")


# Privacy ------------------------------------------------------------------------------------------


async def test_each_privacy_value(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    friend = await cluster.user("friend")
    stranger = await cluster.user("stranger")
    closing += [owner, friend, stranger]
    await cluster.friends(owner, friend)
    stranger_in = inboxes(stranger)
    await wait_connected(cluster, stranger)

    # friends (the default): a friend is added, a stranger invited and told.
    assert (await stranger.friends.privacy()).group_invites == "friends"
    group = await owner.groups.create("club", [_id(friend), stranger.session.user.username])
    assert group.member_count == 2
    notice = await _invitation_notice(stranger_in)
    assert (notice.group_id, notice.group_name, notice.status) == (group.id, "club", "pending")
    assert (notice.inviter.id, notice.invitee.id) == (_id(owner), _id(stranger))
    assert [i.id for i in await stranger.groups.invitations()] == [notice.id]

    # everyone: added at once.
    assert (await stranger.friends.set_privacy(group_invites="everyone")).group_invites == "everyone"
    other = await owner.groups.create("open door", [_id(stranger)])
    assert other.member_count == 2
    assert (await stranger.groups.info(other.id)).my_role == "member"

    # nobody: even a friend only invites.
    assert (await friend.friends.set_privacy(group_invites="nobody")).group_invites == "nobody"
    third = await owner.groups.create("quiet", [_id(friend)])
    assert third.member_count == 1
    assert [i.group_id for i in await friend.groups.invitations()] == [third.id]
    assert (await friend.friends.privacy()).group_invites == "nobody"
    assert (await friend.friends.set_privacy()).group_invites == "nobody"  # nothing given: unchanged


async def test_privacy_rejects_unknown_values(cluster, closing):
    user = await cluster.user("u")
    closing.append(user)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        headers = {"Authorization": f"Bearer {user.session.access_token}"}
        for body in ({"group_invites": "strangers"}, {"group_invites": 1}, {"other": "x"}, []):
            response = await http.patch("/v1/me/privacy", json=body, headers=headers)
            assert response.status_code == 400, body
            assert response.json()["error"]["code"] == "bad_request"
        assert (await http.get("/v1/me/privacy")).status_code == 401


# Invitations --------------------------------------------------------------------------------------


async def test_accept_joins_with_a_system_message(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    closing += [owner, guest]
    owner_in = inboxes(owner)
    await wait_connected(cluster, owner)
    group = await owner.groups.create("g")
    await owner.groups.invite(group.id, [_id(guest)])
    [invitation] = await guest.groups.invitations()
    assert (await owner.groups.info(group.id)).member_count == 1

    joined = await guest.groups.accept(invitation.id)
    assert (joined.my_role, joined.member_count) == ("member", 2)
    event = await owner_in.next()
    while event.message.seq < 2:  # group_created was 1
        event = await owner_in.next()
    content = event.message.content
    assert isinstance(content, SystemContent)
    assert (content.event, content.data) == ("members_joined", {"users": [_id(guest)], "via": "invitation"})
    assert event.message.sender == _id(owner)
    assert event.message.seq == 2
    assert await guest.groups.invitations() == []
    assert await owner.groups.invitations(group.id) == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(invitation.id)  # answered already
    await owner.send_text(group.conversation, "welcome")
    page = await guest.history(group.conversation)
    assert [m.content.event for m in page.messages if isinstance(m.content, SystemContent)] == ["members_joined"]
    assert [m.content.text for m in page.messages if m.content.kind == "text"] == ["welcome"]


async def test_decline_and_the_cool_down(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    closing += [owner, guest]
    guest_in = inboxes(guest)
    await wait_connected(cluster, guest)
    group = await owner.groups.create("g", [_id(guest)])
    created = await _invitation_notice(guest_in)
    await guest.groups.decline(created.id)
    declined = await _invitation_notice(guest_in)  # my other devices learn it
    assert (declined.id, declined.status) == (created.id, "declined")
    assert await guest.groups.invitations() == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(created.id)

    # Inviting again at once does nothing (no invitation, no notice), and is not an error.
    assert (await owner.groups.invite(group.id, [_id(guest)])).member_count == 1
    assert await owner.groups.invitations(group.id) == []
    assert await guest.groups.invitations() == []

    # Without the cool-down a new invitation goes out.
    quick = consenting(group_invitation_cooldown=0)
    owner2 = await quick.user("owner")
    guest2 = await quick.user("guest")
    closing += [owner2, guest2]
    group2 = await owner2.groups.create("g", [_id(guest2)])
    [first] = await guest2.groups.invitations()
    await guest2.groups.decline(first.id)
    await owner2.groups.invite(group2.id, [_id(guest2)])
    [second] = await guest2.groups.invitations()
    assert second.id != first.id


async def test_withdraw(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    member = await cluster.user("member")
    guest = await cluster.user("guest")
    other = await cluster.user("other")
    closing += [owner, member, guest, other]
    await cluster.friends(owner, member)
    guest_in = inboxes(guest)
    await wait_connected(cluster, guest)
    group = await owner.groups.create("g", [_id(member)])
    await member.groups.invite(group.id, [_id(guest)])
    await owner.groups.invite(group.id, [_id(other)])
    invitation = await _invitation_notice(guest_in)

    # A member sees and withdraws only their own; the owner and admins see all.
    assert [i.invitee.id for i in await member.groups.invitations(group.id)] == [_id(guest)]
    assert sorted(i.invitee.id for i in await owner.groups.invitations(group.id)) == sorted([_id(guest), _id(other)])
    [others] = [i for i in await owner.groups.invitations(group.id) if i.invitee.id == _id(other)]
    with pytest.raises(NotFoundError):
        await member.groups.withdraw(group.id, others.id)
    with pytest.raises(ForbiddenError):
        await guest.groups.invitations(group.id)  # not a member: sees no group's invitations
    with pytest.raises(ForbiddenError):
        await guest.groups.withdraw(group.id, invitation.id)

    await member.groups.withdraw(group.id, invitation.id)
    withdrawn = await _invitation_notice(guest_in)
    assert (withdrawn.id, withdrawn.status) == (invitation.id, "withdrawn")
    assert await guest.groups.invitations() == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(invitation.id)
    await owner.groups.withdraw(group.id, others.id)
    assert await owner.groups.invitations(group.id) == []
    with pytest.raises(NotFoundError):
        await owner.groups.withdraw(group.id, others.id)


async def test_invitations_expire(consenting, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    closing += [owner, guest]
    group = await owner.groups.create("g", [_id(guest)])
    [invitation] = await guest.groups.invitations()
    assert invitation.expires_at > invitation.created_at

    # The clock moves past the invitation's lifetime (its deadline is in the database, like the server's).
    from sqlalchemy import update

    from im_server.storage.tables import group_invitations

    def lapse(conn):
        conn.execute(update(group_invitations).where(group_invitations.c.group_id == group.id).values(expires_at=0))

    await cluster.loop.call(cluster.api.node.db.write(lapse))
    assert await guest.groups.invitations() == []
    assert await owner.groups.invitations(group.id) == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(invitation.id)
    # An expired invitation does not stand in the way of a new one.
    await owner.groups.invite(group.id, [_id(guest)])
    [fresh] = await guest.groups.invitations()
    assert fresh.id != invitation.id


async def test_invitations_of_a_dissolved_group_or_a_departed_inviter_are_void(consenting, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    member = await cluster.user("member")
    guest = await cluster.user("guest")
    closing += [owner, member, guest]
    await cluster.friends(owner, member)
    group = await owner.groups.create("g", [_id(member)])
    await member.groups.invite(group.id, [_id(guest)])
    [invitation] = await guest.groups.invitations()
    await member.groups.leave(group.id)
    assert await guest.groups.invitations() == []
    with pytest.raises(NotFoundError):
        await guest.groups.accept(invitation.id)

    await owner.groups.invite(group.id, [_id(guest)])
    [second] = await guest.groups.invitations()
    await owner.groups.dissolve(group.id)
    assert await guest.groups.invitations() == []
    with pytest.raises(ForbiddenError) as dissolved:
        await guest.groups.accept(second.id)
    assert dissolved.value.code == "group_dissolved"


async def test_a_pending_invitee_gets_no_messages_and_no_presence(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    closing += [owner, guest]
    guest_in = inboxes(guest)
    await wait_connected(cluster, guest)
    group = await owner.groups.create("g", [_id(guest)])
    await _invitation_notice(guest_in)

    await owner.send_text(group.conversation, "members only")
    await owner.send_text(guest.session.user.username, "direct")  # DMs need no friendship in tests
    first = await guest_in.next()
    assert (first.conversation, first.text) != (group.conversation, "members only")
    assert first.text == "direct"
    assert group.conversation not in [c.id for c in await guest.conversations()]
    with pytest.raises((ForbiddenError, NotFoundError)):
        await guest.history(group.conversation)
    with pytest.raises(ForbiddenError):
        await guest.groups.members(group.id)
    with pytest.raises(NotFoundError):
        await guest.presence(_id(owner))
    with pytest.raises(NotFoundError):
        await owner.presence(_id(guest))

    [invitation] = await guest.groups.invitations()
    await guest.groups.accept(invitation.id)
    assert (await guest.presence(_id(owner))).user_id == _id(owner)


# Limits -------------------------------------------------------------------------------------------


async def test_creation_and_invitation_limits(make_cluster, db_url, closing):
    cluster = make_cluster(gateways=1, db_url=db_url, group_creates_per_day=2, group_invites_per_hour=3)
    owner = await cluster.user("owner")
    users = [await cluster.user("u") for _ in range(5)]
    closing += [owner, *users]

    first = await owner.groups.create("one", [_id(users[0])])
    await owner.groups.create("two")
    with pytest.raises(RateLimitedError) as limited:
        await owner.groups.create("three")
    assert limited.value.code == "rate_limited"
    assert 0 < limited.value.retry_after <= 24 * 3600

    # One used at creation; two more fit, the next does not (added and invited both count).
    await owner.groups.invite(first.id, [_id(users[1]), _id(users[2])])
    with pytest.raises(RateLimitedError) as limited:
        await owner.groups.invite(first.id, [_id(users[3])])
    assert 0 < limited.value.retry_after <= 3600
    assert (await owner.groups.info(first.id)).member_count == 4
    # Repeating an add of members already in costs nothing.
    assert (await owner.groups.invite(first.id, [_id(users[1])])).member_count == 4
    # A list longer than an hour's allowance is refused outright.
    with pytest.raises(BadRequestError):
        await owner.groups.invite(first.id, [_id(u) for u in users])

    async with httpx.AsyncClient(base_url=cluster.url) as http:
        response = await http.post(
            f"/v1/groups/{first.id}/invite",
            json={"users": [_id(users[4])]},
            headers={"Authorization": f"Bearer {owner.session.access_token}"},
        )
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "rate_limited"

    # The limits are per user: another member may still invite.
    await owner.groups.transfer(first.id, _id(users[0]))
    assert (await users[0].groups.invite(first.id, [_id(users[4])])).member_count == 5


# Hostile input ------------------------------------------------------------------------------------


async def test_hostile_invitations(consenting, inboxes, closing):
    cluster = consenting()
    owner = await cluster.user("owner")
    guest = await cluster.user("guest")
    stranger = await cluster.user("stranger")
    closing += [owner, guest, stranger]
    guest_in = inboxes(guest)
    await wait_connected(cluster, guest)
    group = await owner.groups.create("g")

    # Inviting myself, a user who does not exist.
    assert (await owner.groups.invite(group.id, [_id(owner)])).member_count == 1
    assert await owner.groups.invitations(group.id) == []
    with pytest.raises(UserNotFoundError):
        await owner.groups.invite(group.id, [10**12])
    with pytest.raises(UserNotFoundError):
        await owner.groups.invite(group.id, ["nobody-by-that-name"])
    with pytest.raises(UserNotFoundError):
        await owner.groups.create("ghost", [10**12])

    # Repeating an invitation: one invitation, one notice.
    for _ in range(3):
        await owner.groups.invite(group.id, [_id(guest), _id(guest)])
    [invitation] = await owner.groups.invitations(group.id)
    assert (await _invitation_notice(guest_in)).id == invitation.id
    await owner.groups.invite(group.id, [_id(stranger)])  # the next notice is about this one, not a repeat
    [*_, last] = await owner.groups.invitations(group.id)
    assert last.invitee.id == _id(stranger)

    # Someone else's invitation cannot be answered, nor seen.
    with pytest.raises(NotFoundError):
        await stranger.groups.accept(invitation.id)
    with pytest.raises(NotFoundError):
        await stranger.groups.decline(invitation.id)
    assert [i.invitee.id for i in await stranger.groups.invitations()] == [_id(stranger)]

    async with httpx.AsyncClient(base_url=cluster.url) as http:
        headers = {"Authorization": f"Bearer {guest.session.access_token}"}
        for path in (
            "/v1/groups/invitations/abc/accept",
            "/v1/groups/invitations/0/accept",
            "/v1/groups/invitations/-1/decline",
            f"/v1/groups/invitations/{2**64}/accept",
            "/v1/groups/invitations/%C2%B2/accept",
        ):
            response = await http.post(path, headers=headers)
            assert response.status_code == 400, path
            assert response.json()["error"]["code"] == "bad_request"
        response = await http.delete(f"/v1/groups/{group.id}/invitations/x", headers=headers)
        assert response.status_code == 400
        huge = {"users": list(range(1, 1002))}
        response = await http.post(f"/v1/groups/{group.id}/invite", json=huge, headers=headers)
        assert response.status_code == 400
        assert (await http.get("/v1/groups/invitations")).status_code == 401


# Races --------------------------------------------------------------------------------------------


async def test_an_add_waits_for_a_block_in_flight(cluster, closing):
    """A block being written while an invitation is checked: the check waits for it and sees it."""
    if not cluster.settings.db_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time: there is no interleaving to test")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    alice = await cluster.user("alice")
    mallory = await cluster.user("mallory")
    closing += [alice, mallory]
    group = await mallory.groups.create("trap")
    engine = create_async_engine(cluster.settings.db_url)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            # What SocialStore.block does, held open: lock the blocker's row, then write the block.
            await conn.execute(text("SELECT id FROM users WHERE id = :id FOR NO KEY UPDATE"), {"id": _id(alice)})
            await conn.execute(
                text("INSERT INTO blocks (user_id, blocked_id, created_at) VALUES (:a, :m, 0)"),
                {"a": _id(alice), "m": _id(mallory)},
            )
            invite = asyncio.create_task(mallory.groups.invite(group.id, [_id(alice)]))

            async def waiting():
                if invite.done():
                    return True
                count = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
                return count.scalar_one() > 0

            await _until(waiting)
            assert not invite.done()  # it waits on alice's row
            await conn.commit()
        added = await invite
    finally:
        await engine.dispose()
    assert added.member_count == 1  # alice was not added: the invitation stays hidden
    assert await alice.groups.invitations() == []
    assert [i.invitee.id for i in await mallory.groups.invitations(group.id)] == [_id(alice)]
