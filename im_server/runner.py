"""Process entry points: ``python -m im_server api|gateway``.

Each role runs until SIGINT or SIGTERM, then stops cleanly: an API node commits what is queued, a
gateway tells its clients to reconnect elsewhere and removes their routes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError

from . import logs
from .settings import Settings

__all__ = ["configure_logging", "main", "run_api", "run_gateway", "tune_garbage_collector"]

log = logging.getLogger("im_server")

_STOPPING = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a node."""


def configure_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Log records to stderr as text with time, level and logger, or as JSON (``IM_LOG_FORMAT=json``).

    Raises:
        ValueError: an unknown log format.
    """
    logs.configure(
        level or os.environ.get("IM_LOG_LEVEL", "INFO"), log_format or os.environ.get("IM_LOG_FORMAT", "text")
    )


def tune_garbage_collector() -> None:
    """Keep full collections off the latency path.

    After start-up, the heap holds hundreds of thousands of long-lived objects (modules, pydantic and
    SQLAlchemy schemas) that a full collection would scan every time, pausing the event loop for 100 ms
    and more. Freezing them moves them out of the collector's sight for good.
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.0005)


async def _until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]], stopping: asyncio.Event | None = None
) -> None:
    # ``stopping`` may also be set by the node itself (a drained gateway).
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOPPING:
        loop.add_signal_handler(sig, stopping.set)
    await start()
    tune_garbage_collector()
    await stopping.wait()
    await stop()


async def run_api(settings: Settings) -> None:
    """Run one API node until signalled."""
    from .api.server import ApiServer

    server = ApiServer(settings)
    await _until_signalled(server.start, server.stop)


async def run_gateway(settings: Settings) -> None:
    """Run one gateway node until signalled."""
    from .gateway.node import GatewayNode

    node = GatewayNode(settings)
    await _until_signalled(node.start, node.stop, node.drained)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (for this run only: the process's event loop policy is left alone)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _wakeup_fd() -> int | None:
    """The signal wakeup fd (``None`` outside the main thread, where it cannot be read or set)."""
    try:
        fd = signal.set_wakeup_fd(-1)
    except ValueError:
        return None
    signal.set_wakeup_fd(fd)
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m im_server api|gateway``; configuration comes from ``IM_*`` variables.

    What the run changes for the whole process (the root logger's handlers and level, the garbage
    collector and the thread switch interval) is put back when it returns: ``im server api`` may run
    in a process that goes on (a test session).
    """
    parser = argparse.ArgumentParser(prog="python -m im_server", description=__doc__)
    parser.add_argument("role", choices=["api", "gateway"])
    args = parser.parse_args(argv)
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    saved_logging = (list(root.handlers), root.level, alembic.level)
    switch_interval, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    handlers = {sig: signal.getsignal(sig) for sig in _STOPPING}
    wakeup = _wakeup_fd()
    try:
        try:
            configure_logging()
            settings = Settings()
            settings.signing_key()
        except (ValidationError, ValueError) as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_api(settings) if args.role == "api" else run_gateway(settings))
        return 0
    finally:
        # uvloop leaves its own handlers (and its wakeup socket, closed with the loop) behind.
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        if wakeup is not None:
            signal.set_wakeup_fd(wakeup)
        log_handlers, level, alembic_level = saved_logging
        for log_handler in list(root.handlers):
            if log_handler not in log_handlers:
                root.removeHandler(log_handler)
                log_handler.close()
        for log_handler in log_handlers:
            if log_handler not in root.handlers:
                root.addHandler(log_handler)
        root.setLevel(level)
        alembic.setLevel(alembic_level)
        sys.setswitchinterval(switch_interval)
        if not frozen:
            gc.unfreeze()
