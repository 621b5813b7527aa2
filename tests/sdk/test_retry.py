"""im_sdk.retry: which failures are retried, for which requests, and for how long (no I/O)."""

from __future__ import annotations

import httpx
import pytest

import im_sdk.retry
from im_schema.files import UploadRequest
from im_schema.groups import CreateGroupRequest, UpdateGroupRequest
from im_schema.lifecycle import TypingRequest
from im_schema.rest import HistoryRequest, LoginRequest, LogoutRequest, MarkReadRequest, RefreshRequest
from im_schema.social import RemoveFriendRequest
from im_sdk import Retry
from im_sdk._base import is_idempotent, send_text_request
from im_sdk.errors import (
    BadRequestError,
    InternalServerError,
    ProtocolError,
    RateLimitedError,
    TransportError,
    UnavailableError,
)
from im_sdk.retry import is_retryable, surely_unsent


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(im_sdk.retry, "monotonic", lambda: now[0])
    return now


def transport_error(cause):
    error = TransportError(repr(cause))
    error.__cause__ = cause
    return error


UNAVAILABLE = UnavailableError("unavailable", "busy", status=503)
BAD_GATEWAY = InternalServerError("http_502", "Bad Gateway", status=502)
LOST_ANSWER = transport_error(httpx.ReadTimeout("no answer"))
REFUSED = transport_error(httpx.ConnectError("refused"))


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (LOST_ANSWER, True, True),
        (LOST_ANSWER, False, False),  # it may have been done: not for a request that cannot be repeated
        (REFUSED, False, True),  # it never left
        (transport_error(httpx.ConnectTimeout("slow")), False, True),
        (BAD_GATEWAY, True, True),
        (BAD_GATEWAY, False, False),
        (InternalServerError("http_504", "Gateway Timeout", status=504), True, True),
        (UNAVAILABLE, True, True),
        (InternalServerError("unavailable", "nats down", status=500), True, True),
        (InternalServerError("internal", "bug", status=500), True, False),
        (RateLimitedError("rate_limited", "slow down", status=429, retry_after=1), True, False),
        (BadRequestError("bad_request", "no", status=400), True, False),
        (ProtocolError("upgrade"), True, False),
    ],
)
def test_what_is_retried(error, idempotent, expected):
    assert is_retryable(error, idempotent=idempotent) is expected


def test_surely_unsent_reads_the_cause():
    assert surely_unsent(REFUSED)
    assert surely_unsent(httpx.PoolTimeout("pool"))
    assert not surely_unsent(LOST_ANSWER)
    assert not surely_unsent(TransportError("no cause"))


@pytest.mark.parametrize(
    ("request_model", "expected"),
    [
        (HistoryRequest(conversation="d:1:2"), True),
        (send_text_request("bob", "hi", None), True),  # its client_msg_id makes a repeat harmless
        (MarkReadRequest(conversation="d:1:2", seq=3), True),
        (TypingRequest(conversation="d:1:2"), True),
        (UploadRequest(), True),
        (UpdateGroupRequest(group_id=1, name="x"), True),
        (CreateGroupRequest(name="club"), False),
        (LoginRequest(username="alice", password="secret-password"), False),
        (RefreshRequest(refresh_token="refresh-token-00000001"), False),  # rotates: a repeat fails
        (LogoutRequest(), False),
        (RemoveFriendRequest(user=2), False),  # a repeat of a DELETE that worked answers 404
    ],
)
def test_which_requests_are_idempotent(request_model, expected):
    assert is_idempotent(request_model) is expected


def test_pauses_grow_from_initial_to_the_cap_without_jitter(clock):
    attempts = Retry(deadline=1000, initial=0.5, factor=2, max_delay=3, jitter=False).start()
    pauses = [attempts.pause(UNAVAILABLE, idempotent=True) for _ in range(6)]
    assert pauses == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_jittered_pauses_stay_in_the_upper_half_of_their_bound(clock):
    for _ in range(100):
        attempts = Retry(deadline=1000, initial=1, factor=2, max_delay=4).start()
        for bound in (1, 2, 4, 4):
            pause = attempts.pause(UNAVAILABLE, idempotent=True)
            assert pause is not None and bound / 2 <= pause <= bound


def test_retry_after_wins_when_longer(clock):
    attempts = Retry(initial=0.1, jitter=False).start()
    later = UnavailableError("unavailable", "busy", status=503, retry_after=4.0)
    assert attempts.pause(later, idempotent=True) == 4.0
    sooner = UnavailableError("unavailable", "busy", status=503, retry_after=0.0)
    assert attempts.pause(sooner, idempotent=True) == 0.2


def test_no_attempt_starts_after_the_deadline(clock):
    attempts = Retry(deadline=5, initial=1, factor=1, max_delay=1, jitter=False).start()
    given = []
    while (pause := attempts.pause(LOST_ANSWER, idempotent=True)) is not None:
        given.append(pause)
        clock[0] += pause + 0.2  # the pause, then an attempt that takes 0.2 s
    assert given == [1.0] * 4
    assert attempts.remaining() == pytest.approx(0.2)


def test_a_retry_after_beyond_the_deadline_gives_up_now(clock):
    attempts = Retry(deadline=30).start()
    assert attempts.pause(UnavailableError("unavailable", "x", status=503, retry_after=31), idempotent=True) is None


def test_deadline_zero_never_retries(clock):
    assert Retry(deadline=0).start().pause(REFUSED, idempotent=True) is None


@pytest.mark.parametrize("kwargs", [{"deadline": -1}, {"initial": -1}, {"max_delay": -1}, {"factor": 0.5}])
def test_invalid_retry_is_refused(kwargs):
    with pytest.raises(ValueError, match=">= 0"):
        Retry(**kwargs)
