"""Filters and routers without a server: dispatch is pure apart from the handlers it calls."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from im_schema.content import SystemContent, TextContent
from im_schema.models import Message, User
from im_schema.presses import Press
from im_sdk.bot import (
    Command,
    CommandArgs,
    Conversation,
    Filter,
    Kind,
    Mentioned,
    MessageEvent,
    Regex,
    Router,
    Sender,
    Text,
    direct,
    group,
)
from im_sdk.bot.events import ButtonPress, MemberLeft, MembersJoined, bot_event
from im_sdk.events import ButtonPressEvent

ME = User(id=9, username="helper", display_name="helper", created_at=datetime.now(UTC))


def message(text: str | None = "hi", *, conversation: str = "d:1:9", sender: int = 1, seq: int = 1, **extra):
    content = TextContent(text=text) if text is not None else SystemContent(event="member_left", data={"user": 3})
    return MessageEvent(
        Message(conversation=conversation, seq=seq, sender=sender, sent_at=datetime.now(UTC), content=content, **extra),
        None,
    )


DATA = {"me": ME}


async def check(f: Filter, event) -> object:
    return await f.check(event, DATA)


async def test_conversation_filters_compose():
    dm, room = message(), message(conversation="g:4")
    assert await check(direct, dm) and not await check(direct, room)
    assert await check(group, room) and not await check(group, dm)
    assert await check(direct | group, room)
    assert not await check(direct & group, room)
    assert await check(~direct, room)
    assert await check(Conversation("g:4"), room) and not await check(Conversation("g:4"), dm)
    assert await check(Sender(1) & ~Conversation("g:5"), room)
    assert not await check(Sender(2), room)


async def test_text_and_regex():
    event = message("Hello World")
    assert await check(Text("Hello World"), event)
    assert not await check(Text("hello world"), event)
    assert await check(Text("hello world", ignore_case=True), event)
    assert await check(Text(contains="lo W"), event)
    assert await check(Text(startswith="Hell"), event)
    found = await check(Regex(r"W(or)ld"), event)
    assert isinstance(found, dict) and found["match"].group(1) == "or"
    assert not await check(Regex(r"^World"), event)
    assert not await check(Text("x"), message(None))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/weather paris", CommandArgs("weather", "paris")),
        ("/Weather  paris 7d ", CommandArgs("weather", "paris 7d")),
        ("/weather@helper paris", CommandArgs("weather", "paris")),
        ("/weather", CommandArgs("weather", "")),
        ("/weather@otherbot paris", None),
        ("/forecast paris", None),
        ("weather paris", None),
        ("/", None),
        ("/ weather", None),
        ("/weather\nline two", CommandArgs("weather", "line two")),
    ],
)
async def test_command_parsing(text, expected):
    result = await check(Command("weather"), message(text))
    if expected is None:
        assert not result
    else:
        assert result == {"command": expected}


async def test_command_args_and_any_command():
    result = await check(Command(), message("/roll 2 d6"))
    assert isinstance(result, dict) and result["command"].argv == ["2", "d6"]
    long = "/" + "x" * 65
    assert not await check(Command(), message(long))


async def test_mentions_and_kinds():
    assert await check(Mentioned(), message("hey", conversation="g:1", mentions=[9]))
    assert await check(Mentioned(), message("hey all", conversation="g:1", mention_all=True))
    assert not await check(Mentioned(), message("hey", conversation="g:1", mentions=[3]))
    assert await check(Kind("text"), message())
    assert not await check(Kind(*Kind.MEDIA), message())


async def test_functions_are_filters():
    assert await check(Filter.of(lambda event: event.seq == 1), message())

    async def later(event):
        return event.seq == 2

    assert not await check(Filter.of(later), message())
    assert await check(direct & (lambda event: True), message())
    with pytest.raises(TypeError):
        Filter.of(42)  # type: ignore[arg-type]


async def test_and_passes_values_along():
    result = await check(Command("say") & Regex("(loud)"), message("/say loud"))
    assert isinstance(result, dict) and set(result) == {"command", "match"}


async def test_system_messages_become_group_events():
    event = bot_event(message(None, conversation="g:2"), None)  # type: ignore[arg-type]
    assert isinstance(event, MemberLeft) and event.user == 3 and not event.kicked
    joined = MessageEvent(
        Message(
            conversation="g:2",
            seq=5,
            sender=1,
            sent_at=datetime.now(UTC),
            content=SystemContent(event="members_joined", actor=1, data={"users": [4, 5], "via": "add"}),
        ),
        None,
    )
    event = bot_event(joined, None)  # type: ignore[arg-type]
    assert isinstance(event, MembersJoined) and event.users == (4, 5) and event.actor == 1
    assert (event.conversation, event.seq) == ("g:2", 5)  # where the system message stands, as on MessageEvent


async def test_a_bots_button_press_is_the_sdks_press_bound_to_the_bot():
    press = Press(id=3, conversation="g:2", seq=8, button="yes", user_id=4, pressed_at=datetime.now(UTC))
    event = bot_event(ButtonPressEvent(press), None)  # type: ignore[arg-type]
    assert isinstance(event, ButtonPress) and isinstance(event, ButtonPressEvent)
    assert (event.conversation, event.seq, event.button, event.user_id) == ("g:2", 8, "yes", 4)
    assert event.press == press


async def test_first_matching_handler_nested_routers_and_middleware():
    root, child, grandchild = Router("root"), Router("child"), Router("grandchild")
    root.include_router(child)
    child.include_router(grandchild)
    calls = []

    @root.middleware
    async def outer(handler, event, data):
        calls.append("outer")
        return await handler(event, {**data, "tag": "x"})

    @child.middleware
    async def inner(handler, event, data):
        calls.append("inner")
        return await handler(event, data)

    @root.on_message(Command("help"))
    async def help_(msg, command):
        calls.append(("help", command.args))

    @grandchild.on_message(Text("hi"))
    async def hi(msg, tag, me):
        calls.append(("hi", tag, me.id))

    @grandchild.on_message()
    async def anything(msg, **data):
        calls.append(("anything", sorted(data)))

    assert await root.dispatch(message("/help me"), DATA)
    assert calls == ["outer", ("help", "me")]
    calls.clear()
    assert await root.dispatch(message("hi"), DATA)
    assert calls == ["outer", "inner", ("hi", "x", 9)]
    calls.clear()
    assert await root.dispatch(message("other"), DATA)
    assert calls == ["outer", "inner", ("anything", ["me", "tag"])]
    calls.clear()
    assert not await root.dispatch(message(None), DATA)  # system messages are not on_message's
    assert calls == []


async def test_middleware_can_drop_an_event():
    router = Router()
    seen = []

    @router.middleware
    async def only_direct(handler, event, data):
        if event.conversation.startswith("d:"):
            return await handler(event, data)
        return None

    @router.on_message()
    async def handler(msg):
        seen.append(msg.conversation)

    await router.dispatch(message(conversation="g:1"), DATA)
    await router.dispatch(message(), DATA)
    assert seen == ["d:1:9"]


async def test_errors_go_to_the_innermost_hook_and_never_escape(caplog):
    root, child = Router("root"), Router("child")
    root.include_router(child)
    errors = []

    @child.on_message(Text("boom"))
    async def boom(msg):
        raise ValueError("boom")

    @root.on_message(Text("bang"))
    async def bang(msg):
        raise KeyError("bang")

    @child.on_error
    async def failing_hook(error, event, data):
        raise RuntimeError("the hook itself fails")

    @root.on_error
    async def root_hook(error, event, data):
        errors.append(type(error).__name__)

    assert await root.dispatch(message("boom"), DATA)
    assert await root.dispatch(message("bang"), DATA)
    assert errors == ["ValueError", "KeyError"]
    lonely = Router()

    @lonely.on_message()
    async def fails(msg):
        raise ValueError("nobody listens")

    assert await lonely.dispatch(message(), DATA)  # logged, not raised
    assert "nobody listens" in caplog.text


def test_registration_wants_coroutines_and_no_cycles():
    router = Router()
    with pytest.raises(TypeError, match="coroutine"):

        @router.on_message()
        def not_async(msg):  # pragma: no cover
            pass

    with pytest.raises(TypeError):
        router.middleware(lambda handler, event, data: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        router.on_error(lambda error, event, data: None)  # type: ignore[arg-type]
    child = Router()
    router.include_router(child)
    with pytest.raises(ValueError, match="itself or one of its ancestors"):
        child.include_router(router)
    with pytest.raises(ValueError, match="already included"):
        Router().include_router(child)
    with pytest.raises(ValueError, match="itself"):
        router.include_router(router)


async def test_on_event_by_type():
    router = Router()
    seen = []

    @router.on_event(MemberLeft, lambda event: event.user == 3)
    async def left(event):
        seen.append(event.user)

    @router.on_event()
    async def rest(event):
        seen.append("rest")

    await router.dispatch(bot_event(message(None, conversation="g:2"), None), DATA)  # type: ignore[arg-type]
    await router.dispatch(object(), DATA)
    assert seen == [3, "rest"]
