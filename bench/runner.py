"""One benchmark run: start (or reach) the cluster, start the client processes, run the chosen workloads.

:func:`run` returns the JSON document described in docs/performance.md: ``meta`` (command, time, machine,
load average before and after, sizes) and ``workloads`` (one object per workload run, in order). A workload
that fails is recorded with its ``error`` and the run goes on with the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.clients import Workers
from bench.system import Server
from bench.workloads import WORKLOADS, Sizes

__all__ = ["Options", "run"]


@dataclass
class Options:
    """What to run, where, and how big."""

    only: list[str] = field(default_factory=lambda: list(WORKLOADS))
    sizes: Sizes = field(default_factory=Sizes)
    url: str | None = None
    server_pids: dict[str, int] = field(default_factory=dict)
    gateways: int = 2
    procs: int = 2
    pin: bool = False
    db: str | None = None
    command: str = "python -m bench"
    log: Any = None
    """Where progress lines go (a file object; ``None``: nowhere)."""


def _raise_file_limit() -> None:
    # Thousands of sockets per process: take the hard limit (children, the servers too, inherit it).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(options: Options) -> dict[str, Any]:
    """Run the workloads of ``options`` and return the result document."""

    def say(text: str) -> None:
        if options.log is not None:
            print(text, file=options.log, flush=True)

    unknown = [name for name in options.only if name not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; one of {', '.join(WORKLOADS)}")
    _raise_file_limit()
    meta: dict[str, Any] = {
        "command": options.command,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_before": list(os.getloadavg()),
        "pin": options.pin,
        "procs": options.procs,
        "gateways": options.gateways,
        "url": options.url,
        "sizes": dataclasses.asdict(options.sizes),
    }
    server = Server(
        url=options.url, gateways=options.gateways, pids=options.server_pids, db=options.db, pin=options.pin
    )
    workloads: dict[str, Any] = {}
    say("starting the cluster" if options.url is None else f"using the cluster at {options.url}")
    url = server.start()
    meta["server_processes"] = sorted(server.pids)
    if server.pids:
        # Printed so that a profiler can be attached during the run (py-spy record --pid PID).
        say("server processes: " + ", ".join(f"{name} pid {pid}" for name, pid in sorted(server.pids.items())))
    workers: Workers | None = None
    try:
        workers = Workers(url, options.procs)
        for name in (n for n in WORKLOADS if n in options.only):
            say(f"{name} ...")
            started = time.monotonic()
            try:
                workloads[name] = WORKLOADS[name](server, workers, options.sizes)
            except Exception:
                workloads[name] = {"error": traceback.format_exc()}
            workloads[name]["wall_s"] = round(time.monotonic() - started, 2)
            say(f"{name} done in {workloads[name]['wall_s']:.1f} s")
    finally:
        if workers is not None:
            workers.close()
        server.stop()
    meta["loadavg_after"] = list(os.getloadavg())
    return {"meta": meta, "workloads": workloads}
