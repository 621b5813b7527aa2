"""Log records as text (the default) or one JSON object per line (``IM_LOG_FORMAT=json``).

Every record carries the id of the node that wrote it (``node_id``) and, where one applies, the request
(``request_id``, API nodes: the client's ``X-Request-ID`` or a generated one, echoed back) and the
WebSocket connection (``connection_id``, gateways). They are context variables: set once where a request
or a connection starts, they follow every record written while it is handled, in any module. A record
written outside any node's context names the process's node (the last one started; one per process in
production).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "LOG_FORMATS",
    "ContextFilter",
    "LogFormat",
    "configure",
    "connection_id",
    "node_id",
    "request_id",
    "set_process_node",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

node_id: ContextVar[str | None] = ContextVar("im_node_id", default=None)
"""The node handling the current request or connection."""
request_id: ContextVar[str | None] = ContextVar("im_request_id", default=None)
"""The HTTP request being handled (API nodes)."""
connection_id: ContextVar[str | None] = ContextVar("im_connection_id", default=None)
"""The WebSocket connection being handled (gateways)."""

_process_node: str | None = None

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def set_process_node(node: str) -> None:
    """The node named by records written outside a request or connection."""
    global _process_node
    _process_node = node


class ContextFilter(logging.Filter):
    """Puts ``node_id`` and, when set, ``request_id`` and ``connection_id`` on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = node_id.get() or _process_node
        if (request := request_id.get()) is not None:
            record.request_id = request
        if (connection := connection_id.get()) is not None:
            record.connection_id = connection
        return True


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format``: JSON with ``time``, ``level``, ``logger``, ``message`` and the ids."""
    if log_format == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str = "INFO", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send records at ``level`` and above to ``stream`` (stderr) in ``log_format``.

    Raises:
        ValueError: ``log_format`` is neither ``text`` nor ``json``.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"IM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter("json" if log_format == "json" else "text"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
