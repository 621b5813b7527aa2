"""The workloads W1-W5 and the reconnect storm of the performance targets, each a function of the sizes.

Every workload takes the :class:`bench.system.Server` under test, the :class:`bench.clients.Workers`
(client processes) and the :class:`Sizes`, and returns a JSON-ready dict of figures. None of them asserts
anything about time; each counts what was lost and what was duplicated, so a run at any size doubles as a
correctness check. Latencies are in milliseconds, durations in seconds, memory in bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets

from bench._common import percentile
from bench.clients import PASSWORD, Workers, split
from bench.system import Server, sample

__all__ = ["WORKLOADS", "Sizes", "run_storm", "run_w1", "run_w2", "run_w3", "run_w4", "run_w5"]


@dataclass
class Sizes:
    """How big each workload is; the defaults are the sizes of the targets (issue 14)."""

    w1_pairs: int = 50
    w1_rate: float = 200.0
    w1_duration: float = 20.0
    w2_pairs: int = 100
    w2_rates: list[float] = field(default_factory=lambda: [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
    w2_duration: float = 10.0
    w2_max_loss: float = 0.01
    w2_max_p99_ms: float = 1000.0
    w2_keep_going: bool = False
    """Run the steps after the first failing one too."""
    w3_members: int = 1000
    w3_messages: int = 20
    w3_interval: float = 1.0
    w4_connections: int = 5000
    w4_idle: float = 10.0
    w4_settle: float = 1.0
    """Seconds before each memory reading, for the servers to settle."""
    w5_messages: list[int] = field(default_factory=lambda: [1000, 10000])
    storm_clients: int = 2000
    storm_timeout: float = 120.0
    drain: float = 5.0
    """Seconds to wait for the last deliveries after a step."""

    def scaled(self, factor: float) -> Sizes:
        """Counts and rates times ``factor`` (durations unchanged; at least one pair, member, ...)."""

        def count(value: int) -> int:
            return max(1, round(value * factor))

        return dataclasses.replace(
            self,
            w1_pairs=count(self.w1_pairs),
            w1_rate=max(1.0, self.w1_rate * factor),
            w2_pairs=count(self.w2_pairs),
            w2_rates=[max(1.0, rate * factor) for rate in self.w2_rates],
            w3_members=count(self.w3_members),
            w4_connections=count(self.w4_connections),
            w5_messages=[count(n) for n in self.w5_messages],
            storm_clients=max(2, count(self.storm_clients)),
        )

    def set(self, assignment: str) -> Sizes:
        """``name=value`` (lists comma-separated), e.g. ``w3_members=200`` or ``w2_rates=500,1000``."""
        name, _, text = assignment.partition("=")
        fields = {f.name: f for f in dataclasses.fields(self)}
        if name not in fields or not text:
            raise ValueError(f"unknown size {name!r}; one of {', '.join(fields)}")
        current = getattr(self, name)
        value: Any
        if isinstance(current, bool):
            value = text.lower() in ("1", "true", "yes")
        elif isinstance(current, list):
            kind = type(current[0]) if current else float
            value = [kind(part) for part in text.split(",") if part]
        else:
            value = type(current)(text)
        return dataclasses.replace(self, **{name: value})


def _percentiles(values: list[float], prefix: str) -> dict[str, float | None]:
    def round_or_none(value: float) -> float | None:
        return None if value != value else round(value, 3)

    return {
        f"{prefix}_p50_ms": round_or_none(percentile(values, 0.50)),
        f"{prefix}_p90_ms": round_or_none(percentile(values, 0.90)),
        f"{prefix}_p99_ms": round_or_none(percentile(values, 0.99)),
        f"{prefix}_p999_ms": round_or_none(percentile(values, 0.999)),
        f"{prefix}_max_ms": round(max(values), 3) if values else None,
    }


def _cpu_figures(server: Server, before: Any, after: Any, seconds: float, messages: int) -> dict[str, Any]:
    if not server.pids:
        return {"server_cpu_percent": None, "server_cpu_ms_per_msg": None, "cpu_percent_by_process": None}
    by_process = {name: round((after.cpu[name] - before.cpu.get(name, 0.0)) / seconds * 100, 1) for name in after.cpu}
    total = after.cpu_total - before.cpu_total
    return {
        "server_cpu_percent": round(total / seconds * 100, 1),
        "server_cpu_ms_per_msg": round(total * 1000 / messages, 4) if messages else None,
        "cpu_percent_by_process": by_process,
    }


def _connect_pairs(workers: Workers, key: str, pairs: int) -> list[int]:
    shares = split(pairs, len(workers))
    workers.call("register", [(key, 2 * share) for share in shares])
    connected = workers.all("connect", key)
    if sum(c["failed"] for c in connected):
        raise RuntimeError(f"{sum(c['failed'] for c in connected)} clients of {key} could not connect")
    return shares


def _offered_step(
    server: Server, workers: Workers, key: str, shares: list[int], rate: float, duration: float, drain: float
) -> dict[str, Any]:
    pairs = sum(shares)
    workers.all("prepare")
    start_at = time.time() + 1.0
    workers.send("offered_step", [(key, rate * share / pairs, duration, start_at, drain) for share in shares])
    time.sleep(max(0.0, start_at - time.time()))
    before = sample(server.pids)
    time.sleep(max(0.0, start_at + duration - time.time()))
    after = sample(server.pids)
    results = workers.gather(timeout=duration + drain + 600)
    totals = {
        name: sum(r[name] for r in results)
        for name in (
            "offered",
            "sent",
            "acked",
            "errors",
            "unanswered",
            "delivered",
            "lost",
            "late",
            "resyncs",
            "closed",
            "duplicated",
        )
    }
    delivery = [v for r in results for v in r["delivery_ms"]]
    ack = [v for r in results for v in r["ack_ms"]]
    offered = totals["offered"] or 1
    return {
        "offered_rate": rate,
        "duration_s": duration,
        **totals,
        "loss": round(max(0.0, 1 - totals["delivered"] / offered), 5),
        "delivered_per_s": round(totals["delivered"] / duration, 1),
        **_percentiles(delivery, "delivery"),
        **{k: v for k, v in _percentiles(ack, "ack").items() if k in ("ack_p50_ms", "ack_p99_ms")},
        **_cpu_figures(server, before, after, duration, totals["delivered"]),
    }


def run_w1(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """W1: pairs online, a steady rate round robin: delivery latency and server CPU per message."""
    shares = _connect_pairs(workers, "w1", sizes.w1_pairs)
    try:
        step = _offered_step(server, workers, "w1", shares, sizes.w1_rate, sizes.w1_duration, sizes.drain)
    finally:
        workers.all("disconnect", "w1")
    return {"pairs": sizes.w1_pairs, **step}


def run_w2(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """W2: the offered load in steps; the highest step with loss under the limit and p99 under the limit."""
    shares = _connect_pairs(workers, "w2", sizes.w2_pairs)
    steps: list[dict[str, Any]] = []
    highest: float | None = None
    try:
        for rate in sizes.w2_rates:
            step = _offered_step(server, workers, "w2", shares, rate, sizes.w2_duration, sizes.drain)
            p99 = step["delivery_p99_ms"]
            step["passed"] = step["loss"] < sizes.w2_max_loss and p99 is not None and p99 < sizes.w2_max_p99_ms
            steps.append(step)
            if step["passed"]:
                highest = rate
            elif not sizes.w2_keep_going:
                break
    finally:
        workers.all("disconnect", "w2")
    return {
        "pairs": sizes.w2_pairs,
        "criterion": f"loss < {sizes.w2_max_loss:.0%} and delivery p99 < {sizes.w2_max_p99_ms:.0f} ms",
        "highest_passing_rate": highest,
        "lost": sum(s["lost"] for s in steps),
        "late": sum(s["late"] for s in steps),
        "duplicated": sum(s["duplicated"] for s in steps),
        "steps": steps,
    }


async def _account(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
    response = await http.post("/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "bench"})
    response.raise_for_status()
    session: dict[str, Any] = response.json()
    return session


def run_w3(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """W3: one group, every member online; per message, the time until the last member has it."""
    assert server.url is not None
    url = server.url
    member_ids = [
        uid
        for ids in workers.call("register", [("w3", n) for n in split(sizes.w3_members, len(workers))])
        for uid in ids
    ]

    async def make_group() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            owner = await _account(http, f"w3owner{uuid.uuid4().hex[:8]}")
            headers = {"Authorization": f"Bearer {owner['access_token']}"}
            group = (await http.post("/v1/groups", headers=headers, json={"name": "bench"})).raise_for_status().json()
            for start in range(0, len(member_ids), 1000):
                chunk = member_ids[start : start + 1000]
                answer = await http.post(f"/v1/groups/{group['id']}/invite", headers=headers, json={"users": chunk})
                answer.raise_for_status()
            return str(owner["access_token"]), str(group["conversation"])

    token, conversation = asyncio.run(make_group())
    connected = workers.all("connect", "w3")
    online = sum(c["connected"] for c in connected)
    failed = sum(c["failed"] for c in connected)
    sent_at: dict[int, float] = {}

    async def send_all() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            headers = {"Authorization": f"Bearer {token}"}
            for number in range(sizes.w3_messages):
                body = {
                    "conversation": conversation,
                    "client_msg_id": uuid.uuid4().hex,
                    "content": {"kind": "text", "text": f"g:{number}"},
                }
                sent_at[number] = time.time()
                (await http.post("/v1/messages", headers=headers, json=body)).raise_for_status()
                await asyncio.sleep(max(0.0, sent_at[number] + sizes.w3_interval - time.time()))

    try:
        asyncio.run(send_all())
        deadline = time.time() + sizes.drain
        while time.time() < deadline and sum(workers.all("group_count")) < online * sizes.w3_messages:
            time.sleep(0.02)
        reports = workers.all("group_report")
    finally:
        workers.all("disconnect", "w3")
    seen: dict[int, list[float]] = {}
    for report in reports:
        for number, times in report["seen"].items():
            seen.setdefault(int(number), []).extend(times)
    last_ms = [(max(seen[n]) - sent_at[n]) * 1000 for n in sent_at if seen.get(n)]
    every_ms = [(t - sent_at[n]) * 1000 for n in sent_at for t in seen.get(n, [])]
    delivered = sum(len(times) for times in seen.values())
    return {
        "members": sizes.w3_members,
        "online": online,
        "failed_to_connect": failed,
        "messages": sizes.w3_messages,
        "delivered": delivered,
        "lost": online * sizes.w3_messages - delivered,
        "duplicated": sum(report["duplicated"] for report in reports),
        **{k.replace("delivery", "last_member"): v for k, v in _percentiles(last_ms, "delivery").items()},
        **{k.replace("delivery", "any_member"): v for k, v in _percentiles(every_ms, "delivery").items()},
    }


def run_w4(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """W4: idle authenticated connections: memory per connection, connect rate, idle CPU."""
    workers.call("register", [("w4", n) for n in split(sizes.w4_connections, len(workers))])
    time.sleep(sizes.w4_settle)
    before = sample(server.pids)
    started = time.time()
    connected = workers.all("connect", "w4")
    elapsed = time.time() - started
    count = sum(c["connected"] for c in connected)
    try:
        time.sleep(sizes.w4_settle)
        idle_start = sample(server.pids)
        time.sleep(sizes.w4_idle)
        idle_end = sample(server.pids)
    finally:
        workers.all("disconnect", "w4")
    figures: dict[str, Any] = {
        "connections": sizes.w4_connections,
        "connected": count,
        "failed": sum(c["failed"] for c in connected),
        "connect_seconds": round(elapsed, 3),
        "connects_per_s": round(count / elapsed, 1) if elapsed else None,
        "idle_seconds": sizes.w4_idle,
    }
    if server.pids:
        grown = idle_end.rss_total - before.rss_total
        figures.update(
            {
                "server_rss_before": before.rss_total,
                "server_rss_after": idle_end.rss_total,
                "bytes_per_connection": round(grown / count) if count else None,
                "bytes_per_connection_by_process": {
                    name: round((idle_end.rss[name] - before.rss.get(name, 0)) / count) if count else None
                    for name in idle_end.rss
                },
                "idle_cpu_percent": round((idle_end.cpu_total - idle_start.cpu_total) / sizes.w4_idle * 100, 2),
            }
        )
    return figures


async def _fill(url: str, token: str, to: int, count: int, window: int = 256) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        gateway = (await http.get("/v1/gateway", headers={"Authorization": f"Bearer {token}"})).json()["url"]
    async with websockets.connect(gateway, compression=None, max_queue=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        if orjson.loads(await ws.recv())["type"] != "ready":
            raise ConnectionError("the sender was not accepted")
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
            if answer["type"] == "error":
                raise RuntimeError(f"a waiting message was refused: {answer}")
            if answer["type"] == "ack":
                acked += 1


async def _catch_up(url: str, count: int) -> dict[str, Any]:
    from im_sdk import AsyncClient

    name = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        sender = await _account(http, f"w5s{name}")
        receiver = await _account(http, f"w5r{name}")
    await _fill(url, str(sender["access_token"]), int(receiver["user"]["id"]), count)
    seqs: set[int] = set()
    duplicated = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        # The clock starts at the login request (an application has its HTTP client already).
        started = time.perf_counter()
        login = await http.post(
            "/v1/auth/login", json={"username": f"w5r{name}", "password": PASSWORD, "device": "second"}
        )
        token = login.raise_for_status().json()["access_token"]
    async with AsyncClient(url, access_token=token) as client, contextlib.aclosing(client.messages()) as events:
        async for event in events:
            if event.seq in seqs:
                duplicated += 1
            seqs.add(event.seq)
            if len(seqs) >= count:
                break
    elapsed = time.perf_counter() - started
    return {
        "messages": count,
        "received": len(seqs),
        "lost": count - len(seqs),
        "duplicated": duplicated,
        "seconds": round(elapsed, 4),
        "messages_per_s": round(count / elapsed, 1),
    }


def run_w5(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """W5: messages waiting for an offline user; from login to the last one received (the SDK's stream)."""
    assert server.url is not None
    url = server.url
    runs = [asyncio.run(asyncio.wait_for(_catch_up(url, count), 600)) for count in sizes.w5_messages]
    return {
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "runs": runs,
    }


def run_storm(server: Server, workers: Workers, sizes: Sizes) -> dict[str, Any]:
    """The reconnect storm: gateway gw-1 killed with its clients; one message to every device right after.

    Devices are connected and caught up before the kill. ``resynced_s`` is the time from the kill until
    every device of gw-1 has connected again and has its message; ``lost`` counts acknowledged messages a
    device never saw, ``duplicated`` messages stored twice (``duplicate_pushes``: pushes of a message the
    device had already, which the client drops).
    """
    from bench import faults

    if not server.started_here:
        return {"skipped": "the reconnect storm kills a gateway: only in a cluster the benchmark starts"}
    if server.gateways < 2:
        return {"skipped": "the reconnect storm needs at least two gateways (--gateways)"}
    assert server.url is not None
    assert server.cluster is not None
    url = server.url

    async def make_sender() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return await _account(http, f"storm{uuid.uuid4().hex[:8]}")

    session = asyncio.run(make_sender())
    peer = int(session["user"]["id"])
    devices = [
        d
        for ds in workers.call("storm_connect", [(n, peer) for n in split(sizes.storm_clients, len(workers))])
        for d in ds
    ]
    doomed_url = server.cluster.gateway_urls()[0]
    doomed = [uid for uid, gateway in devices if gateway == doomed_url]
    everyone = [uid for uid, _ in devices]
    sender = faults.Sender([url], str(session["access_token"]))
    killed = time.time()
    server.kill_gateway("gw-1")
    asyncio.run(sender.to_all(everyone, "gk"))
    resynced: float | None = None
    while time.time() - killed < sizes.storm_timeout:
        if sum(workers.all("storm_missing", "gk", doomed, killed)) == 0:
            resynced = time.time() - killed
            break
        time.sleep(0.05)
    reports = [r for rs in workers.all("storm_report") for r in rs]
    by_uid = {report["uid"]: report for report in reports}
    lost = sum(1 for text in sender.acked if text not in by_uid.get(int(text.rsplit("-", 1)[1]), {"seen": {}})["seen"])
    duplicated = sum(len(r["stored"]) - len(set(r["stored"])) for r in reports)
    reconnect = []
    for uid in doomed:
        after = [at for at, _ in by_uid[uid]["readies"] if at >= killed]
        if after:
            reconnect.append((after[0] - killed) * 1000)
    return {
        "clients": len(devices),
        "on_killed_gateway": len(doomed),
        "reconnected": len(reconnect),
        "resynced_s": round(resynced, 3) if resynced is not None else None,
        "acked": len(sender.acked),
        "lost": lost,
        "duplicated": duplicated,
        "duplicate_pushes": sum(r["duplicate_pushes"] for r in reports),
        **{k.replace("delivery", "reconnect"): v for k, v in _percentiles(reconnect, "delivery").items()},
    }


WORKLOADS = {"W4": run_w4, "W1": run_w1, "W2": run_w2, "W3": run_w3, "W5": run_w5, "storm": run_storm}
"""Every workload by name, in the order a full run takes them: W4 first, on servers whose heaps no earlier
connection has grown (memory freed by closed connections would be reused and hide the cost of new ones);
the storm last, as it kills a gateway."""
