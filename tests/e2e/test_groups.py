"""Groups over the real cluster: every operation, every permission rule, and fan-out per gateway node."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from im_schema.content import SystemContent
from im_schema.events import JoinRequestNotice
from im_sdk import ConflictError, ConversationNotFoundError, ForbiddenError, NotFoundError
from tests.e2e.conftest import wait_connected
from tests.support.cluster import TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


async def _system_events(client, conversation):
    page = await client.history(conversation, limit=1000)
    return [m.content.event for m in page.messages if isinstance(m.content, SystemContent)]


async def test_create_info_members_and_messages(cluster, inboxes, closing):
    owner = await cluster.user("owner")
    ann = await cluster.user("ann")
    ben = await cluster.user("ben")
    closing += [owner, ann, ben]
    ann_in = inboxes(ann)
    await wait_connected(cluster, ann)

    group = await owner.groups.create("book club", [ann.session.user.username, ben.session.user.id])
    assert (group.name, group.member_count, group.my_role, group.owner) == (
        "book club",
        3,
        "owner",
        owner.session.user.id,
    )
    created = await ann_in.next()  # the group_created system message reaches members at once
    assert isinstance(created.message.content, SystemContent)
    assert created.message.content.event == "group_created"

    await owner.send_text(group.conversation, "first chapter tonight")
    message = await ann_in.next()
    assert (message.conversation, message.text) == (group.conversation, "first chapter tonight")

    assert [g.id for g in await ben.groups.list()] == [group.id]
    info = await ben.groups.info(group.id)
    assert (info.my_role, info.member_count) == ("member", 3)
    page = await ben.groups.members(group.id)
    roles = {m.user.id: (m.role, m.online) for m in page.members}
    assert roles[owner.session.user.id][0] == "owner"
    assert roles[ann.session.user.id] == ("member", True)  # ann's device is connected
    assert roles[ben.session.user.id] == ("member", False)
    first = await ben.groups.members(group.id, limit=2)
    rest = await ben.groups.members(group.id, after=first.members[-1].user.id)
    assert first.has_more
    assert [m.user.id for m in first.members + rest.members] == sorted(roles)

    await ben.groups.nickname(group.id, "Benny")
    await ben.groups.remark(group.id, "the Tuesday one")
    mine = await ben.groups.info(group.id)
    assert (mine.my_nickname, mine.my_remark) == ("Benny", "the Tuesday one")
    assert (await ann.groups.info(group.id)).my_remark is None  # a remark is private
    nick = await ann_in.next()
    assert nick.message.content.event == "nickname_set"

    # Offline members learn every change by sync, in order.
    assert await _system_events(ben, group.conversation) == ["group_created", "nickname_set"]
    [summary] = [s for s in await ben.conversations() if s.id == group.conversation]
    assert (summary.kind, summary.max_seq) == ("group", 3)


async def test_join_policies_and_requests(cluster, inboxes, closing):
    owner = await cluster.user("owner")
    admin = await cluster.user("admin")
    joiner = await cluster.user("joiner")
    closing += [owner, admin, joiner]
    admin_in = inboxes(admin)

    open_group = await owner.groups.create("open house", join_policy="open")
    result = await joiner.groups.join(open_group.id)
    assert result.status == "joined"
    assert result.group.my_role == "member"
    with pytest.raises(ConflictError):
        await joiner.groups.join(open_group.id)

    gated = await owner.groups.create("gated", [admin.session.user.id], join_policy="approval")
    await owner.groups.add_admin(gated.id, admin.session.user.id)
    await wait_connected(cluster, admin)
    asked = await joiner.groups.join(gated.id, "let me in")
    assert asked.status == "requested"
    notice = await admin_in.notice()
    assert isinstance(notice.notice, JoinRequestNotice)
    assert notice.notice.request.message == "let me in"
    with pytest.raises(ForbiddenError):
        await joiner.groups.requests(gated.id)  # only the owner and admins see requests
    [request] = await admin.groups.requests(gated.id)
    await admin.groups.approve(gated.id, request.id)
    assert (await joiner.groups.info(gated.id)).my_role == "member"
    with pytest.raises(NotFoundError):
        await admin.groups.approve(gated.id, request.id)

    rejected = await cluster.user("rejected")
    closing.append(rejected)
    await rejected.groups.join(gated.id)
    [request] = await owner.groups.requests(gated.id)
    await owner.groups.reject(gated.id, request.id)
    assert (await rejected.groups.info(gated.id)).my_role is None
    assert await owner.groups.requests(gated.id) == []

    private = await owner.groups.create("private", join_policy="invite_only")
    with pytest.raises(ForbiddenError):
        await joiner.groups.join(private.id)
    with pytest.raises(NotFoundError):
        await joiner.groups.join(10**9)


async def test_invite_rules(cluster, closing):
    owner = await cluster.user("owner")
    member = await cluster.user("member")
    guest = await cluster.user("guest")
    other = await cluster.user("other")
    closing += [owner, member, guest, other]
    group = await owner.groups.create("g", [member.session.user.id], allow_member_invite=False)
    with pytest.raises(ForbiddenError):
        await member.groups.invite(group.id, [guest.session.user.id])
    with pytest.raises(ForbiddenError):
        await other.groups.invite(group.id, [guest.session.user.id])  # not a member at all
    await owner.groups.update(group.id, allow_member_invite=True)
    grown = await member.groups.invite(group.id, [guest.session.user.id, guest.session.user.id])
    assert grown.member_count == 3
    assert (await owner.groups.invite(group.id, [guest.session.user.id])).member_count == 3  # already in


async def test_kick_rules(cluster, closing):
    owner = await cluster.user("owner")
    admin1 = await cluster.user("admin")
    admin2 = await cluster.user("admin")
    member = await cluster.user("member")
    member2 = await cluster.user("member")
    closing += [owner, admin1, admin2, member, member2]
    ids = [u.session.user.id for u in (admin1, admin2, member, member2)]
    group = await owner.groups.create("rules", ids)
    await owner.groups.add_admin(group.id, admin1.session.user.id)
    await owner.groups.add_admin(group.id, admin2.session.user.id)

    for actor, target in (
        (member, member2),  # a member kicks a member
        (member, admin1),  # a member kicks an admin
        (admin1, admin2),  # an admin kicks another admin
        (admin1, owner),  # an admin kicks the owner
    ):
        with pytest.raises(ForbiddenError):
            await actor.groups.kick(group.id, target.session.user.id)
    await admin1.groups.kick(group.id, member.session.user.id)
    await owner.groups.kick(group.id, admin2.session.user.id)
    with pytest.raises(ForbiddenError) as gone:
        await owner.groups.kick(group.id, member.session.user.id)
    assert gone.value.code == "not_a_member"
    assert (await owner.groups.info(group.id)).member_count == 3
    with pytest.raises(ForbiddenError):
        await owner.groups.leave(group.id)  # the owner transfers or dissolves instead
    with pytest.raises(ForbiddenError):
        await admin1.groups.remove_admin(group.id, admin1.session.user.id)  # only the owner manages admins
    await owner.groups.remove_admin(group.id, admin1.session.user.id)
    with pytest.raises(ForbiddenError):
        await admin1.groups.kick(group.id, member2.session.user.id)


async def test_a_kicked_member_stops_receiving_at_once(cluster, inboxes, closing):
    owner = await cluster.user("owner")
    kicked = await cluster.user("kicked")
    stay = await cluster.user("stay")
    closing += [owner, kicked, stay]
    group = await owner.groups.create("g", [kicked.session.user.id, stay.session.user.id])
    kicked_in, stay_in = inboxes(kicked), inboxes(stay)
    await wait_connected(cluster, kicked)
    await wait_connected(cluster, stay)
    await stay_in.next()
    await kicked_in.next()  # group_created

    before = await owner.send_text(group.conversation, "before the kick")
    await owner.groups.kick(group.id, kicked.session.user.id)
    after = await owner.send_text(group.conversation, "after the kick")

    # The kicked member gets the message committed before the kick, and the kick notice, nothing after.
    got = await kicked_in.take(2)
    assert [e.seq for e in got] == [before.seq, before.seq + 1]
    assert got[1].message.content.event == "member_kicked"
    assert [e.text for e in await stay_in.take(3)][::2] == ["before the kick", "after the kick"]
    await owner.send_text(group.conversation, "sentinel")
    assert (await stay_in.next()).text == "sentinel"
    assert kicked_in.queue.empty()

    # History ends where membership ended; sending is refused.
    page = await kicked.history(group.conversation, after=0)
    assert page.messages[-1].seq == before.seq + 1 < after.seq
    assert page.max_seq == before.seq + 1
    with pytest.raises(ForbiddenError) as refused:
        await kicked.send_text(group.conversation, "let me back")
    assert refused.value.code == "not_a_member"
    [summary] = [s for s in await kicked.conversations() if s.id == group.conversation]
    assert summary.left
    assert summary.max_seq == before.seq + 1


async def test_membership_races_across_api_nodes(make_cluster, db_url, inboxes, closing):
    """A kick on one API node and sends through another: the commit decides, not a stale cache."""
    from im_sdk import AsyncClient

    cluster = make_cluster(gateways=1, db_url=db_url)
    other_api = cluster.add_api()
    owner = await cluster.user("owner")
    victim = await cluster.user("victim", api=other_api)
    witness = await cluster.user("witness")
    via_other = AsyncClient(other_api.url, access_token=owner.session.access_token)
    closing += [owner, victim, witness, via_other]
    group = await owner.groups.create("g", [victim.session.user.id, witness.session.user.id])
    victim_in, witness_in = inboxes(victim), inboxes(witness)
    await wait_connected(cluster, victim)
    await wait_connected(cluster, witness)
    await victim_in.next()
    await witness_in.next()

    # Warm the other node's roster cache, then kick through the first node.
    await via_other.send_text(group.conversation, "warm the cache")
    assert (await victim_in.next()).text == "warm the cache"
    await owner.groups.kick(group.id, victim.session.user.id)
    assert (await victim_in.next()).message.content.event == "member_kicked"

    await via_other.send_text(group.conversation, "after the kick, through the other node")
    with pytest.raises(ForbiddenError):
        await victim.send_text(group.conversation, "sent through the other node")  # victim's client uses it
    await via_other.send_text(group.conversation, "sentinel")
    # One gateway: the witness's sentinel comes after anything the other node published before it.
    texts = [e.text for e in await witness_in.until_text("sentinel")]
    assert texts[-2:] == ["after the kick, through the other node", "sentinel"]
    assert victim_in.queue.empty()


async def test_non_members_cannot_read_or_write(cluster, closing):
    owner = await cluster.user("owner")
    outsider = await cluster.user("outsider")
    closing += [owner, outsider]
    group = await owner.groups.create("g")
    with pytest.raises(ForbiddenError) as refused:
        await outsider.send_text(group.conversation, "hi")
    assert refused.value.code == "not_a_member"
    with pytest.raises(ConversationNotFoundError):
        await outsider.history(group.conversation)
    with pytest.raises(ForbiddenError):
        await outsider.groups.members(group.id)
    info = await outsider.groups.info(group.id)
    assert (info.my_role, info.announcement) == (None, "")
    with pytest.raises(ConversationNotFoundError):
        await owner.send_text("g:999999", "into the void")


async def test_dissolved_group_refuses_sends(cluster, inboxes, closing):
    owner = await cluster.user("owner")
    member = await cluster.user("member")
    closing += [owner, member]
    group = await owner.groups.create("short lived", [member.session.user.id])
    with pytest.raises(ForbiddenError):
        await member.groups.dissolve(group.id)
    await owner.groups.dissolve(group.id)
    for client in (owner, member):
        with pytest.raises(ForbiddenError) as refused:
            await client.send_text(group.conversation, "anyone?")
        assert refused.value.code == "group_dissolved"
    assert "group_dissolved" in await _system_events(member, group.conversation)
    assert (await member.groups.info(group.id)).dissolved
    assert await member.groups.list() == []
    with pytest.raises(ForbiddenError):
        await owner.groups.invite(group.id, [member.session.user.id])


async def test_announcement_transfer_and_admins(cluster, inboxes, closing):
    owner = await cluster.user("owner")
    heir = await cluster.user("heir")
    member = await cluster.user("member")
    closing += [owner, heir, member]
    group = await owner.groups.create("g", [heir.session.user.id, member.session.user.id])
    member_in = inboxes(member)
    await wait_connected(cluster, member)
    await member_in.next()

    with pytest.raises(ForbiddenError):
        await member.groups.notice(group.id, "I am in charge")
    info = await owner.groups.notice(group.id, "meeting moved to Friday")
    assert info.announcement == "meeting moved to Friday"
    assert (await member.groups.info(group.id)).announcement == "meeting moved to Friday"
    changed = await member_in.next()
    assert changed.message.content.event == "announcement_set"
    assert changed.message.content.data["text"] == "meeting moved to Friday"

    with pytest.raises(ForbiddenError):
        await member.groups.transfer(group.id, member.session.user.id)
    with pytest.raises(ForbiddenError):
        await owner.groups.transfer(group.id, (await cluster.user("stranger")).session.user.id)
    after = await owner.groups.transfer(group.id, heir.session.user.id)
    assert after.owner == heir.session.user.id
    assert after.my_role == "admin"  # the old owner stays as an admin
    assert (await heir.groups.info(group.id)).my_role == "owner"
    await owner.groups.leave(group.id)
    assert await _system_events(member, group.conversation) == [
        "group_created",
        "announcement_set",
        "owner_transferred",
        "member_left",
    ]


async def test_mutes(cluster, closing):
    owner = await cluster.user("owner")
    admin = await cluster.user("admin")
    member = await cluster.user("member")
    closing += [owner, admin, member]
    group = await owner.groups.create("g", [admin.session.user.id, member.session.user.id])
    await owner.groups.add_admin(group.id, admin.session.user.id)

    with pytest.raises(ForbiddenError):
        await member.groups.mute(group.id, admin.session.user.id, timedelta(minutes=5))
    with pytest.raises(ForbiddenError):
        await admin.groups.mute(group.id, owner.session.user.id, timedelta(minutes=5))
    await admin.groups.mute(group.id, member.session.user.id, timedelta(minutes=5))
    [muted] = [m for m in (await owner.groups.members(group.id)).members if m.user.id == member.session.user.id]
    assert muted.muted_until is not None
    with pytest.raises(ForbiddenError) as refused:
        await member.send_text(group.conversation, "can I talk?")
    assert refused.value.code == "muted"
    await admin.groups.mute(group.id, member.session.user.id, None)
    await member.send_text(group.conversation, "thanks")

    await owner.groups.mute_all(group.id)
    with pytest.raises(ForbiddenError):
        await member.send_text(group.conversation, "quiet time?")
    await admin.send_text(group.conversation, "admins may still speak")
    await owner.groups.mute_all(group.id, False)
    await member.send_text(group.conversation, "free again")
    events = await _system_events(owner, group.conversation)
    assert events.count("member_muted") == 1
    assert events.count("member_unmuted") == 1
    assert events.count("group_updated") == 2


async def test_history_visibility_for_new_members(cluster, closing):
    owner = await cluster.user("owner")
    late = await cluster.user("late")
    later = await cluster.user("later")
    closing += [owner, late, later]
    hidden = await owner.groups.create("hidden past")
    await owner.send_text(hidden.conversation, "secret from before")
    await owner.groups.invite(hidden.id, [late.session.user.id])
    texts = [m.content.text for m in (await late.history(hidden.conversation)).messages if m.content.kind == "text"]
    assert texts == []
    events = await _system_events(late, hidden.conversation)
    assert events == ["members_joined"]  # new members see their own arrival, not what came before

    shared = await owner.groups.create("shared past", history_visible=True)
    await owner.send_text(shared.conversation, "welcome to the archive")
    await owner.groups.invite(shared.id, [later.session.user.id])
    texts = [m.content.text for m in (await later.history(shared.conversation)).messages if m.content.kind == "text"]
    assert texts == ["welcome to the archive"]


async def test_member_limit(make_cluster, closing):
    cluster = make_cluster(gateways=1, group_member_limit=3)
    users = [await cluster.user("u") for _ in range(4)]
    closing.extend(users)
    group = await users[0].groups.create("small", [users[1].session.user.id, users[2].session.user.id])
    with pytest.raises(ConflictError) as full:
        await users[0].groups.invite(group.id, [users[3].session.user.id])
    assert full.value.code == "group_full"
    with pytest.raises(ConflictError):
        await users[3].groups.create("too big", [u.session.user.id for u in users[:3]])


async def test_fan_out_is_one_publish_per_gateway_node(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=3)
    members = [await cluster.user("m", device=f"d{i}") for i in range(12)]
    node = cluster.api.node

    def assigned() -> set[str]:
        return {node.assign_gateway(m.session.user.id, m.session.device_id).node_id for m in members}

    while len(assigned()) < 3 and len(members) < 40:  # 12 devices miss one of three nodes 2% of the time
        members.append(await cluster.user("m", device=f"d{len(members)}"))
    closing.extend(members)
    owner = members[0]
    group = await owner.groups.create("fan out", [m.session.user.id for m in members[1:]])
    receiving = [inboxes(member) for member in members]
    nodes = {await wait_connected(cluster, member) for member in members}
    assert len(nodes) == 3, "the devices should be spread over the three gateways"
    for inbox in receiving[1:]:
        assert (await inbox.next()).message.content.event == "group_created"

    watcher = await cluster.observer()
    publishes: Counter[str] = Counter()

    async def count(msg):
        publishes[msg.subject] += 1

    await watcher.subscribe(f"{cluster.settings.subject_prefix}.gw.*", cb=count)
    await watcher.flush()
    await owner.send_text(group.conversation, "to everyone")
    for member, inbox in zip(members[1:], receiving[1:], strict=True):
        assert (await inbox.next()).text == "to everyone", member.session.user.id
    await watcher.flush()  # the gateways have had the publishes; so has this subscriber, before the PONG
    await watcher.close()
    assert publishes == Counter({f"{cluster.settings.subject_prefix}.gw.{node}": 1 for node in nodes})

    await owner.send_text(group.conversation, "sentinel")
    for inbox in receiving[1:]:
        assert (await inbox.next()).text == "sentinel"  # and nothing twice in between
