"""Exit codes and one-line errors: every failure of a command ends as one ``error: ...`` line on stderr.

The exit codes follow the usual conventions (``2`` is a usage error, as click and the shells use it):

====  ===========================================================================================
code  meaning
====  ===========================================================================================
0     done
1     the server refused (not allowed, not found, a conflict), or a local file could not be used
2     usage: an unknown command or option, a missing or malformed argument, a value out of range
3     the server cannot be reached
4     authentication: not logged in, a wrong password, a session that ended
5     the local cluster cannot start (already running in that data dir, a port in use)
130   interrupted (Ctrl-C)
====  ===========================================================================================

:func:`one_line` turns what a command may raise into ``(message, code)``; the ``im`` group calls it for
every command, so no traceback reaches the user (``IM_DEBUG=1`` shows it for a bug report).
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import ValidationError

from im_sdk import IMError
from im_sdk.errors import AuthenticationError, RateLimitedError, TransportError

__all__ = ["ExitCode", "one_line", "validation_message"]


class ExitCode(enum.IntEnum):
    """What the exit status of ``im`` means (documented in docs/cli.md)."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTHENTICATION = 4
    CLUSTER = 5
    INTERRUPTED = 130


# What a field is called in a sentence.
_FIELDS = {
    "username": "the username",
    "password": "the password",
    "display_name": "the display name",
    "device": "the device name",
    "text": "the text",
    "name": "the name",
    "message": "the note",
    "caption": "the caption",
    "nickname": "the nickname",
    "remark": "the remark",
    "announcement": "the announcement",
    "bio": "the bio",
    "to": "the recipient",
    "user": "the user",
    "users": "a user",
    "conversation": "the conversation id",
}

_USERNAME = "a user id, or a username of 3-32 characters: a-z 0-9 _ . - (starting with a letter or digit)"
_PATTERNS = {
    "username": "3-32 characters: lowercase letters, digits and _ . - (starting with a letter or digit)",
    "to": _USERNAME,
    "user": _USERNAME,
    "users": _USERNAME,
    "device": "1-64 characters: letters, digits, _ and - (starting with a letter or digit)",
}


def _field(loc: tuple[Any, ...]) -> tuple[str, str]:
    names = [str(part) for part in loc if isinstance(part, str)]
    key = names[-1] if names else ""
    # A union (UserId | Username) reports its branches as extra location parts: name the field itself.
    for part in names:
        if part in _FIELDS:
            key = part
            break
    return key, _FIELDS.get(key, f"the {key.replace('_', ' ')}" if key else "a value")


def validation_message(exc: ValidationError) -> str:
    """The first problem of a validation error as a sentence (``the password needs at least 8 characters``)."""
    errors = exc.errors()
    if not errors:
        return "invalid input"
    # A union reports one error per branch; the most telling is the first that is not a type mismatch.
    # A union (a user id or a username) reports one error per branch: the string branch says more.
    error = next(
        (e for e in errors if e["type"].startswith("string_")),
        next((e for e in errors if not e["type"].endswith(("_type", "_parsing"))), errors[0]),
    )
    key, what = _field(tuple(error.get("loc", ())))
    context = error.get("ctx") or {}
    kind = error["type"]
    if kind == "string_too_short":
        least = context.get("min_length", 1)
        return f"{what} is empty" if least == 1 else f"{what} needs at least {least} characters"
    if kind == "string_blank":
        return f"{what} is blank (only whitespace or invisible characters)"
    if kind == "string_too_long":
        return f"{what} is too long (at most {context.get('max_length')} characters)"
    if kind == "string_pattern_mismatch":
        return f"{what} may only be {_PATTERNS.get(key, 'in the documented form')}"
    if kind in ("too_long", "too_short"):
        return f"{what}: {str(error['msg']).lower()}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{what} is out of range ({str(error['msg']).lower()})"
    return f"{what}: {str(error['msg']).lower()}"


def _transport_reason(exc: TransportError) -> str:
    """What broke, in the words of the operating system (``[Errno 111] Connection refused``), not as the
    repr of the HTTP library's exception that the SDK's message carries for debugging."""
    cause = exc.__cause__
    while cause is not None and not str(cause) and cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not None and str(cause):
        return str(cause)
    return str(exc)


def one_line(exc: BaseException, server: str | None = None) -> tuple[str, ExitCode] | None:
    """A failure as one line and an exit code; ``None`` for what is not a known kind of failure."""
    if isinstance(exc, ValidationError):
        return validation_message(exc), ExitCode.USAGE
    if isinstance(exc, TransportError):
        return f"cannot reach {server or 'the server'}: {_transport_reason(exc)}", ExitCode.UNREACHABLE
    if isinstance(exc, AuthenticationError):
        # The server may say "log in again" itself: the command to run says it once.
        message = exc.message.removesuffix("; log in again").removesuffix(", log in again")
        return f"{message}; run: im login USERNAME", ExitCode.AUTHENTICATION
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        wait = max(1, round(exc.retry_after))
        return f"{exc}; try again in {wait} s", ExitCode.REFUSED
    if isinstance(exc, IMError):
        return str(exc), ExitCode.REFUSED
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror or exc}", ExitCode.REFUSED
    return None
