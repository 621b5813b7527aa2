"""Offline catch-up: a device comes online with ``--messages`` waiting and syncs them through the SDK.

Starts ``im server up`` (unless ``--url``), has one user send ``--messages`` messages to another over a
WebSocket (acknowledged after commit), then times a fresh ``AsyncClient.events()`` of the recipient from
the start until the last waiting message is yielded, in order, each once.

    python bench/catchup.py --messages 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid

import httpx
import orjson
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from _common import cluster

from im_sdk import AsyncClient

PASSWORD = "bench-password"


async def _account(http: httpx.AsyncClient, name: str) -> dict[str, object]:
    await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
    session: dict[str, object] = (
        await http.post("/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "bench"})
    ).json()
    return session


async def _fill(url: str, sender: dict[str, object], to: int, count: int, window: int = 256) -> None:
    token = str(sender["access_token"])
    async with httpx.AsyncClient(base_url=url) as http:
        gateway = (await http.get("/v1/gateway", headers={"Authorization": f"Bearer {token}"})).json()["url"]
    async with websockets.connect(gateway, compression=None, max_queue=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        assert orjson.loads(await ws.recv())["type"] == "ready"
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < window:
                frame = {
                    "type": "send",
                    "to": to,
                    "client_msg_id": uuid.uuid4().hex,
                    "content": {"kind": "text", "text": f"waiting {sent}"},
                }
                await ws.send(orjson.dumps(frame).decode())
                sent += 1
            answer = orjson.loads(await ws.recv())
            if answer["type"] in ("ack", "error"):
                acked += 1
                assert answer["type"] == "ack", answer


async def run(url: str, count: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        run_id = uuid.uuid4().hex[:6]
        sender = await _account(http, f"c{run_id}s")
        receiver = await _account(http, f"c{run_id}r")
    receiver_id = int(receiver["user"]["id"])  # type: ignore[index]
    await _fill(url, sender, receiver_id, count)
    async with AsyncClient(url, access_token=str(receiver["access_token"])) as client:
        started = time.perf_counter()
        seen = 0
        last = 0
        async with contextlib.aclosing(client.messages()) as events:
            async for event in events:
                assert event.seq == last + 1, (event.seq, last)
                last = event.seq
                seen += 1
                if seen == count:
                    break
        elapsed = time.perf_counter() - started
    return {"messages": count, "seconds": elapsed, "messages_per_s": count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.url:
        figures = asyncio.run(run(args.url, args.messages))
    else:
        with cluster(1, extra_env={"IM_DM_REQUIRES_FRIENDSHIP": "false"}) as url:
            figures = asyncio.run(run(url, args.messages))
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"offline catch-up: {args.messages} waiting messages yielded in order by events() in "
            f"{figures['seconds']:.2f} s ({figures['messages_per_s']:.0f} messages/s)"
        )


if __name__ == "__main__":
    main()
