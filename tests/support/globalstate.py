"""Process-wide state that a test (or the command, TUI, SDK or server code it runs) must leave as it found it.

The suite runs in one process, in order: a logger level, an environment variable or a signal handler left
behind by one test changes what every later test sees (a warning never logged, a child process that
ignores Ctrl-C). :func:`snapshot` records what can be compared cheaply; :func:`differences` names what
changed between two snapshots.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Snapshot", "differences", "snapshot"]

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGPIPE", "SIGCHLD", "SIGUSR1")
)

# pytest's own logging handlers come and go around each phase of a test: not the test's doing.
_PYTEST_HANDLERS = ("LogCaptureHandler", "_LiveLoggingNullHandler", "_FileHandler", "_LiveLoggingStreamHandler")


# uvicorn.Config sets its own loggers' levels each time an API node starts, the same way every time.
_OWNED_BY_LIBRARIES = ("uvicorn",)

# pytest says here which test runs, and in which phase.
_PYTEST_ENVIRON = ("PYTEST_CURRENT_TEST",)


def _handlers(logger: logging.Logger) -> tuple[int, ...]:
    return tuple(id(h) for h in logger.handlers if type(h).__name__ not in _PYTEST_HANDLERS)


def _loggers() -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {"": (logging.root.level, _handlers(logging.root), True, False)}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] not in _OWNED_BY_LIBRARIES:
            found[name] = (logger.level, _handlers(logger), logger.propagate, logger.disabled)
    return found


def _wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def _main_loop() -> object:
    policy = asyncio.get_event_loop_policy()
    local = getattr(policy, "_local", None)
    return getattr(local, "_loop", None)


@dataclass
class Snapshot:
    """What :func:`snapshot` records."""

    loggers: dict[str, tuple[Any, ...]]
    disable: int
    environ: dict[str, str]
    signals: dict[int, object]
    blocked: frozenset[int]
    wakeup_fd: int
    streams: tuple[int, int, int]
    cwd: str
    umask: int
    policy: type
    loop: object
    switch_interval: float
    frozen: int
    threads: frozenset[int]


def snapshot() -> Snapshot:
    """The process-wide state now (call it from the main thread)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return Snapshot(
        loggers=_loggers(),
        disable=logging.root.manager.disable,
        environ={key: value for key, value in os.environ.items() if key not in _PYTEST_ENVIRON},
        signals={sig: signal.getsignal(sig) for sig in _SIGNALS},
        blocked=frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        wakeup_fd=_wakeup_fd(),
        streams=(id(sys.stdin), id(sys.stdout), id(sys.stderr)),
        cwd=os.getcwd(),
        umask=umask,
        policy=type(asyncio.get_event_loop_policy()),
        loop=_main_loop(),
        switch_interval=sys.getswitchinterval(),
        frozen=gc.get_freeze_count(),
        threads=frozenset(t.ident or 0 for t in threading.enumerate() if not t.daemon),
    )


THREAD_GRACE = 3.0
"""Seconds a thread the test started may take to end after it (a pool's thread finishing its last job)."""

POOL_THREADS = ("AnyIO worker thread",)
"""Threads of a library's own pool, idle and reused by the next test: not a leak (AnyIO ends an idle one after
10 s)."""


def _threads(ident: frozenset[int]) -> list[str]:
    deadline = time.monotonic() + THREAD_GRACE
    running = [t for t in threading.enumerate() if t.ident in ident and t.name not in POOL_THREADS]
    for thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in running if t.is_alive())


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed, in words (empty if nothing did).

    Loggers first made during the test count only if they were given a level or a handler; a non-daemon
    thread counts only if it is still running.
    """
    found: list[str] = []
    for name, state in after.loggers.items():
        was = before.loggers.get(name, (logging.NOTSET, (), True, False))
        if state != was:
            found.append(f"logger {name or 'root'!r}: (level, handlers, propagate, disabled) {was} -> {state}")
    if after.disable != before.disable:
        found.append(f"logging.disable: {before.disable} -> {after.disable}")
    for key in sorted(before.environ.keys() | after.environ.keys()):
        if before.environ.get(key) != after.environ.get(key):
            found.append(f"os.environ[{key!r}]: {before.environ.get(key)!r} -> {after.environ.get(key)!r}")
    for sig, handler in after.signals.items():
        if handler != before.signals[sig]:
            found.append(f"signal {signal.Signals(sig).name} handler: {before.signals[sig]!r} -> {handler!r}")
    if after.blocked != before.blocked:
        found.append(f"blocked signals: {sorted(before.blocked)} -> {sorted(after.blocked)}")
    if after.wakeup_fd != before.wakeup_fd:
        found.append(f"signal wakeup fd: {before.wakeup_fd} -> {after.wakeup_fd}")
    if after.streams != before.streams:
        found.append("sys.stdin, sys.stdout or sys.stderr was replaced")
    if after.cwd != before.cwd:
        found.append(f"working directory: {before.cwd} -> {after.cwd}")
    if after.umask != before.umask:
        found.append(f"umask: {before.umask:o} -> {after.umask:o}")
    if after.policy is not before.policy:
        found.append(f"asyncio event loop policy: {before.policy.__name__} -> {after.policy.__name__}")
    if after.loop is not before.loop:
        found.append(f"asyncio event loop set for the main thread: {before.loop!r} -> {after.loop!r}")
    if after.switch_interval != before.switch_interval:
        found.append(f"sys.setswitchinterval: {before.switch_interval} -> {after.switch_interval}")
    if after.frozen != before.frozen:
        found.append(f"gc.freeze: {before.frozen} -> {after.frozen} objects out of the collector's sight")
    running = _threads(after.threads - before.threads)
    if running:
        found.append(f"threads left running: {', '.join(running)}")
    return found
