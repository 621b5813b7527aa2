"""Quick-reply buttons: a press goes back to the message's sender, durably until acknowledged; and the
commands accounts declare. Hostile input: non-members, unknown buttons, recalled messages, someone
else's conversation, oversize or too many buttons, floods."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from im_schema.buttons import Button
from im_schema.presses import BotCommand, SetUserCommandsRequest
from im_sdk import (
    BadRequestError,
    ConversationNotFoundError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
)
from im_sdk.events import ButtonPressEvent, MessageEvent
from tests.e2e.conftest import wait_connected
from tests.support.cluster import TestCluster


@pytest.fixture
def cluster(shared_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster per database."""
    return shared_cluster


YES_NO = [Button(id="yes", label="Yes"), Button(id="no", label="No")]


async def test_a_press_comes_back_to_the_sender_and_waits_until_acknowledged(cluster, inboxes, closing):
    bot, alice = await cluster.user("bot"), await cluster.user("alice")
    closing += [bot, alice]
    await cluster.friends(bot, alice)
    bot_box, alice_box = inboxes(bot), inboxes(alice)
    await wait_connected(cluster, bot)
    await wait_connected(cluster, alice)

    question = await bot.send_text(alice.session.user.id, "Coffee?", buttons=[*YES_NO, ("later", "Ask me later")])
    assert [b.id for b in question.content.buttons] == ["yes", "no", "later"]
    seen = await alice_box.next()
    assert isinstance(seen, MessageEvent) and [b.label for b in seen.buttons] == ["Yes", "No", "Ask me later"]

    press = await alice.press(seen.message, "yes")
    assert (press.conversation, press.seq, press.button, press.user_id) == (
        question.conversation,
        question.seq,
        "yes",
        alice.session.user.id,
    )
    event = await bot_box.event(ButtonPressEvent)
    assert event.press == press
    assert (await alice.press(seen.message, "yes")).id == press.id  # the same press while pending (a retry)

    # Durable: the bot lists what it has not acknowledged (after a reconnect it would find it there).
    later = await alice.press_at(question.conversation, question.seq, "later")
    assert [p.id for p in (await bot.pending_presses()).presses] == [press.id, later.id]
    assert [p.id for p in (await bot.pending_presses(after=press.id)).presses] == [later.id]
    assert (await alice.pending_presses()).presses == []  # presses go to the sender only
    await bot.ack_press(press.id)
    await bot.ack_press(press.id)  # twice is harmless
    await alice.ack_press(later.id)  # not hers to acknowledge: nothing happens
    assert [p.id for p in (await bot.pending_presses()).presses] == [later.id]
    again = await alice.press(seen.message, "yes")  # acknowledged, so a new press
    assert again.id > later.id
    assert (await bot_box.event(ButtonPressEvent)).press.id in (later.id, again.id)

    # An edit keeps the buttons; a recall removes them.
    edited = await bot.edit(question.conversation, question.seq, "Coffee or tea?")
    assert [b.id for b in edited.content.buttons] == ["yes", "no", "later"]
    await bot.recall(question.conversation, question.seq)
    with pytest.raises(NotFoundError):
        await alice.press(seen.message, "no")


async def test_presses_refused_to_whoever_may_not_make_them(cluster, closing):
    bot, alice, mallory = await cluster.user("bot"), await cluster.user("alice"), await cluster.user("mallory")
    closing += [bot, alice, mallory]
    await cluster.friends(bot, alice)
    question = await bot.send_text(alice.session.user.id, "Coffee?", buttons=YES_NO)
    plain = await bot.send_text(alice.session.user.id, "no buttons here")
    conversation = question.conversation

    with pytest.raises(ConversationNotFoundError):  # someone else's conversation
        await mallory.press_at(conversation, question.seq, "yes")
    with pytest.raises(NotFoundError):
        await alice.press_at(conversation, question.seq, "maybe")  # unknown button
    with pytest.raises(NotFoundError):
        await alice.press_at(conversation, plain.seq, "yes")  # a message without buttons
    with pytest.raises(NotFoundError):
        await alice.press_at(conversation, question.seq + 100, "yes")  # no such message
    with pytest.raises(BadRequestError):
        await bot.press_at(conversation, question.seq, "yes")  # its own message
    with pytest.raises(ValidationError):
        await alice.press_at(conversation, question.seq, "yes no")  # not a button id

    # Groups: only members press; one who left cannot.
    group = await bot.groups.create("poll", [alice.session.user.id])
    poll = await bot.send_text(group.conversation, "Lunch?", buttons=YES_NO)
    with pytest.raises(ConversationNotFoundError):
        await mallory.press_at(group.conversation, poll.seq, "yes")
    await alice.press_at(group.conversation, poll.seq, "no")
    await alice.groups.leave(group.id)
    with pytest.raises(ConversationNotFoundError):
        await alice.press_at(group.conversation, poll.seq, "yes")

    # A block: the blocked user's presses are refused as if there were no conversation.
    await bot.friends.block(alice.session.user.id)
    with pytest.raises(ConversationNotFoundError):
        await alice.press_at(conversation, question.seq, "no")

    # The schema refuses oversize, too many, duplicate and control-character buttons.
    assert bot.session is not None
    http = httpx.AsyncClient(base_url=cluster.url, headers={"Authorization": f"Bearer {bot.session.access_token}"})
    closing.append(http)
    bad_buttons = [
        [{"id": "a", "label": "x" * 65}],
        [{"id": "x" * 65, "label": "A"}],
        [{"id": f"b{i}", "label": "B"} for i in range(9)],
        [{"id": "a", "label": "A"}, {"id": "a", "label": "again"}],
        [{"id": "a", "label": "line\nbreak"}],
        [{"id": "a", "label": ""}],
        [{"id": "a", "label": "A", "url": "https://example.com"}],
        [],
    ]
    for buttons in bad_buttons:
        answer = await http.post(
            "/v1/messages",
            json={
                "to": alice.session.user.id,
                "client_msg_id": "buttons-bad-1",
                "content": {"kind": "text", "text": "hi", "buttons": buttons},
            },
        )
        assert answer.status_code == 400, buttons
        assert answer.json()["error"]["code"] == "bad_request"


async def test_presses_are_rate_limited_and_bounded_per_recipient(make_cluster, closing):
    cluster = make_cluster(
        gateways=0, press_rate=0.001, press_burst=3, press_max_pending=2, dm_requires_friendship=False
    )
    bot, alice = await cluster.user("bot"), await cluster.user("alice")
    closing += [bot, alice]
    question = await bot.send_text(alice.session.user.id, "Pick", buttons=[("a", "A"), ("b", "B"), ("c", "C")])
    await alice.press(question, "a")
    await alice.press(question, "b")
    with pytest.raises(RateLimitedError):  # the bot holds as many unhandled presses as it may
        await alice.press(question, "c")
    with pytest.raises(RateLimitedError):  # and alice is over her rate
        await alice.press(question, "a")


async def test_unacknowledged_presses_lapse_after_the_ttl(make_cluster, closing):
    cluster = make_cluster(gateways=0, press_ttl=0.0001, dm_requires_friendship=False)  # 0 ms: lapsed at once
    bot, alice = await cluster.user("bot"), await cluster.user("alice")
    closing += [bot, alice]
    question = await bot.send_text(alice.session.user.id, "Pick", buttons=[("a", "A")])
    first = await alice.press(question, "a")
    assert (await bot.pending_presses()).presses == []
    assert (await alice.press(question, "a")).id > first.id  # a lapsed press is not the same press


async def test_commands_are_declared_by_their_account_and_listed_to_anyone(cluster, closing):
    bot, alice = await cluster.user("bot"), await cluster.user("alice")
    closing += [bot, alice]
    assert await alice.commands(bot.session.user.username) == []
    declared = [
        BotCommand(name="help", description="list the commands"),
        BotCommand(name="weather", description="the weather", args="CITY"),
    ]
    await bot.set_commands(declared)
    assert await alice.commands(bot.session.user.id) == declared
    assert await alice.commands(bot.session.user.username) == declared
    await bot.set_commands([])
    assert await alice.commands(bot.session.user.id) == []
    with pytest.raises(NotFoundError):
        await alice.commands("nobody-here")

    assert bot.session is not None
    http = httpx.AsyncClient(base_url=cluster.url, headers={"Authorization": f"Bearer {bot.session.access_token}"})
    closing.append(http)
    bad = [
        [{"name": "Weather", "description": "upper case"}],
        [{"name": "x" * 33, "description": "too long"}],
        [{"name": "a", "description": "d" * 257}],
        [{"name": "a", "description": "same"}, {"name": "a", "description": "twice"}],
        [{"name": f"c{i}", "description": "many"} for i in range(51)],
        [{"name": "a", "description": "no\ncontrol"}],
    ]
    for commands in bad:
        answer = await http.put("/v1/me/commands", json={"commands": commands})
        assert answer.status_code == 400, commands
    # Only admins set another account's commands, and only a bot's.
    answer = await http.put(f"/v1/admin/bots/{alice.session.user.id}/commands", json={"commands": []})
    assert answer.status_code == 403
    with pytest.raises(ForbiddenError):
        await alice.request(SetUserCommandsRequest(bot=bot.session.user.id, commands=[]))
