"""1:1 load with real WebSocket clients: delivered messages/s and latency percentiles.

Starts ``im server up`` (unless ``--url`` names a running cluster), registers ``--pairs`` pairs of users,
connects every user over a real WebSocket to the gateway the API assigns, and has each pair's first user
send ``send`` frames to the second. Every message carries its send time; the receiver measures delivery
latency (send -> pushed frame received), the sender measures ack latency (send -> committed ack).

    python bench/load_1to1.py --rate 2000 --duration 10          # latency at a fixed rate
    python bench/load_1to1.py --rate 0 --window 8 --duration 10  # throughput: each sender keeps 8 in flight

The load runs in ``--procs`` processes (a Python client process handles a few thousand messages/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import orjson
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from _common import cluster, percentile

PASSWORD = "bench-password"


def _epoch_ns(timestamp: str) -> int:
    """``2026-11-28T10:08:36.610Z`` in nanoseconds since the epoch."""
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1e9)


@dataclass
class User:
    name: str
    user_id: int = 0
    token: str = ""
    ws: websockets.ClientConnection | None = None


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    errors: int = 0
    delivered: int = 0
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    to_commit_ms: list[float] = field(default_factory=list)
    """Send -> the server's commit timestamp (``sent_at``, taken as the commit transaction starts)."""
    from_commit_ms: list[float] = field(default_factory=list)
    """The server's commit timestamp -> pushed frame received."""


async def _setup(url: str, names: list[str]) -> list[User]:
    users = [User(name) for name in names]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        semaphore = asyncio.Semaphore(32)

        async def prepare(user: User) -> None:
            async with semaphore:
                await http.post("/v1/auth/register", json={"username": user.name, "password": PASSWORD})
                session = (
                    await http.post(
                        "/v1/auth/login", json={"username": user.name, "password": PASSWORD, "device": "bench"}
                    )
                ).json()
                user.user_id, user.token = session["user"]["id"], session["access_token"]
                headers = {"Authorization": f"Bearer {user.token}"}
                gateway = (await http.get("/v1/gateway", headers=headers)).json()["url"]
                user.ws = await websockets.connect(gateway, compression=None, max_queue=None)
                await user.ws.send(orjson.dumps({"type": "auth", "token": user.token}).decode())
                ready = orjson.loads(await user.ws.recv())
                assert ready["type"] == "ready", ready

        await asyncio.gather(*(prepare(user) for user in users))

        async def befriend(a: User, b: User) -> None:
            # Direct messages need friendship: a request each way makes the pair friends.
            async with semaphore:
                for one, other in ((a, b), (b, a)):
                    response = await http.post(
                        "/v1/friends/requests",
                        headers={"Authorization": f"Bearer {one.token}"},
                        json={"to": other.user_id},
                    )
                    response.raise_for_status()

        await asyncio.gather(*(befriend(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)))
    return users


async def _worker(
    url: str, index: int, pairs: int, rate: float, window: int, duration: float, start_at: float, run: str
) -> dict[str, object]:
    names = [f"b{run}p{index}u{i}" for i in range(pairs * 2)]
    users = await _setup(url, names)
    senders, receivers = users[0::2], users[1::2]
    stats = Stats()
    inflight: dict[str, int] = {}
    credit = {s.name: window for s in senders}
    wake = {s.name: asyncio.Event() for s in senders}
    stop_at = start_at + duration

    async def read(user: User, sender: bool) -> None:
        assert user.ws is not None
        async for data in user.ws:
            now = time.time_ns()
            frame = orjson.loads(data)
            kind = frame["type"]
            if kind == "message":
                if now / 1e9 <= stop_at + 5:
                    message = frame["message"]
                    sent = int(message["content"]["text"])
                    committed = _epoch_ns(message["sent_at"])
                    stats.delivered += 1
                    stats.delivery_ms.append((now - sent) / 1e6)
                    stats.to_commit_ms.append((committed - sent) / 1e6)
                    stats.from_commit_ms.append((now - committed) / 1e6)
            elif kind == "ack":
                sent = inflight.pop(frame["client_msg_id"], None)
                stats.acked += 1
                if sent is not None:
                    stats.ack_ms.append((now - sent) / 1e6)
                if sender:
                    credit[user.name] += 1
                    wake[user.name].set()
            elif kind == "error":
                stats.errors += 1
                inflight.pop(frame.get("client_msg_id") or "", None)
                if sender:
                    credit[user.name] += 1
                    wake[user.name].set()

    readers = [asyncio.create_task(read(u, u in senders)) for u in users]
    # The load generator must not pause the measurement itself: keep the set-up heap out of collections.
    gc.collect()
    gc.freeze()

    async def send(sender: User, receiver: User) -> None:
        assert sender.ws is not None
        key = uuid.uuid4().hex
        ts = time.time_ns()
        inflight[key] = ts
        stats.sent += 1
        await sender.ws.send(
            orjson.dumps(
                {
                    "type": "send",
                    "to": receiver.user_id,
                    "client_msg_id": key,
                    "content": {"kind": "text", "text": str(ts)},
                }
            ).decode()
        )

    await asyncio.sleep(max(0.0, start_at - time.time()))
    if rate > 0:
        tick = 0.005
        per_tick = rate * tick
        budget = 0.0
        cursor = 0
        next_tick = time.time()
        while time.time() < stop_at:
            budget += per_tick
            while budget >= 1:
                budget -= 1
                await send(senders[cursor], receivers[cursor])
                cursor = (cursor + 1) % len(senders)
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.time()))
    else:

        async def pump(sender: User, receiver: User) -> None:
            while time.time() < stop_at:
                while credit[sender.name] > 0 and time.time() < stop_at:
                    credit[sender.name] -= 1
                    await send(sender, receiver)
                wake[sender.name].clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake[sender.name].wait(), 1)

        await asyncio.gather(*(pump(s, r) for s, r in zip(senders, receivers, strict=True)))
    # Let the last messages arrive.
    deadline = time.time() + 5
    while time.time() < deadline and (stats.delivered < stats.acked or inflight):
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    for user in users:
        if user.ws is not None:
            await user.ws.close()
    return {
        "sent": stats.sent,
        "acked": stats.acked,
        "errors": stats.errors,
        "delivered": stats.delivered,
        "ack_ms": stats.ack_ms,
        "delivery_ms": stats.delivery_ms,
        "to_commit_ms": stats.to_commit_ms,
        "from_commit_ms": stats.from_commit_ms,
    }


def _run_worker(args: tuple[object, ...], queue: multiprocessing.Queue[str]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_worker(*args))  # type: ignore[arg-type]
    queue.put(json.dumps(result))


def measure(url: str, *, pairs: int, rate: float, window: int, duration: float, procs: int) -> dict[str, float]:
    run = uuid.uuid4().hex[:6]
    start_at = time.time() + 3 + pairs * 2 / 150  # leave time for every process to connect its users
    queue: multiprocessing.Queue[str] = multiprocessing.Queue()
    workers = []
    for index in range(procs):
        args = (url, index, pairs // procs, rate / procs, window, duration, start_at, run)
        process = multiprocessing.Process(target=_run_worker, args=(args, queue))
        process.start()
        workers.append(process)
    results = [json.loads(queue.get(timeout=duration + 300)) for _ in workers]
    for process in workers:
        process.join()
    ack = [v for r in results for v in r["ack_ms"]]
    delivery = [v for r in results for v in r["delivery_ms"]]
    to_commit = [v for r in results for v in r["to_commit_ms"]]
    from_commit = [v for r in results for v in r["from_commit_ms"]]
    total = {key: sum(r[key] for r in results) for key in ("sent", "acked", "errors", "delivered")}
    return {
        **total,
        "delivered_per_s": total["delivered"] / duration,
        "ack_p50_ms": percentile(ack, 0.50),
        "ack_p99_ms": percentile(ack, 0.99),
        "delivery_p50_ms": percentile(delivery, 0.50),
        "delivery_p99_ms": percentile(delivery, 0.99),
        "delivery_p999_ms": percentile(delivery, 0.999),
        "to_commit_p50_ms": percentile(to_commit, 0.50),
        "to_commit_p99_ms": percentile(to_commit, 0.99),
        "from_commit_p50_ms": percentile(from_commit, 0.50),
        "from_commit_p99_ms": percentile(from_commit, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running cluster's API URL (default: start `im server up`)")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000, help="messages/s in total; 0 = as fast as acks allow")
    parser.add_argument("--window", type=int, default=8, help="unacked sends per sender with --rate 0")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--db", help="database URL for the started cluster (default SQLite)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    def run(url: str) -> dict[str, float]:
        return measure(
            url, pairs=args.pairs, rate=args.rate, window=args.window, duration=args.duration, procs=args.procs
        )

    if args.url:
        figures = run(args.url)
    else:
        with cluster(args.gateways, db=args.db) as url:
            figures = run(url)
    if args.json:
        print(json.dumps(figures))
        return
    mode = f"rate {args.rate:.0f}/s" if args.rate else f"max (window {args.window})"
    print(
        f"1:1 load, {args.pairs} pairs, {args.gateways} gateways, {mode}, {args.duration:.0f}s, "
        f"{args.procs} load processes"
    )
    print(
        f"  sent {figures['sent']:.0f}  acked {figures['acked']:.0f}  delivered {figures['delivered']:.0f}"
        f"  errors {figures['errors']:.0f}"
    )
    print(f"  delivered {figures['delivered_per_s']:.0f} msgs/s")
    print(f"  ack latency      p50 {figures['ack_p50_ms']:.1f} ms  p99 {figures['ack_p99_ms']:.1f} ms")
    print(
        f"  delivery latency p50 {figures['delivery_p50_ms']:.1f} ms  p99 {figures['delivery_p99_ms']:.1f} ms"
        f"  p99.9 {figures['delivery_p999_ms']:.1f} ms"
    )
    print(
        f"    send -> commit p50 {figures['to_commit_p50_ms']:.1f} ms  p99 {figures['to_commit_p99_ms']:.1f} ms;"
        f"  commit -> delivered p50 {figures['from_commit_p50_ms']:.1f} ms  p99 {figures['from_commit_p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
