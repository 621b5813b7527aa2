"""The one code-to-status table, and the server's and SDK's errors built on it."""

from __future__ import annotations

import pytest

from im_schema.errors import HTTP_STATUS, ErrorCode, http_status
from im_sdk import errors as sdk
from im_server import errors as server


def test_every_code_has_a_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= status <= 599 for status in HTTP_STATUS.values())


def test_unknown_codes_have_no_status() -> None:
    assert http_status("a_code_from_the_future") is None
    assert http_status("") is None
    assert http_status("muted") == 403


@pytest.mark.parametrize(
    "cls",
    [
        server.BadRequest,
        server.Unauthorized,
        server.Forbidden,
        server.NotFound,
        server.Conflict,
        server.PayloadTooLarge,
        server.UnsupportedMedia,
        server.RangeNotSatisfiable,
        server.Unprocessable,
        server.RateLimited,
        server.Unavailable,
    ],
)
def test_server_error_status_comes_from_its_code(cls: type[server.ServerError]) -> None:
    error = cls("no")
    assert error.status == HTTP_STATUS[error.code]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_a_refusal_answers_with_its_codes_status(code: ErrorCode) -> None:
    refusal = server.Refusal(code.value, "no", retry_after=2.0)
    assert refusal.code is code
    assert refusal.status == HTTP_STATUS[code]
    assert refusal.envelope() == {"error": {"code": code.value, "message": "no", "retry_after": 2.0}}
    assert refusal.frame("abcdefgh").code == code.value


def test_a_refusal_with_an_unknown_code_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not_a_code"):
        server.Refusal("not_a_code", "no")


@pytest.mark.parametrize("code", list(ErrorCode))
def test_sdk_class_agrees_with_the_table(code: ErrorCode) -> None:
    """Over WebSocket (no status) and REST alike, a code maps to the class of its status or a subclass."""
    by_status = sdk._BY_STATUS[HTTP_STATUS[code]]
    for status in (None, HTTP_STATUS[code]):
        error = sdk.error_for(code.value, "no", status=status)
        assert isinstance(error, by_status), (code, status, type(error))


def test_sdk_tolerates_codes_it_does_not_know() -> None:
    assert type(sdk.error_for("brand_new", "no", status=409)) is sdk.ConflictError
    assert type(sdk.error_for("brand_new", "no", status=599)) is sdk.InternalServerError
    assert type(sdk.error_for("brand_new", "no")) is sdk.APIError
    assert type(sdk.error_for("brand_new", "no", status=418)) is sdk.APIError
