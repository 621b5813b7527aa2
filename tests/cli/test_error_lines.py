"""How SDK errors become the CLI's one line (no server needed: the errors are built as the SDK does)."""

from __future__ import annotations

from im_cli.errors import ExitCode, one_line
from im_sdk.errors import error_for


def test_a_rate_limit_says_how_long_to_wait():
    exc = error_for("rate_limited", "too many failed logins for this account; wait", status=429, retry_after=8.6)
    assert one_line(exc) == (
        "rate_limited: too many failed logins for this account; wait; try again in 9 s",
        ExitCode.REFUSED,
    )
    # Without a delay the server's words stand alone.
    assert one_line(error_for("rate_limited", "slow down", status=429)) == ("rate_limited: slow down", ExitCode.REFUSED)


def test_a_session_that_ended_says_log_in_once():
    exc = error_for("unauthorized", "this device was logged out; log in again", status=401)
    assert one_line(exc) == ("this device was logged out; run: im login USERNAME", ExitCode.AUTHENTICATION)
