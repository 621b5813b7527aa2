"""Commands run in-process (a test session, a shell) leave the process's logging as they found it."""

from __future__ import annotations

import logging

import pytest

from im_cli.render import connection_log


def test_connection_log_puts_the_sdk_logger_back():
    sdk_log = logging.getLogger("im_sdk")
    level, handlers = sdk_log.level, list(sdk_log.handlers)
    handler = logging.Handler()
    seen: list[tuple[bool, int]] = []

    def interrupted() -> None:
        with connection_log(handler):
            seen.append((handler in sdk_log.handlers, sdk_log.getEffectiveLevel()))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert seen == [(True, logging.INFO)] or (seen[0][0] and seen[0][1] < logging.INFO)
    assert (sdk_log.level, sdk_log.handlers) == (level, handlers)


def test_listen_puts_the_sdk_logger_back(im):
    sdk_log = logging.getLogger("im_sdk")
    level = sdk_log.level
    result = im("listen")
    assert result.exit_code == 4 and "not logged in" in result.stderr
    assert sdk_log.level == level and not sdk_log.handlers
