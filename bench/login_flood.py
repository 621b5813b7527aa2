"""A flood of password guesses against one API node, with production Argon2 settings: the API process's
memory and the latency of sends while it lasts.

Starts ``im server up`` (Argon2 at its defaults: 64 MiB, 3 passes, 2 lanes; ``IM_ARGON2_CONCURRENCY`` 2,
queue 32), then runs ``--guessers`` concurrent clients sending wrong passwords for random usernames,
each from a random forwarded address (so that per-address throttling does not stop them first), for
``--seconds``, while one user sends a message every 50 ms. Prints the answers the guesses got, the
send latency percentiles, and the API process's resident memory before and at its peak.

    python bench/login_flood.py --guessers 300 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from _common import cluster, percentile

PASSWORD = "bench-password"


def _api_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"IM_API_PORT={port}".encode() in environ and b"im_server" in cmdline:
            return int(entry.name)
    raise RuntimeError("API process not found")


def _memory(pid: int) -> tuple[int, int]:
    """(resident now, peak resident) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


async def _run(url: str, guessers: int, seconds: float) -> None:
    pid = _api_pid(int(url.rsplit(":", 1)[1]))
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        names = [f"flood{secrets.token_hex(4)}" for _ in range(2)]
        sessions = []
        for name in names:
            await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
            login = await http.post("/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "b"})
            sessions.append(login.json())
        deadline = 0.0
        answers: Counter[int] = Counter()
        latencies: list[float] = []

        # Clients are made before the clock starts: making one costs the load generator real CPU.
        clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(guessers + 1)]

        async def guess(own: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                forwarded = ".".join(str(random.randrange(1, 255)) for _ in range(4))
                body = {"username": f"x{secrets.token_hex(4)}", "password": "wrong password", "device": "g"}
                response = await own.post("/v1/auth/login", json=body, headers={"X-Forwarded-For": forwarded})
                answers[response.status_code] += 1

        async def send() -> None:
            auth = {"Authorization": f"Bearer {sessions[0]['access_token']}"}
            to = sessions[1]["user"]["id"]
            while time.monotonic() < deadline:
                body = {"to": to, "client_msg_id": secrets.token_hex(8), "content": {"kind": "text", "text": "hi"}}
                started = time.perf_counter()
                response = await http.post("/v1/messages", json=body, headers=auth)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                await asyncio.sleep(0.05)

        health: list[float] = []

        async def probe(own: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await own.get("/healthz")
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

        for client in clients:
            await client.get("/healthz")  # connected before the clock starts
        before = _memory(pid)
        deadline = time.monotonic() + seconds
        await asyncio.gather(send(), probe(clients[-1]), *(guess(client) for client in clients[:-1]))
        for client in clients:
            await client.aclose()
        after = _memory(pid)
    print(
        f"healthz during the flood: {len(health)}, p50 {percentile(health, 0.5) * 1000:.1f} ms,"
        f" max {max(health) * 1000:.1f} ms"
    )
    print(f"guesses answered in {seconds:.0f} s: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    print(
        f"sends during the flood: {len(latencies)}, p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
        f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(f"API resident memory: {before[0]} MiB before, {after[0]} MiB after, peak {after[1]} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guessers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    production_hashing = {
        "IM_ARGON2_TIME_COST": "3",
        "IM_ARGON2_MEMORY_COST": str(64 * 1024),
        "IM_ARGON2_PARALLELISM": "2",
        "IM_ARGON2_QUEUE": "32",
        "IM_TRUSTED_PROXIES": "127.0.0.1/32",
        "IM_DM_REQUIRES_FRIENDSHIP": "false",
    }
    with cluster(1, extra_env=production_hashing) as url:
        asyncio.run(_run(url, args.guessers, args.seconds))


if __name__ == "__main__":
    main()
