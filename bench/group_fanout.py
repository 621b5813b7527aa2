"""One group, every member online: time until the last member has a message, and deliveries/s.

Starts ``im server up`` (unless ``--url`` names a running cluster), creates ``--members`` users, puts
them all in one group and connects each over a real WebSocket to the gateway the API assigns, spread
over ``--procs`` client processes (each under the 20,000 open-files cap). Then:

1. ``--rounds`` single messages, one at a time: for each, the time from the send until the last member
   received it (and p50/p99 over members);
2. ``--duration`` seconds of messages at ``--rate`` per second: group deliveries per second (messages x
   members that arrived, per second).

    python bench/group_fanout.py --members 10000 --gateways 3 --procs 4
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import sys
import time
import uuid

import httpx
import orjson
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from _common import cluster, percentile

PASSWORD = "bench-password"


async def _create_users(url: str, names: list[str], concurrency: int = 48) -> list[tuple[int, str]]:
    """Register and log in users; returns ``(user id, access token)`` for each."""
    out: list[tuple[int, str]] = [(0, "")] * len(names)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def one(index: int, name: str) -> None:
            async with semaphore:
                await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
                session = (
                    await http.post("/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "bench"})
                ).json()
                out[index] = (session["user"]["id"], session["access_token"])

        await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
    return out


def _receiver(
    url: str, accounts: list[tuple[int, str]], control: multiprocessing.Queue, results: multiprocessing.Queue
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_receive(url, accounts, control, results))


async def _receive(url: str, accounts: list[tuple[int, str]], control, results) -> None:  # type: ignore[no-untyped-def]
    arrivals: dict[int, list[int]] = {}  # seq -> arrival times (ns)
    sent_at: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        semaphore = asyncio.Semaphore(64)
        connections: list[websockets.ClientConnection] = []

        async def connect(token: str) -> None:
            async with semaphore:
                headers = {"Authorization": f"Bearer {token}"}
                gateway = (await http.get("/v1/gateway", headers=headers)).json()["url"]
                ws = await websockets.connect(gateway, compression=None, max_queue=None, open_timeout=60)
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                ready = orjson.loads(await ws.recv())
                assert ready["type"] == "ready", ready
                connections.append(ws)

        await asyncio.gather(*(connect(token) for _, token in accounts))

    async def read(ws: websockets.ClientConnection) -> None:
        async for data in ws:
            now = time.time_ns()
            frame = orjson.loads(data)
            if frame["type"] == "message":
                message = frame["message"]
                content = message["content"]
                if content.get("kind") == "text" and content["text"].startswith("t="):
                    seq = message["seq"]
                    arrivals.setdefault(seq, []).append(now)
                    sent_at.setdefault(seq, int(content["text"][2:]))

    readers = [asyncio.create_task(read(ws)) for ws in connections]
    gc.collect()
    gc.freeze()
    results.put(("ready", len(connections)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, control.get)
        if command == "report":
            results.put(("report", {str(seq): [sent_at[seq], times] for seq, times in arrivals.items()}))
            arrivals.clear()
            sent_at.clear()
        elif command == "stop":
            break
    for task in readers:
        task.cancel()
    for ws in connections:
        await ws.close()


async def _send(url: str, token: str, conversation: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        response = await http.post(
            "/v1/messages",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "conversation": conversation,
                "client_msg_id": uuid.uuid4().hex,
                "content": {"kind": "text", "text": f"t={time.time_ns()}"},
            },
        )
        response.raise_for_status()
        return int(response.json()["seq"])


async def _send_at_rate(url: str, token: str, conversation: str, rate: float, duration: float) -> int:
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        in_flight: set[asyncio.Task[httpx.Response]] = set()
        while time.monotonic() - started < duration:
            body = {
                "conversation": conversation,
                "client_msg_id": uuid.uuid4().hex,
                "content": {"kind": "text", "text": f"t={time.time_ns()}"},
            }
            in_flight.add(asyncio.create_task(http.post("/v1/messages", headers=headers, json=body)))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        await asyncio.gather(*in_flight)
    return sent


def run(url: str, *, members: int, procs: int, rounds: int, rate: float, duration: float) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:6]
    names = [f"g{run_id}u{i}" for i in range(members + 1)]
    started = time.monotonic()
    accounts = asyncio.run(_create_users(url, names))
    _, owner_token = accounts[0]
    member_ids = [user_id for user_id, _ in accounts[1:]]

    async def make_group() -> str:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            headers = {"Authorization": f"Bearer {owner_token}"}
            group = (await http.post("/v1/groups", headers=headers, json={"name": "fan-out"})).json()
            for start in range(0, len(member_ids), 1000):
                chunk = member_ids[start : start + 1000]
                response = await http.post(f"/v1/groups/{group['id']}/invite", headers=headers, json={"users": chunk})
                response.raise_for_status()
            return str(group["conversation"])

    conversation = asyncio.run(make_group())
    setup_seconds = time.monotonic() - started

    controls = [multiprocessing.Queue() for _ in range(procs)]
    results: multiprocessing.Queue = multiprocessing.Queue()
    share = [accounts[1:][i::procs] for i in range(procs)]
    workers = [
        multiprocessing.Process(target=_receiver, args=(url, share[i], controls[i], results)) for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    connected = sum(results.get(timeout=600)[1] for _ in workers)

    def collect() -> dict[int, tuple[int, list[int]]]:
        for control in controls:
            control.put("report")
        merged: dict[int, tuple[int, list[int]]] = {}
        for _ in workers:
            _, report = results.get(timeout=120)
            for seq, (sent, times) in report.items():
                merged.setdefault(int(seq), (sent, []))[1].extend(times)
        return merged

    last_ms: list[float] = []
    p50_ms: list[float] = []
    p99_ms: list[float] = []
    complete = 0
    for _ in range(rounds):
        seq = asyncio.run(_send(url, owner_token, conversation))
        deadline = time.monotonic() + 10
        gathered: dict[int, tuple[int, list[int]]] = {}
        while True:
            time.sleep(0.5)
            for key, (sent, times) in collect().items():
                gathered.setdefault(key, (sent, []))[1].extend(times)
            if (seq in gathered and len(gathered[seq][1]) >= connected) or time.monotonic() > deadline:
                break
        if seq in gathered:
            sent, times = gathered[seq]
            lat = [(t - sent) / 1e6 for t in times]
            last_ms.append(max(lat))
            p50_ms.append(percentile(lat, 0.5))
            p99_ms.append(percentile(lat, 0.99))
            complete += len(times) == connected

    collect()
    started_at = time.time()
    sent = asyncio.run(_send_at_rate(url, owner_token, conversation, rate, duration))
    time.sleep(3)
    merged = collect()
    deliveries = sum(len(times) for _, times in merged.values())
    window = max(duration, (max((max(t) for _, t in merged.values()), default=0) / 1e9) - started_at)

    for control in controls:
        control.put("stop")
    for worker in workers:
        worker.join(60)
    return {
        "members": members,
        "connected": connected,
        "setup_s": setup_seconds,
        "rounds_complete": complete,
        "last_member_ms_median": percentile(last_ms, 0.5),
        "last_member_ms_best": min(last_ms, default=float("nan")),
        "member_p50_ms_median": percentile(p50_ms, 0.5),
        "member_p99_ms_median": percentile(p99_ms, 0.5),
        "sustained_messages": sent,
        "sustained_deliveries": deliveries,
        "deliveries_per_s": deliveries / window,
        "expected_deliveries": sent * connected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running cluster's API URL (default: start `im server up`)")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--procs", type=int, default=4, help="client processes holding the connections")
    parser.add_argument("--rounds", type=int, default=5, help="single messages for the last-member time")
    parser.add_argument("--rate", type=float, default=5, help="group messages per second in the sustained phase")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    options = dict(members=args.members, procs=args.procs, rounds=args.rounds, rate=args.rate, duration=args.duration)
    if args.url:
        figures = run(args.url, **options)
    else:
        extra = {"IM_GROUP_MEMBER_LIMIT": str(args.members + 10)}
        with cluster(args.gateways, extra_env=extra) as url:
            figures = run(url, **options)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"group fan-out: {figures['connected']} of {args.members} members online over {args.gateways} gateways "
        f"(set-up {figures['setup_s']:.0f}s)"
    )
    print(
        f"  one message: last member after {figures['last_member_ms_median']:.0f} ms (median of {args.rounds}; "
        f"best {figures['last_member_ms_best']:.0f} ms); per member p50 {figures['member_p50_ms_median']:.0f} ms, "
        f"p99 {figures['member_p99_ms_median']:.0f} ms; {figures['rounds_complete']}/{args.rounds} rounds reached all"
    )
    print(
        f"  sustained: {figures['sustained_messages']} messages at {args.rate}/s -> "
        f"{figures['sustained_deliveries']} of {figures['expected_deliveries']} deliveries, "
        f"{figures['deliveries_per_s']:.0f} group deliveries/s"
    )


if __name__ == "__main__":
    main()
