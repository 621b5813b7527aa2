"""Client processes: real WebSocket clients driven by the coordinator, a few thousand per process.

:class:`Workers` forks ``procs`` processes; each runs an asyncio loop (uvloop when installed) with one
:class:`ClientSide` and answers the coordinator's commands over a pipe, one at a time. The coordinator
sends every process the same command (with that process's share) and gathers the answers; timestamps are
``time.time()`` on one machine, so the processes agree on them.

A client behaves as the SDK does on the wire: log in over HTTP, ask ``/v1/gateway`` where to connect,
``auth`` with the access token, wait for ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson
import websockets

from ._http import HttpError, HttpPool

__all__ = ["PASSWORD", "Account", "ClientSide", "Workers", "split"]

PASSWORD = "bench-password"


@dataclass
class Account:
    """One user with one device, and its WebSocket once connected."""

    name: str
    uid: int = 0
    token: str = ""
    ws: Any = None
    reader: asyncio.Task[None] | None = None


@dataclass
class _Step:
    """What one process saw during one offered-load step."""

    inflight: dict[str, int] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    errors: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    receivers: dict[str, tuple[Account, str]] = field(default_factory=dict)
    """Who each send went to, and the conversation (to look for an acknowledged message never pushed)."""
    resyncs: int = 0
    closed: int = 0


class ClientSide:
    """The state and commands of one client process."""

    def __init__(self, url: str, run: str, index: int) -> None:
        self.url = url
        self.prefix = f"b{run}w{index}"
        self.http = httpx.AsyncClient(
            base_url=url, timeout=httpx.Timeout(60, pool=300), limits=httpx.Limits(max_connections=32)
        )
        self.light = HttpPool(url, size=32)
        """For the connect workload: httpx's own CPU bounded the connect rate (see bench/_http.py)."""
        self.accounts: dict[str, list[Account]] = {}
        self.step: _Step | None = None
        self.group_seen: dict[int, list[float]] = defaultdict(list)
        self.group_duplicates = 0
        self._group_seen_by: set[tuple[int, int]] = set()
        self.storm: list[Any] = []
        self.storm_tasks: list[asyncio.Task[None]] = []

    # Set-up -------------------------------------------------------------------------------------------

    async def register(self, key: str, count: int, concurrency: int = 16) -> list[int]:
        """Register ``count`` users under ``key`` (no login kept); returns their ids."""
        accounts = [Account(f"{self.prefix}{key}{i}") for i in range(count)]
        semaphore = asyncio.Semaphore(concurrency)

        async def one(account: Account) -> None:
            async with semaphore:
                await self.http.post("/v1/auth/register", json={"username": account.name, "password": PASSWORD})
                account.uid = await self._login(account)

        await asyncio.gather(*(one(account) for account in accounts))
        self.accounts[key] = accounts
        return [account.uid for account in accounts]

    async def _login(self, account: Account) -> int:
        response = await self.http.post(
            "/v1/auth/login", json={"username": account.name, "password": PASSWORD, "device": "bench"}
        )
        response.raise_for_status()
        session = response.json()
        account.token = session["access_token"]
        return int(session["user"]["id"])

    async def _gateway(self, headers: dict[str, str]) -> str:
        # As the SDK does: a 503 means no gateway looked alive for a moment (a heartbeat late on a busy core).
        for attempt in range(20):
            response = await self.http.get("/v1/gateway", headers=headers)
            if response.status_code != 503 or attempt == 19:
                break
            await asyncio.sleep(0.1 * (attempt + 1))
        return str(response.raise_for_status().json()["url"])

    async def _light_gateway(self, token: str) -> str:
        # As _gateway, through the light client.
        for attempt in range(20):
            try:
                return str((await self.light.request("GET", "/v1/gateway", token=token))["url"])
            except HttpError as exc:
                if exc.status != 503 or attempt == 19:
                    raise
            await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def connect(self, key: str, concurrency: int = 32) -> dict[str, float]:
        """Log every user of ``key`` in again and connect it; returns when each got ``ready``."""
        semaphore = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(account: Account) -> None:
            nonlocal failures
            async with semaphore:
                try:
                    session = await self.light.request(
                        "POST", "/v1/auth/login", {"username": account.name, "password": PASSWORD, "device": "bench"}
                    )
                    account.token = session["access_token"]
                    gateway = await self._light_gateway(account.token)
                    ws = await websockets.connect(
                        gateway, compression=None, max_queue=None, open_timeout=60, ping_interval=None
                    )
                    await ws.send(orjson.dumps({"type": "auth", "token": account.token}).decode())
                    ready = orjson.loads(await ws.recv())
                    if ready["type"] != "ready":
                        raise ConnectionError(str(ready))
                except (
                    OSError,
                    HttpError,
                    httpx.HTTPError,
                    websockets.WebSocketException,
                    ConnectionError,
                    TimeoutError,
                ) as exc:
                    failures += 1
                    print(f"{account.name} could not connect: {exc!r}", file=sys.stderr)
                    return
                account.ws = ws
                account.reader = asyncio.create_task(self._read(account))

        started = time.time()
        await asyncio.gather(*(one(account) for account in self.accounts[key]))
        return {"connected": len(self.accounts[key]) - failures, "failed": failures, "started": started}

    async def disconnect(self, key: str) -> None:
        for account in self.accounts.get(key, []):
            if account.reader is not None:
                account.reader.cancel()
            if account.ws is not None:
                with contextlib.suppress(Exception):
                    await account.ws.close()
            account.ws = account.reader = None

    async def _read(self, account: Account) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in account.ws:
                now = time.time_ns()
                frame = orjson.loads(data)
                kind = frame["type"]
                step = self.step
                if kind == "message":
                    self._on_message(account, frame["message"], now)
                elif kind == "ack" and step is not None:
                    key = frame.get("client_msg_id") or ""
                    sent = step.inflight.pop(key, None)
                    if sent is not None:
                        step.acked.add(key)
                        step.ack_ms.append((now - sent) / 1e6)
                elif kind == "error" and step is not None and step.inflight.pop(frame.get("client_msg_id") or "", None):
                    step.errors += 1
                elif kind == "resync" and step is not None:
                    step.resyncs += 1  # the server dropped pushes (a slow consumer): the SDK would sync
        if self.step is not None:
            self.step.closed += 1  # closed by the server (too slow a reader: 4013) while a step ran

    def _on_message(self, account: Account, message: dict[str, Any], now: int) -> None:
        text = str(message.get("content", {}).get("text", ""))
        if text.startswith("g:"):
            # A group message: "g:<number>"; the time it was sent is the coordinator's.
            number = int(text[2:])
            if (number, account.uid) in self._group_seen_by:
                self.group_duplicates += 1
                return
            self._group_seen_by.add((number, account.uid))
            self.group_seen[number].append(now / 1e9)
            return
        step = self.step
        if step is None or not text.startswith("p:"):
            return
        _, sent, key = text.split(":", 2)
        if key in step.delivered:
            step.duplicated += 1
            return
        step.delivered[key] = now
        step.delivery_ms.append((now - int(sent)) / 1e6)

    # W1 and W2: pairs at an offered rate -----------------------------------------------------------------

    async def prepare(self) -> None:
        """Before a measurement: the load generator must not pause it, so the set-up heap is collected
        once and kept out of later collections (a forked process may inherit a large heap)."""
        gc.collect()
        gc.freeze()

    async def offered_step(
        self, key: str, rate: float, duration: float, start_at: float, drain: float
    ) -> dict[str, Any]:
        """Senders (even accounts) send to receivers (odd ones), round robin, ``rate`` per second in all."""
        accounts = [a for a in self.accounts[key] if a.ws is not None]
        pairs = list(zip(accounts[0::2], accounts[1::2], strict=False))
        step = self.step = _Step()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = start_at + duration
        # Message i is due at start_at + i / rate. A process that starts or falls behind catches up in bursts
        # (the latency shows it) for up to one more duration; what it still could not send is ``offered - sent``.
        total = round(rate * duration)
        sent = 0
        cursor = 0
        while pairs and sent < total and time.time() < stop_at + duration:
            due = min(total, int((time.time() - start_at) * rate) + 1)
            while sent < due:
                sender, receiver = pairs[cursor]
                cursor = (cursor + 1) % len(pairs)
                client_id = uuid.uuid4().hex
                ts = time.time_ns()
                step.inflight[client_id] = ts
                step.receivers[client_id] = (
                    receiver,
                    f"d:{min(sender.uid, receiver.uid)}:{max(sender.uid, receiver.uid)}",
                )
                sent += 1
                frame = {
                    "type": "send",
                    "to": receiver.uid,
                    "client_msg_id": client_id,
                    "content": {"kind": "text", "text": f"p:{ts}:{client_id}"},
                }
                with contextlib.suppress(websockets.ConnectionClosed):
                    await sender.ws.send(orjson.dumps(frame).decode())
            await asyncio.sleep(0.005)
        deadline = time.time() + drain
        while time.time() < deadline and (step.inflight or not step.acked <= step.delivered.keys()):
            await asyncio.sleep(0.02)
        self.step = None
        missing = step.acked - step.delivered.keys()
        late = await self._stored(step, missing) if missing else set()
        return {
            "offered": round(rate * duration),
            "sent": sent,
            "acked": len(step.acked),
            "errors": step.errors,
            "unanswered": len(step.inflight),
            "delivered": len(step.delivered),
            "lost": len(missing - late),
            "late": len(late),
            "resyncs": step.resyncs,
            "closed": step.closed,
            "duplicated": step.duplicated,
            "ack_ms": step.ack_ms,
            "delivery_ms": step.delivery_ms,
        }

    async def _stored(self, step: _Step, missing: set[str]) -> set[str]:
        """Which acknowledged sends whose push never came are stored all the same (read from history, as a
        device catches up): late or dropped pushes, not lost messages."""
        conversations = {step.receivers[key][1]: step.receivers[key][0] for key in missing}
        found: set[str] = set()
        for conversation, receiver in conversations.items():
            after = 0
            while True:
                response = await self.http.get(
                    f"/v1/conversations/{conversation}/messages",
                    params={"after": after, "limit": 1000},
                    headers={"Authorization": f"Bearer {receiver.token}"},
                )
                page = response.raise_for_status().json()
                for message in page["messages"]:
                    text = str(message.get("content", {}).get("text", ""))
                    if text.startswith("p:"):
                        found.add(text.split(":", 2)[2])
                    after = max(after, int(message["seq"]))
                if not page.get("has_more") or not page["messages"]:
                    break
        return missing & found

    # W3: one group -------------------------------------------------------------------------------------

    async def group_count(self) -> int:
        """How many group messages the members of this process have received so far."""
        return sum(len(times) for times in self.group_seen.values())

    async def group_report(self) -> dict[str, Any]:
        """Per group message number, when each member of this process got it."""
        seen = {number: times for number, times in self.group_seen.items()}
        duplicates, self.group_duplicates = self.group_duplicates, 0
        self.group_seen = defaultdict(list)
        return {"seen": seen, "duplicated": duplicates}

    # The reconnect storm: devices that reconnect and catch up as the SDK does --------------------------

    async def storm_connect(self, count: int, peer: int) -> list[tuple[int, str]]:
        """Connect ``count`` reconnecting devices (:class:`bench.faults.Device`); returns (uid, gateway)."""
        from bench import faults

        if faults.Device.requests is None:
            # Device.run and catch_up share this bound on HTTP requests in flight (faults.py's own
            # workers set it too); without it every device's task failed at once, before connecting.
            faults.Device.requests = asyncio.Semaphore(48)
        self.storm = [faults.Device(self.url, f"{self.prefix}s{i}", peer) for i in range(count)]
        semaphore = asyncio.Semaphore(16)

        async def login(device: Any) -> None:
            async with semaphore:
                await device.login(self.http)

        await asyncio.gather(*(login(device) for device in self.storm))
        events = [asyncio.Event() for _ in self.storm]
        self.storm_tasks = [
            asyncio.create_task(device.run(self.http, event)) for device, event in zip(self.storm, events, strict=True)
        ]
        await _connected(self.storm_tasks, events)
        return [(device.uid, device.gateway) for device in self.storm]

    async def storm_missing(self, prefix: str, uids: list[int], since: float = 0.0) -> int:
        """How many of the devices ``uids`` have not seen their message ``<prefix>-<uid>`` yet, or have not
        had a ``ready`` at ``since`` or later (connected again after the kill)."""
        wanted = set(uids)
        return sum(
            1
            for device in self.storm
            if device.uid in wanted
            and (
                f"{prefix}-{device.uid}" not in {text for text, _ in device.seen.values()}
                or not any(at >= since for at, _ in device.readies)
            )
        )

    async def storm_report(self) -> list[dict[str, Any]]:
        """Stop the devices; each reads its whole history (what is stored) and says what it saw."""
        for device in self.storm:
            device.stopping = True
        for task in self.storm_tasks:
            task.cancel()
        await asyncio.gather(*self.storm_tasks, return_exceptions=True)
        report = []
        for device in self.storm:
            stored: list[str] = []
            for attempt in range(10):
                try:
                    stored = await device.history(self.http)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            report.append(
                {
                    "uid": device.uid,
                    "seen": {text: at for text, at in device.seen.values()},
                    "stored": stored,
                    "duplicate_pushes": device.duplicate_pushes,
                    "readies": device.readies,
                }
            )
        self.storm = []
        return report

    async def close(self) -> None:
        for device in self.storm:
            device.stopping = True
        for task in self.storm_tasks:
            task.cancel()
        for key in list(self.accounts):
            await self.disconnect(key)
        await self.http.aclose()
        await self.light.close()


async def _connected(tasks: list[asyncio.Task[None]], events: list[asyncio.Event]) -> None:
    """Wait until every event is set; a task that ends first (it failed) raises its error instead of hanging."""
    for task, event in zip(tasks, events, strict=True):
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        if not event.is_set():
            waiter.cancel()
            for other in tasks:
                other.cancel()
            task.result()  # raises what ended it
            raise RuntimeError("a storm device stopped before it connected")


async def _serve(conn: Connection, url: str, run: str, index: int) -> None:
    side = ClientSide(url, run, index)
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command is None:
                break
            name, args = command
            try:
                result = await getattr(side, name)(*args)
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        await side.close()


def _process_main(conn: Connection, url: str, run: str, index: int) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_serve(conn, url, run, index))


class Workers:
    """``procs`` client processes answering commands in lock step."""

    def __init__(self, url: str, procs: int) -> None:
        context = multiprocessing.get_context("fork")
        run = uuid.uuid4().hex[:6]
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(procs):
            ours, theirs = context.Pipe()
            process = context.Process(target=_process_main, args=(theirs, url, run, index), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def __len__(self) -> int:
        return len(self.pipes)

    def send(self, name: str, per_process: Sequence[tuple[Any, ...]]) -> None:
        for pipe, args in zip(self.pipes, per_process, strict=True):
            pipe.send((name, args))

    def gather(self, timeout: float = 600) -> list[Any]:
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError("a client process did not answer")
            answers.append(pipe.recv())
        # Every answer is read before one failure is raised: the next command must not get a stale answer.
        for status, value in answers:
            if status != "ok":
                raise RuntimeError(f"a client process failed:\n{value}")
        return [value for _, value in answers]

    def call(self, name: str, per_process: Sequence[tuple[Any, ...]], timeout: float = 600) -> list[Any]:
        """Send each process its arguments and wait for every answer."""
        self.send(name, per_process)
        return self.gather(timeout)

    def all(self, name: str, *args: Any, timeout: float = 600) -> list[Any]:
        """The same command with the same arguments to every process."""
        return self.call(name, [args] * len(self), timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
