"""Shared helpers for the benchmarks: starting a cluster, percentiles, printing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

from im_server.cluster.natsbin import free_port_block

BENCH_ENV = {
    # The load generator registers thousands of users; a cheap hash keeps setup short. Never use in production.
    "IM_ARGON2_TIME_COST": "1",
    "IM_ARGON2_MEMORY_COST": "1024",
    "IM_ARGON2_PARALLELISM": "1",
    "IM_SEND_RATE": "100000",
    "IM_SEND_BURST": "100000",
    "IM_CONNECT_RATE": "100000",
    "IM_CONNECT_BURST": "100000",
    # One address registers and logs in thousands of users, and each connection sends as fast as it can.
    "IM_REGISTER_RATE": "100000",
    "IM_REGISTER_BURST": "100000",
    "IM_ARGON2_QUEUE": "100000",
    "IM_WS_FRAME_RATE": "100000",
    "IM_WS_FRAME_BURST": "100000",
    "IM_LOG_LEVEL": "WARNING",
    # Benchmarks put thousands of fresh users into groups: no consent step, no invitation limit.
    "IM_GROUP_INVITES_DEFAULT": "everyone",
    "IM_GROUP_INVITES_PER_HOUR": "100000000",
}


@contextmanager
def cluster(gateways: int, *, extra_env: dict[str, str] | None = None, db: str | None = None) -> Iterator[str]:
    """Run ``im server up`` in a temporary directory; yields the API URL."""
    port = free_port_block(gateways + 1)
    with tempfile.TemporaryDirectory(prefix="im-bench-") as data_dir:
        env = {**os.environ, **BENCH_ENV, **(extra_env or {})}
        env.pop("IM_NATS_URL", None)
        command = [
            sys.executable,
            "-c",
            "from im_cli.main import main; main()",
            "server",
            "up",
            "--port",
            str(port),
            "--gateways",
            str(gateways),
            "--data-dir",
            data_dir,
        ]
        if db:
            command += ["--db", db]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if "Ctrl-C stops" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        try:
            if not ready.wait(120):
                raise RuntimeError("the cluster did not start")
            url = f"http://127.0.0.1:{port}"
            httpx.get(f"{url}/healthz").raise_for_status()
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def now_ns() -> int:
    return time.time_ns()
