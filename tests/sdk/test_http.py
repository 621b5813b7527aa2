"""The SDK's HTTP layer: pure build/parse in im_sdk._base, and both clients over a respx-mocked transport."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
import respx

import im_sdk.retry
from im_schema.content import TextContent
from im_schema.models import Message, User
from im_schema.rest import (
    ConversationsRequest,
    GetUserRequest,
    HistoryRequest,
    LoginRequest,
    LogoutRequest,
    MarkReadRequest,
    Me,
    MessagePage,
    SendMessageRequest,
    WhoAmIRequest,
)
from im_sdk import AsyncClient, Client, Retry
from im_sdk._base import Prepared, parse, prepare, retry_after_seconds, send_text_request
from im_sdk.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConversationNotFoundError,
    ForbiddenError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    TokenExpiredError,
    TransportError,
    UnavailableError,
    UsernameTakenError,
    UserNotFoundError,
)
from im_sdk.realtime.protocol import Deliver, SyncEngine

BASE = "http://im.test"
CREATED = "2024-05-01T12:00:00Z"
ALICE = {"id": 1, "username": "alice", "display_name": "Alice", "is_bot": False, "created_at": CREATED}


def session_json(n=1):
    return {
        "access_token": f"access-{n}",
        "refresh_token": f"refresh-token-{n:08d}",
        "expires_in": 900,
        "user": ALICE,
        "device_id": "laptop",
    }


def message_json(seq=1, conversation="d:1:2", sender=1, client_msg_id="abcdefgh"):
    return {
        "conversation": conversation,
        "seq": seq,
        "sender": sender,
        "client_msg_id": client_msg_id,
        "sent_at": CREATED,
        "content": {"kind": "text", "text": "hi"},
    }


def envelope(code, message="nope", **extra):
    return {"error": {"code": code, "message": message, **extra}}


def body(request):
    return json.loads(request.content)


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture(params=["async", "sync"])
async def make_client(request):
    """Builds an AsyncClient or a Client; ``call`` awaits the result only for the async one."""
    made = []

    def make(**kwargs):
        cls = AsyncClient if request.param == "async" else Client
        client = cls(BASE, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()


async def call(result):
    return await result if inspect.isawaitable(result) else result


@pytest.fixture
def no_sleep(monkeypatch):
    """Record the retry pauses instead of sleeping (only this thread's: a cluster of an earlier test may
    still run in a background thread and must keep its real sleeps), and let them move the clock that
    retry deadlines are measured on."""
    pauses = []
    real_async_sleep, real_sleep = asyncio.sleep, time.sleep
    this_thread = threading.get_ident()

    async def fake_async_sleep(delay, *args, **kwargs):
        if threading.get_ident() != this_thread:
            return await real_async_sleep(delay, *args, **kwargs)
        pauses.append(delay)
        return None

    def fake_sleep(delay):
        if threading.get_ident() != this_thread:
            return real_sleep(delay)
        pauses.append(delay)
        return None

    monkeypatch.setattr(asyncio, "sleep", fake_async_sleep)
    monkeypatch.setattr(time, "sleep", fake_sleep)
    # The retry deadline is measured on this clock, which the recorded pauses move forward.
    monkeypatch.setattr(im_sdk.retry, "monotonic", lambda: 1000.0 + sum(pauses))
    return pauses


# prepare ------------------------------------------------------------------------------------------


def test_prepare_get_puts_fields_in_the_query():
    prepared = prepare(HistoryRequest(conversation="d:1:2", after=3, limit=50))
    assert prepared == Prepared("GET", "/v1/conversations/d:1:2/messages", {"after": 3, "limit": 50}, None, True)


def test_prepare_get_without_fields_has_no_query():
    assert prepare(WhoAmIRequest()) == Prepared("GET", "/v1/me", None, None, True)
    assert prepare(ConversationsRequest(since="x")).params == {"since": "x", "limit": 200}


def test_prepare_post_puts_fields_in_the_body():
    prepared = prepare(LoginRequest(username="Alice", password="pw", device="laptop"))
    assert prepared == Prepared(
        "POST", "/v1/auth/login", None, {"username": "alice", "password": "pw", "device": "laptop"}, False
    )


def test_prepare_post_with_path_params():
    prepared = prepare(MarkReadRequest(conversation="g:5", seq=9))
    assert (prepared.method, prepared.path, prepared.json, prepared.params) == (
        "POST",
        "/v1/conversations/g:5/read",
        {"seq": 9},
        None,
    )


def test_prepare_post_without_fields_sends_an_empty_body():
    assert prepare(LogoutRequest()).json == {}


def test_prepare_quotes_path_params():
    assert prepare(GetUserRequest(user="a.b-c")).path == "/v1/users/a.b-c"
    assert prepare(GetUserRequest(user=12)).path == "/v1/users/12"


# parse --------------------------------------------------------------------------------------------


def test_parse_success():
    user = parse(GetUserRequest(user=1), 200, json.dumps(ALICE).encode())
    assert user == User.model_validate(ALICE)


def test_parse_success_with_an_unexpected_body():
    with pytest.raises(InternalServerError) as info:
        parse(GetUserRequest(user=1), 200, b'{"id": "x"}')
    assert info.value.code == "bad_response"
    assert info.value.status == 200


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "bad_request", BadRequestError),
        (400, "text_too_long", BadRequestError),
        (401, "unauthorized", AuthenticationError),
        (401, "invalid_credentials", AuthenticationError),
        (401, "token_expired", TokenExpiredError),
        (403, "forbidden", ForbiddenError),
        (404, "not_found", NotFoundError),
        (404, "user_not_found", UserNotFoundError),
        (404, "conversation_not_found", ConversationNotFoundError),
        (409, "conflict", ConflictError),
        (409, "username_taken", UsernameTakenError),
        (413, "payload_too_large", PayloadTooLargeError),
        (429, "rate_limited", RateLimitedError),
        (503, "unavailable", UnavailableError),
        (500, "internal", InternalServerError),
    ],
)
def test_error_envelope_maps_to_typed_exceptions(status, code, expected):
    with pytest.raises(APIError) as info:
        parse(WhoAmIRequest(), status, json.dumps(envelope(code, "why")).encode())
    exc = info.value
    assert type(exc) is expected
    assert (exc.code, exc.message, exc.status) == (code, "why", status)


def test_subclasses_can_be_caught_by_their_parents():
    with pytest.raises(NotFoundError):
        parse(WhoAmIRequest(), 404, json.dumps(envelope("user_not_found")).encode())
    with pytest.raises(ConflictError):
        parse(WhoAmIRequest(), 409, json.dumps(envelope("username_taken")).encode())


def test_rate_limited_reads_retry_after_from_the_body():
    content = json.dumps(envelope("rate_limited", retry_after=2.5)).encode()
    with pytest.raises(RateLimitedError) as info:
        parse(WhoAmIRequest(), 429, content, httpx.Headers({"Retry-After": "9"}))
    assert info.value.retry_after == 2.5  # the body wins


def test_rate_limited_reads_retry_after_from_the_header():
    content = json.dumps(envelope("rate_limited")).encode()
    with pytest.raises(RateLimitedError) as info:
        parse(WhoAmIRequest(), 429, content, httpx.Headers({"Retry-After": "7"}))
    assert info.value.retry_after == 7.0


def test_retry_after_header_that_is_not_a_delay_is_ignored():
    content = json.dumps(envelope("rate_limited")).encode()
    headers = httpx.Headers({"Retry-After": "soon, please"})
    with pytest.raises(RateLimitedError) as info:
        parse(WhoAmIRequest(), 429, content, headers)
    assert info.value.retry_after is None


def test_retry_after_header_as_an_http_date():
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0  # already past
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00", now) is None  # no zone: unreadable
    assert retry_after_seconds(" 12 ") == 12.0
    assert retry_after_seconds("-3") is None
    assert retry_after_seconds("") is None


def test_retry_after_header_is_kept_without_an_envelope():
    with pytest.raises(RateLimitedError) as info:
        parse(WhoAmIRequest(), 429, b"Too Many Requests", httpx.Headers({"Retry-After": "3"}))
    assert info.value.retry_after == 3.0


def test_validation_details_are_kept():
    details = [{"loc": ["body", "seq"], "msg": "too small"}]
    with pytest.raises(BadRequestError) as info:
        parse(WhoAmIRequest(), 422, json.dumps(envelope("bad_request", details=details)).encode())
    assert info.value.details == details


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, BadRequestError),
        (404, NotFoundError),
        (409, ConflictError),
        (418, APIError),
        (429, RateLimitedError),
        (500, InternalServerError),
        (503, UnavailableError),
        (504, InternalServerError),
    ],
)
def test_unknown_code_falls_back_on_status(status, expected):
    with pytest.raises(APIError) as info:
        parse(WhoAmIRequest(), status, json.dumps(envelope("from_the_future")).encode())
    assert type(info.value) is expected
    assert info.value.code == "from_the_future"  # kept for callers that know it


def test_non_json_502_is_an_internal_server_error():
    with pytest.raises(InternalServerError) as info:
        parse(WhoAmIRequest(), 502, b"<html>Bad Gateway</html>")
    assert info.value.status == 502
    assert info.value.code == "http_502"
    assert "Bad Gateway" in info.value.message


def test_empty_error_body():
    with pytest.raises(NotFoundError) as info:
        parse(WhoAmIRequest(), 404, b"")
    assert info.value.message == "HTTP 404"


# send_text_request --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "target"),
    [
        ("d:1:2", {"conversation": "d:1:2"}),
        ("g:7", {"conversation": "g:7"}),
        (5, {"to": 5}),
        ("bob", {"to": "bob"}),
        ("Bob", {"to": "bob"}),
    ],
)
def test_send_text_request_targets(to, target):
    request = send_text_request(to, "hi", "abcdefgh")
    assert request == SendMessageRequest(client_msg_id="abcdefgh", content=TextContent(text="hi"), **target)


def test_send_text_request_makes_a_fresh_key():
    first = send_text_request("bob", "hi", None).client_msg_id
    second = send_text_request("bob", "hi", None).client_msg_id
    assert first != second
    SendMessageRequest(to="bob", client_msg_id=first, content=TextContent(text="x"))  # a valid key


# Clients ------------------------------------------------------------------------------------------


async def test_login_stores_tokens_and_calls_on_session(api, make_client):
    sessions = []
    login = api.post("/v1/auth/login").respond(200, json=session_json())
    me = api.get("/v1/me").respond(200, json={"user": ALICE, "device_id": "laptop"})
    client = make_client(on_session=sessions.append)

    session = await call(client.login("Alice", "secret-pw", device="laptop"))

    assert session.access_token == "access-1"
    assert client.session == session
    assert sessions == [session]
    assert body(login.calls.last.request) == {"username": "alice", "password": "secret-pw", "device": "laptop"}
    assert "authorization" not in login.calls.last.request.headers
    assert await call(client.whoami()) == Me(user=User.model_validate(ALICE), device_id="laptop")
    assert me.calls.last.request.headers["authorization"] == "Bearer access-1"


async def test_failed_login_raises_and_keeps_no_session(api, make_client):
    api.post("/v1/auth/login").respond(401, json=envelope("invalid_credentials"))
    client = make_client()
    with pytest.raises(AuthenticationError):
        await call(client.login("alice", "wrong-pw"))
    assert client.session is None


async def test_expired_token_is_refreshed_once_and_the_call_retried(api, make_client):
    sessions = []
    me = api.get("/v1/me")
    me.side_effect = [
        httpx.Response(401, json=envelope("token_expired")),
        httpx.Response(200, json={"user": ALICE, "device_id": "laptop"}),
    ]
    refresh = api.post("/v1/auth/refresh").respond(200, json=session_json(2))
    client = make_client(access_token="access-1", refresh_token="refresh-token-00000001", on_session=sessions.append)

    me_answer = await call(client.whoami())

    assert me_answer.user.username == "alice"
    assert refresh.call_count == 1
    assert body(refresh.calls.last.request) == {"refresh_token": "refresh-token-00000001"}
    assert "authorization" not in refresh.calls.last.request.headers
    assert [c.request.headers["authorization"] for c in me.calls] == ["Bearer access-1", "Bearer access-2"]
    assert [s.access_token for s in sessions] == ["access-2"]


async def test_a_token_that_expires_again_is_not_refreshed_twice(api, make_client):
    me = api.get("/v1/me").respond(401, json=envelope("token_expired"))
    refresh = api.post("/v1/auth/refresh").respond(200, json=session_json(2))
    client = make_client(access_token="access-1", refresh_token="refresh-token-00000001")
    with pytest.raises(TokenExpiredError):
        await call(client.whoami())
    assert refresh.call_count == 1
    assert me.call_count == 2


async def test_without_a_refresh_token_an_expired_token_is_raised(api, make_client):
    api.get("/v1/me").respond(401, json=envelope("token_expired"))
    refresh = api.post("/v1/auth/refresh")
    client = make_client(access_token="access-1")
    with pytest.raises(TokenExpiredError):
        await call(client.whoami())
    assert refresh.call_count == 0


async def test_other_auth_errors_do_not_refresh(api, make_client):
    api.get("/v1/me").respond(401, json=envelope("unauthorized"))
    refresh = api.post("/v1/auth/refresh")
    client = make_client(access_token="access-1", refresh_token="refresh-token-00000001")
    with pytest.raises(AuthenticationError):
        await call(client.whoami())
    assert refresh.call_count == 0


async def test_logout_forgets_the_tokens(api, make_client):
    api.post("/v1/auth/login").respond(200, json=session_json())
    logout = api.post("/v1/auth/logout").respond(200, json={"ok": True})
    me = api.get("/v1/me").respond(401, json=envelope("unauthorized"))
    client = make_client()
    await call(client.login("alice", "secret-pw"))
    await call(client.logout())
    assert logout.calls.last.request.headers["authorization"] == "Bearer access-1"
    assert client.session is None
    with pytest.raises(AuthenticationError):
        await call(client.whoami())
    assert "authorization" not in me.calls.last.request.headers


async def test_send_text_retries_a_transport_error_with_the_same_client_msg_id(api, make_client, no_sleep):
    route = api.post("/v1/messages")
    route.side_effect = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("lost answer"),
        httpx.Response(200, json=message_json(7, client_msg_id="placeholder")),
    ]
    client = make_client(access_token="access-1")

    message = await call(client.send_text("bob", "hello"))

    assert message.seq == 7
    assert route.call_count == 3
    keys = [body(c.request)["client_msg_id"] for c in route.calls]
    assert len(set(keys)) == 1
    assert [body(c.request) for c in route.calls] == [body(route.calls[0].request)] * 3
    assert len(no_sleep) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(503, text="no upstream"),
        httpx.Response(504, text="<html>Gateway Timeout</html>"),
        httpx.Response(503, json=envelope("unavailable", "the database is busy")),
        httpx.Response(500, json=envelope("unavailable", "nats is down")),  # the code decides
        httpx.RemoteProtocolError("server closed the connection without answering"),
    ],
    ids=["502", "503", "504", "unavailable", "unavailable-code", "dropped"],
)
async def test_send_text_retries_load_balancer_errors_with_the_same_client_msg_id(api, make_client, no_sleep, failure):
    route = api.post("/v1/messages")
    route.side_effect = [failure, failure, httpx.Response(200, json=message_json(9))]
    client = make_client(access_token="access-1")
    message = await call(client.send_text("bob", "hello"))
    assert message.seq == 9
    assert route.call_count == 3
    assert len({body(c.request)["client_msg_id"] for c in route.calls}) == 1
    assert len(no_sleep) == 2 and no_sleep[0] <= no_sleep[1] * 2  # jittered, growing bounds


async def test_retry_after_is_honoured(api, make_client, no_sleep):
    route = api.post("/v1/messages")
    route.side_effect = [
        httpx.Response(503, headers={"Retry-After": "7"}, text="maintenance"),
        httpx.Response(200, json=message_json()),
    ]
    client = make_client(access_token="access-1")
    await call(client.send_text("bob", "hello"))
    assert no_sleep == [7.0]


async def test_a_retry_after_past_the_deadline_raises_at_once(api, make_client, no_sleep):
    route = api.post("/v1/messages").respond(503, headers={"Retry-After": "60"}, text="maintenance")
    client = make_client(access_token="access-1")  # the default deadline is 30 s
    with pytest.raises(UnavailableError) as info:
        await call(client.send_text("bob", "hello"))
    assert info.value.retry_after == 60.0
    assert route.call_count == 1
    assert no_sleep == []


async def test_a_server_error_is_not_retried(api, make_client, no_sleep):
    route = api.post("/v1/messages").respond(500, json=envelope("internal"))
    client = make_client(access_token="access-1")
    with pytest.raises(InternalServerError):
        await call(client.send_text("bob", "hello"))
    assert route.call_count == 1


async def test_reads_are_retried_too(api, make_client, no_sleep):
    route = api.get("/v1/me")
    route.side_effect = [
        httpx.ReadTimeout("slow"),
        httpx.Response(504),
        httpx.Response(200, json={"user": ALICE, "device_id": "laptop"}),
    ]
    client = make_client(access_token="access-1")
    assert (await call(client.whoami())).device_id == "laptop"
    assert route.call_count == 3


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("the answer was lost"), httpx.Response(502), httpx.Response(503, json=envelope("unavailable"))],
    ids=["lost-answer", "502", "unavailable"],
)
async def test_a_request_that_cannot_be_repeated_is_not_retried_once_sent(api, make_client, no_sleep, failure):
    # Creating a group twice would make two groups: only an error before sending is retried.
    route = api.post("/v1/groups").mock(side_effect=[failure])
    client = make_client(access_token="access-1")
    with pytest.raises((TransportError, APIError)):
        await call(client.groups.create("book club", []))
    assert route.call_count == 1


async def test_a_request_that_cannot_be_repeated_is_retried_when_it_never_left(api, make_client, no_sleep):
    route = api.post("/v1/auth/register")
    route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=ALICE)]
    client = make_client()
    assert (await call(client.register("alice", "secret-password"))).username == "alice"
    assert route.call_count == 2


async def test_retries_can_be_turned_off(api, make_client, no_sleep):
    route = api.post("/v1/messages").respond(503)
    client = make_client(access_token="access-1", retry=Retry(deadline=0))
    with pytest.raises(UnavailableError):
        await call(client.send_text("bob", "hello"))
    assert route.call_count == 1


async def test_an_expired_token_and_a_retry_in_one_call(api, make_client, no_sleep):
    api.post("/v1/auth/refresh").respond(200, json=session_json(2))
    route = api.post("/v1/messages")
    route.side_effect = [
        httpx.Response(401, json=envelope("token_expired")),
        httpx.Response(503),
        httpx.Response(200, json=message_json()),
    ]
    client = make_client(access_token="access-1", refresh_token="refresh-token-00000001")
    await call(client.send_text("bob", "hello"))
    assert [c.request.headers["authorization"] for c in route.calls] == [
        "Bearer access-1",
        "Bearer access-2",
        "Bearer access-2",
    ]


async def test_send_text_keeps_a_given_client_msg_id(api, make_client, no_sleep):
    route = api.post("/v1/messages")
    route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=message_json())]
    client = make_client(access_token="access-1")
    await call(client.send_text("bob", "hello", client_msg_id="my-key-0001"))
    assert [body(c.request)["client_msg_id"] for c in route.calls] == ["my-key-0001", "my-key-0001"]


async def test_send_text_gives_up_at_the_deadline(api, make_client, no_sleep):
    route = api.post("/v1/messages").mock(side_effect=httpx.ConnectError("refused"))
    client = make_client(access_token="access-1", retry=Retry(deadline=10.0, initial=1.0, max_delay=4.0))
    with pytest.raises(TransportError):
        await call(client.send_text("bob", "hello"))
    assert sum(no_sleep) < 10.0
    assert route.call_count == len(no_sleep) + 1 >= 3
    assert len({body(c.request)["client_msg_id"] for c in route.calls}) == 1


async def test_send_text_does_not_retry_api_errors(api, make_client, no_sleep):
    route = api.post("/v1/messages").respond(404, json=envelope("user_not_found"))
    client = make_client(access_token="access-1")
    with pytest.raises(UserNotFoundError):
        await call(client.send_text("nobody", "hello"))
    assert route.call_count == 1
    assert no_sleep == []


@pytest.mark.parametrize(
    ("to", "target"),
    [("d:1:2", {"conversation": "d:1:2"}), (2, {"to": 2}), ("Bob", {"to": "bob"})],
)
async def test_send_text_target_goes_to_to_or_conversation(api, make_client, to, target):
    route = api.post("/v1/messages").respond(200, json=message_json())
    client = make_client(access_token="access-1")
    await call(client.send_text(to, "hi"))
    sent = body(route.calls.last.request)
    assert {key: sent[key] for key in ("to", "conversation") if key in sent} == target
    assert sent["content"] == {"kind": "text", "text": "hi"}


async def test_history_sends_the_query(api, make_client):
    route = api.get("/v1/conversations/d:1:2/messages").respond(
        200, json={"conversation": "d:1:2", "messages": [message_json(4)], "has_more": False, "max_seq": 4}
    )
    client = make_client(access_token="access-1")
    result = await call(client.history("d:1:2", after=3, limit=10))
    assert isinstance(result, MessagePage)
    assert [m.seq for m in result.messages] == [4]
    assert dict(route.calls.last.request.url.params) == {"after": "3", "limit": "10"}


async def test_transport_errors_become_transport_error(api, make_client):
    api.get("/v1/me").mock(side_effect=httpx.ConnectError("refused"))
    client = make_client(access_token="access-1", retry=Retry(deadline=0))
    with pytest.raises(TransportError) as info:
        await call(client.whoami())
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_send_text_does_not_lose_a_push_held_behind_its_own_message(api, no_sleep):
    client = AsyncClient(BASE, access_token="access-1")
    # The engine that events() would create; its gateway loop needs a socket, so it is driven by hand.
    engine = client._engine = SyncEngine(watermarks={"d:1:2": 3})
    # Bob's reply (seq 5) is pushed while our own send (seq 4, never pushed to us) is in flight.
    reply = Message.model_validate(message_json(5, sender=2, client_msg_id="bobs-key-1"))
    (fetch,) = engine.on_push(reply)
    api.post("/v1/messages").respond(200, json=message_json(4))
    try:
        await client.send_text("d:1:2", "hi")
    finally:
        await client.aclose()
    # The events loop then gets the answer to its fetch.
    page = MessagePage(
        conversation="d:1:2",
        messages=[Message.model_validate(message_json(4))],
        has_more=False,
        max_seq=5,
    )
    released = [action.message.seq for action in engine.on_history(fetch, page) if isinstance(action, Deliver)]
    assert released == [5]
