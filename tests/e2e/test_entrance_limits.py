"""Per-user limits against a real cluster: edits, recalls, typing (start and stop), friend requests and
the cooldown after a declined one."""

from __future__ import annotations

import pytest

from im_sdk import RateLimitedError


def _limited(info: pytest.ExceptionInfo[RateLimitedError]) -> None:
    assert info.value.code == "rate_limited" and info.value.status == 429
    assert info.value.retry_after is not None and info.value.retry_after > 0


async def test_edits_and_recalls_are_limited_per_user(make_cluster, closing):
    cluster = make_cluster(
        gateways=0, edit_rate=0.001, edit_burst=2, recall_rate=0.001, recall_burst=2, recall_window=3600
    )
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    sent = [await alice.send_text(bob.session.user.id, f"m{i}") for i in range(4)]
    conversation = sent[0].conversation
    for message in sent[:2]:
        await alice.edit(conversation, message.seq, "edited")
    with pytest.raises(RateLimitedError) as info:
        await alice.edit(conversation, sent[2].seq, "one edit too many")
    _limited(info)
    for message in sent[:2]:
        await alice.recall(conversation, message.seq)
    with pytest.raises(RateLimitedError) as info:
        await alice.recall(conversation, sent[3].seq)
    _limited(info)
    # Per user: bob is not affected by alice's limits.
    reply = await bob.send_text(alice.session.user.id, "mine")
    await bob.edit(reply.conversation, reply.seq, "still mine")


async def test_typing_start_and_stop_count_alike(make_cluster, closing):
    cluster = make_cluster(gateways=0, typing_rate=0.001, typing_burst=3)
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    conversation = (await alice.send_text(bob.session.user.id, "hi")).conversation
    # Stops used to bypass every limit; now they count like starts.
    await alice.typing(conversation, active=True)
    await alice.typing(conversation, active=False)
    await alice.typing(conversation, active=False)
    with pytest.raises(RateLimitedError) as info:
        await alice.typing(conversation, active=False)
    _limited(info)
    await bob.typing(conversation, active=True)


async def test_friend_requests_are_limited_and_a_decline_has_a_cooldown(make_cluster, closing):
    cluster = make_cluster(gateways=0, friend_request_rate=0.001, friend_request_burst=3)
    alice, bob, carol, dave = [await cluster.user(name) for name in ("alice", "bob", "carol", "dave")]
    closing += [alice, bob, carol, dave]
    request = await alice.friends.request(bob.session.user.id, "hello")
    await bob.friends.decline(request.id)
    # Asking again at once is refused for the cooldown (a day by default), and says how long.
    with pytest.raises(RateLimitedError) as info:
        await alice.friends.request(bob.session.user.id, "please?")
    _limited(info)
    assert 3600 < info.value.retry_after <= 86400
    assert await bob.friends.requests() == []
    # bob may still ask alice (the cooldown is per direction of the pair), which makes them friends.
    assert (await bob.friends.request(alice.session.user.id)).status == "pending"
    # The third request of alice (the declined one counted) uses up her burst.
    await alice.friends.request(carol.session.user.id)
    with pytest.raises(RateLimitedError) as info:
        await alice.friends.request(dave.session.user.id)
    _limited(info)


async def test_the_cooldown_ends(make_cluster, closing):
    cluster = make_cluster(gateways=0, friend_request_cooldown=0)
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    request = await alice.friends.request(bob.session.user.id)
    await bob.friends.decline(request.id)
    again = await alice.friends.request(bob.session.user.id, "second try")
    assert again.status == "pending" and [r.message for r in await bob.friends.requests()] == ["second try"]
