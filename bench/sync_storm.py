"""A crowd catching up at once: ``GET /v1/conversations`` per device against ``sync`` frames on the WebSocket.

Starts a cluster of real processes (nats-server, one API, one gateway), registers ``--devices`` users,
sends each one message (one conversation each, so every catch-up page has one conversation with its
newest messages), connects every device to the gateway, then, in alternating rounds, has every device
catch up at the same moment: over HTTP (a shared pool of ``--http-connections`` keep-alive connections,
kinder to HTTP than one connection per device) or with a ``sync`` frame on its connection (which the
gateway batches to the API over NATS). Reports, per catch-up, the CPU time the API process and the
gateway process spent (from ``/proc``, less what each spends idle over the same time), and the wall time
until every device had its page.

    python bench/sync_storm.py --devices 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from _common import BENCH_ENV

from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
from im_server.cluster.natsbin import free_port_block

PASSWORD = "bench-password"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


class Device:
    """One logged-in device with an open gateway connection."""

    def __init__(self, token: str, ws: Any) -> None:
        self.token = token
        self.ws = ws
        self.answer: asyncio.Future[dict[str, Any]] | None = None

    async def read(self) -> None:
        async for data in self.ws:
            frame = orjson.loads(data)
            if frame.get("type") in ("sync", "error") and self.answer is not None and not self.answer.done():
                self.answer.set_result(frame)

    async def sync_frame(self, round_id: str) -> int:
        self.answer = asyncio.get_running_loop().create_future()
        await self.ws.send(orjson.dumps({"type": "sync", "id": round_id, "limit": 500, "recent": 20}).decode())
        frame = await self.answer
        if frame["type"] != "sync":
            raise RuntimeError(f"sync refused: {frame}")
        return len(frame["page"]["conversations"])

    async def sync_http(self, http: httpx.AsyncClient, slots: asyncio.Semaphore) -> int:
        async with slots:  # httpx's pool slows down with a long queue of its own
            answer = await http.get(
                "/v1/conversations",
                params={"limit": 500, "recent": 20},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        return len(answer.raise_for_status().json()["conversations"])


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="im-sync-storm-"))
    port = free_port_block(2)
    cluster = EmbeddedCluster(
        ClusterPlan(
            data_dir=data_dir,
            api_port=port,
            gateways=1,
            extra_env={**BENCH_ENV, "IM_DM_REQUIRES_FRIENDSHIP": "false"},
            log_level="WARNING",
        ),
        on_event=lambda text: print(f"  [cluster] {text}"),
    )
    cluster.start()
    pids = {child.name: child.process.pid for child in cluster._children if child.process is not None}
    api_pid, gateway_pid = pids["api-1"], pids["gw-1"]
    run_id = secrets.token_hex(3)
    limits = httpx.Limits(max_connections=args.http_connections, max_keepalive_connections=args.http_connections)
    try:
        async with httpx.AsyncClient(base_url=cluster.api_url, timeout=120, limits=limits) as http:
            semaphore = asyncio.Semaphore(32)

            async def login(name: str) -> dict[str, Any]:
                async with semaphore:
                    await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
                    answer = await http.post(
                        "/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "bench"}
                    )
                    session: dict[str, Any] = answer.raise_for_status().json()
                    return session

            sender = await login(f"s{run_id}")
            sessions = await asyncio.gather(*(login(f"s{run_id}d{i}") for i in range(args.devices)))

            async def send(session: dict[str, Any], index: int) -> None:
                async with semaphore:
                    for text in ("one", "two", "three"):
                        answer = await http.post(
                            "/v1/messages",
                            json={
                                "to": session["user"]["id"],
                                "client_msg_id": f"m{index}-{text}-{run_id}",
                                "content": {"kind": "text", "text": text},
                            },
                            headers={"Authorization": f"Bearer {sender['access_token']}"},
                        )
                        answer.raise_for_status()

            await asyncio.gather(*(send(session, index) for index, session in enumerate(sessions)))
            url = cluster.gateway_urls()[0]

            async def connect(session: dict[str, Any]) -> Device:
                async with semaphore:
                    ws = await websockets.connect(url, compression=None, max_queue=None)
                    await ws.send(orjson.dumps({"type": "auth", "token": session["access_token"]}).decode())
                    ready = orjson.loads(await ws.recv())
                    assert ready["type"] == "ready", ready
                    return Device(session["access_token"], ws)

            devices = await asyncio.gather(*(connect(session) for session in sessions))
            readers = [asyncio.create_task(device.read()) for device in devices]
            # Warm both paths once (connections in the pool, code paths, caches).
            slots = asyncio.Semaphore(args.http_connections)
            await asyncio.gather(*(device.sync_http(http, slots) for device in devices))
            await asyncio.gather(*(device.sync_frame("warm") for device in devices))
            # What the nodes spend doing nothing (heartbeats, registry watches), taken out of every figure.
            idle_api, idle_gateway = cpu_seconds(api_pid), cpu_seconds(gateway_pid)
            await asyncio.sleep(5)
            idle_api, idle_gateway = (
                (cpu_seconds(api_pid) - idle_api) / 5,
                (cpu_seconds(gateway_pid) - idle_gateway) / 5,
            )
            print(
                f"{args.devices} devices connected, each with one conversation of 3 messages; idle CPU: "
                f"API {idle_api * 100:.1f}%, gateway {idle_gateway * 100:.1f}%"
            )
            figures: dict[str, list[tuple[float, float, float]]] = {"http": [], "frame": []}
            for number in range(args.rounds):
                for way in ("http", "frame"):
                    await asyncio.sleep(0.5)  # let the nodes settle between rounds
                    api_before, gateway_before = cpu_seconds(api_pid), cpu_seconds(gateway_pid)
                    started = time.perf_counter()
                    if way == "http":
                        counts = await asyncio.gather(*(device.sync_http(http, slots) for device in devices))
                    else:
                        counts = await asyncio.gather(*(device.sync_frame(f"r{number}") for device in devices))
                    wall = time.perf_counter() - started
                    assert all(count == 1 for count in counts), "every page lists the one conversation"
                    api = cpu_seconds(api_pid) - api_before - idle_api * wall
                    gateway = cpu_seconds(gateway_pid) - gateway_before - idle_gateway * wall
                    figures[way].append((api, gateway, wall))
                    print(
                        f"round {number + 1} {way:5}: API CPU {api * 1000 / args.devices:.3f} ms per catch-up, "
                        f"gateway CPU {gateway * 1000 / args.devices:.3f} ms, all {args.devices} done in {wall:.2f}s"
                    )
            for way, rows in figures.items():
                api = sum(row[0] for row in rows) * 1000 / (args.devices * len(rows))
                gateway = sum(row[1] for row in rows) * 1000 / (args.devices * len(rows))
                wall = sum(row[2] for row in rows) / len(rows)
                print(
                    f"{way:5} mean: API CPU {api:.3f} ms, gateway CPU {gateway:.3f} ms per catch-up; wall {wall:.2f}s"
                )
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*(device.ws.close() for device in devices), return_exceptions=True)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--http-connections", type=int, default=100)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
