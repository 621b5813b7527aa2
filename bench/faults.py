"""Faults at scale: how fast a cluster heals, and whether anything acknowledged is lost or duplicated.

Starts a cluster of real processes (nats-server, one API, ``--gateways`` gateways; not supervised, so a
killed process stays dead), connects ``--clients`` devices spread over ``--procs`` client processes
(raw WebSocket clients that behave like the SDK: jittered backoff from ``Backoff()``'s defaults,
"fetch what I lack" after ``ready`` and after a ``resync`` frame, by default as the SDK does it, with a
``sync`` frame on the connection: see ``--catch-up``), then injects, in turn:

- ``gateway-kill``: SIGKILL of gateway gw-1, then one message to every device, gw-1's devices first.
  Reports when gw-1 stopped being assigned and when its routes were gone (moved by its devices
  reconnecting elsewhere, or removed by the reaper; watched on a sample of its devices through the
  admin API), and for its devices the time to reconnect and to be caught up: reconnected, the catch-up
  after ``ready`` done, and the message seen if it was committed before the device reconnected (else
  its delivery since commit is reported apart, as live delivery), p50/p99/max. Devices reconnect as
  the SDK does: to the next gateway of their assignment, without asking ``GET /v1/gateway`` again.
- ``nats-outage``: SIGKILL of nats-server; one message to every device over HTTP while it is down (the
  API stores them); nats-server started again after ``--outage`` seconds on the same port and store;
  no new traffic. Reports how long after NATS returned each message reached its connected device.
- ``api-kill``: a second API node is started, senders (WebSocket and HTTP, failing over to the other
  node with the same client_msg_id) run against both, the second node is killed. Reports the longest
  wait of a WebSocket send.

At the end every device reads its whole history: ``lost`` counts messages acknowledged to the sender
that a device never received (by push or fetch), ``duplicated`` messages stored twice. Peak memory is
each server process's VmHWM.

    python bench/faults.py --clients 2000 --procs 4 --outage 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import faulthandler
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from _common import BENCH_ENV, percentile

from im_sdk import Backoff
from im_sdk._base import tls_context
from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
from im_server.cluster.natsbin import free_port, free_port_block, start_nats_server, wait_for_port

PASSWORD = "bench-password"


# Client processes -------------------------------------------------------------------------------------


class SyncRefused(Exception):
    """The gateway answered a ``sync`` frame with an error (busy, say): tried again after its ``retry_after``,
    as the SDK does (else after a backoff delay)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(str(answer))
        retry_after = answer.get("retry_after")
        self.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None


class Device:
    """One raw WebSocket client with the SDK's reconnect behaviour."""

    requests: asyncio.Semaphore | None = None
    """HTTP requests one client process has in flight (httpx's pool slows down with a long queue)."""
    mode = "ws"
    """How a device catches up: ``ws`` as the SDK does ("conversations since" its cursor with the newest
    messages, asked with a ``sync`` frame on the connection, then history only if they do not reach back
    far enough), ``http`` the same with ``GET /v1/conversations`` (the SDK with a gateway that does not
    know the frame), ``history`` straight from history (one request: a device that knows its only
    conversation)."""

    def __init__(self, url: str, name: str, peer: int) -> None:
        self.url = url
        self.name = name
        self.peer = peer
        self.uid = 0
        self.token = ""
        self.conversation = ""
        self.seen: dict[int, tuple[str, float]] = {}
        self.duplicate_pushes = 0
        self.resyncs = 0
        self.resynced_at: list[float] = []
        self.catch_up_errors = 0
        self.since: str | None = None
        self.catch_up_requests = 0
        self.closes: list[tuple[float, int | None]] = []
        self.readies: list[tuple[float, str]] = []
        self.attempts: list[float] = []
        """When each connection attempt began (after the backoff delay and the assignment, if any)."""
        self.opened: list[float] = []
        """When each WebSocket handshake ended."""
        self.caught_up_at: list[float] = []
        self.failures: list[tuple[float, str]] = []
        """Connection attempts that failed or connections that ended: when, and why."""
        """When each catch-up after ``ready`` ended."""
        self.gateway = ""
        self.direct_reconnects = 0
        """Reconnects to an alternate of the last assignment, without asking ``GET /v1/gateway``."""
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._again = False
        self._ws: Any = None
        self._syncs = 0
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        """The answer to the ``sync`` frame in flight (``--catch-up ws``), set by the reader."""
        self._sync_lock = asyncio.Lock()
        """One ``sync`` frame in flight per connection (a catch-up after ``ready`` and one after a ``resync``
        frame may overlap)."""

    async def login(self, http: httpx.AsyncClient) -> None:
        await http.post("/v1/auth/register", json={"username": self.name, "password": PASSWORD})
        session = (
            await http.post("/v1/auth/login", json={"username": self.name, "password": PASSWORD, "device": "bench"})
        ).json()
        self.uid, self.token = session["user"]["id"], session["access_token"]
        low, high = sorted((self.uid, self.peer))
        self.conversation = f"d:{low}:{high}"

    async def run(self, http: httpx.AsyncClient, connected: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        delays = Backoff().delays()
        assert Device.requests is not None
        lost: str | None = None
        alternates: list[dict[str, str]] = []
        while not self.stopping:
            try:
                # As the SDK does (im_sdk.realtime.policy.Gateways): after losing a working connection, the
                # next alternate of the last assignment; else ask, naming the gateway just lost.
                while alternates and alternates[0]["node_id"] == lost:
                    alternates.pop(0)
                if alternates:
                    gateway = alternates.pop(0)
                    self.direct_reconnects += 1
                else:
                    async with Device.requests:
                        params = {"avoid": lost} if lost is not None else None
                        answer = await http.get("/v1/gateway", headers=headers, params=params)
                    gateway = answer.raise_for_status().json()
                    alternates = list(gateway.get("alternates", []))
                self.gateway, lost = gateway["url"], gateway["node_id"]
                held, alternates = alternates, []  # given back once this connection works
                self.attempts.append(time.time())
                async with websockets.connect(self.gateway, compression=None, max_queue=None, open_timeout=5) as ws:
                    self.opened.append(time.time())
                    await ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
                    ready = orjson.loads(await ws.recv())
                    if ready["type"] != "ready":
                        raise ConnectionError(str(ready))
                    alternates = held
                    self.readies.append((time.time(), self.gateway))
                    delays = Backoff().delays()
                    self._ws = ws
                    reader = asyncio.create_task(self._read(ws, http))
                    await self.catch_up(http)
                    self.caught_up_at.append(time.time())
                    # Connected and caught up: a fault injected from now on finds the device at rest.
                    connected.set()
                    await reader
                    self.closes.append((time.time(), ws.close_code))
            except (OSError, httpx.HTTPError, websockets.WebSocketException, ConnectionError, TimeoutError) as exc:
                self.failures.append((time.time(), f"{type(exc).__name__}: {str(exc)[:80]}"))
            if not self.stopping:
                await asyncio.sleep(next(delays))

    async def _read(self, ws: Any, http: httpx.AsyncClient) -> None:
        try:
            await self._frames(ws, http)
        finally:
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(ConnectionError("the connection closed during a sync"))

    async def _frames(self, ws: Any, http: httpx.AsyncClient) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in ws:
                frame = orjson.loads(data)
                answer = self._answer
                if answer is not None and frame.get("id") == f"s{self._syncs}" and not answer.done():
                    answer.set_result(frame)  # a sync page, or an error answering it
                elif frame["type"] == "message":
                    self._note(frame["message"])
                elif frame["type"] == "resync":
                    self.resyncs += 1
                    self.resynced_at.append(time.time())
                    if self._tasks:
                        self._again = True  # one catch-up at a time; it runs once more when done
                    else:
                        task = asyncio.create_task(self._catch_up_until_done(http))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)

    def _note(self, message: dict[str, Any]) -> None:
        seq = message["seq"]
        if seq in self.seen:
            self.duplicate_pushes += 1
        else:
            self.seen[seq] = (message["content"].get("text", ""), time.time())

    async def _catch_up_until_done(self, http: httpx.AsyncClient) -> None:
        while True:
            self._again = False
            await self.catch_up(http)
            if not self._again:
                return

    async def catch_up(self, http: httpx.AsyncClient) -> None:
        # Until it works, as the SDK does (it reconnects and syncs again): a device that gave up after a few
        # errors stayed behind until some later resync, which the figures then blamed on the fault. The
        # wait between tries is spent outside the limit on requests in flight.
        assert Device.requests is not None
        delays = Backoff().delays()
        ws = self._ws
        while not self.stopping:
            try:
                # A sync frame is no HTTP request: the limit on requests in flight does not apply.
                async with contextlib.nullcontext() if Device.mode == "ws" else Device.requests:
                    await self._catch_up(http)
                return
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    return  # no message in the conversation yet: nothing to catch up
                self.catch_up_errors += 1
            except SyncRefused as exc:
                self.catch_up_errors += 1
                if exc.retry_after is not None:
                    await asyncio.sleep(exc.retry_after)
                    continue
            except (httpx.HTTPError, TimeoutError):
                self.catch_up_errors += 1
            except (ConnectionError, websockets.ConnectionClosed):
                self.catch_up_errors += 1
                if Device.mode == "ws" and ws is not None and ws.close_code is not None:
                    return  # as the SDK: it reconnects and catches up on the new connection
            await asyncio.sleep(next(delays))

    async def _page(self, http: httpx.AsyncClient, headers: dict[str, str], since: str | None) -> dict[str, Any]:
        """One page of "conversations since": by ``sync`` frame or over HTTP (``Device.mode``)."""
        self.catch_up_requests += 1
        if Device.mode == "ws":
            async with self._sync_lock:
                self._syncs += 1
                frame: dict[str, Any] = {"type": "sync", "id": f"s{self._syncs}", "limit": 500, "recent": 20}
                if since is not None:
                    frame["since"] = since
                waiting = self._answer = asyncio.get_running_loop().create_future()
                try:
                    await self._ws.send(orjson.dumps(frame).decode())
                    async with asyncio.timeout(30):
                        answer = await waiting
                finally:
                    self._answer = None
            if answer["type"] != "sync":
                raise SyncRefused(answer)
            page: dict[str, Any] = answer["page"]
            return page
        params: dict[str, Any] = {"limit": 500, "recent": 20}
        if since is not None:
            params["since"] = since
        listed: dict[str, Any] = (
            (await http.get("/v1/conversations", params=params, headers=headers)).raise_for_status().json()
        )
        return listed

    async def _catch_up(self, http: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        after = max(self.seen, default=0)
        if Device.mode in ("ws", "http"):
            since = self.since
            while True:
                page = await self._page(http, headers, since)
                for summary in page["conversations"]:
                    if summary["id"] != self.conversation or summary["max_seq"] <= after:
                        continue
                    start = summary.get("recent_after")
                    if start is not None and start <= after:
                        for message in summary.get("recent", []):
                            if message["seq"] > after and message["seq"] not in self.seen:
                                self._note(message)
                    else:
                        await self._history_after(http, headers, after)
                since = page["cursor"]
                if not page["has_more"]:
                    break
            self.since = since  # the pass is complete
            return
        await self._history_after(http, headers, after)

    async def _history_after(self, http: httpx.AsyncClient, headers: dict[str, str], after: int) -> None:
        while True:
            self.catch_up_requests += 1
            answer = await http.get(
                f"/v1/conversations/{self.conversation}/messages",
                params={"after": after, "limit": 500},
                headers=headers,
            )
            page = answer.raise_for_status().json()
            messages = page.get("messages", [])
            for message in messages:
                if message["seq"] not in self.seen:
                    self._note(message)
            if not messages or not page.get("has_more"):
                return
            after = messages[-1]["seq"]

    async def history(self, http: httpx.AsyncClient) -> list[str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        texts: list[str] = []
        after = 0
        while True:
            page = (
                await http.get(
                    f"/v1/conversations/{self.conversation}/messages",
                    params={"after": after, "limit": 1000},
                    headers=headers,
                )
            ).json()
            messages = page.get("messages", [])
            texts += [message["content"].get("text", "") for message in messages]
            if not messages or not page.get("has_more"):
                return texts
            after = messages[-1]["seq"]


async def client_worker(url: str, index: int, count: int, peer: int, run: str) -> None:
    Device.requests = asyncio.Semaphore(48)
    limits = httpx.Limits(max_connections=64)
    timeout = httpx.Timeout(30, pool=120)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits))
        devices = [Device(url, f"f{run}w{index}d{i}", peer) for i in range(count)]
        # Each device makes its requests with an HTTP client of its own, as an SDK client does: one pool
        # shared by hundreds of devices costs the process more CPU per request the more connections it
        # holds (httpcore checks every pooled connection on each request), and a client process short
        # of CPU made the devices' catch-ups look slow.
        tls = tls_context()
        own = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout, verify=tls))
            for _ in devices
        ]
        semaphore = asyncio.Semaphore(16)

        async def login(device: Device) -> None:
            async with semaphore:
                await device.login(http)

        await asyncio.gather(*(login(device) for device in devices))
        events = [asyncio.Event() for _ in devices]
        tasks = [
            asyncio.create_task(device.run(client, event))
            for device, client, event in zip(devices, own, events, strict=True)
        ]
        await asyncio.gather(*(event.wait() for event in events))
        print(json.dumps({"ready": [device.uid for device in devices]}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (line := (await reader.readline()).decode().strip()) != "stop":
            if not line:
                return
            if line == "where":  # the gateway each device is connected to now
                print(json.dumps({"where": {device.uid: device.gateway for device in devices}}), flush=True)
        for device in devices:
            device.stopping = True
        for task in [*tasks, *(task for device in devices for task in device._tasks)]:
            task.cancel()  # catch-ups still running too: what they had not fetched yet counts as lost
        await asyncio.gather(*tasks, return_exceptions=True)
        histories: dict[int, list[str]] = {}

        async def history(device: Device) -> None:
            async with semaphore:
                for attempt in range(10):
                    try:
                        histories[device.uid] = await device.history(http)
                        return
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5 * (attempt + 1))

        await asyncio.gather(*(history(device) for device in devices))
        report = []
        for device in devices:
            stored = histories.get(device.uid, [])
            report.append(
                {
                    "uid": device.uid,
                    "seen": {text: at for text, at in device.seen.values()},
                    "stored": stored,
                    "duplicate_pushes": device.duplicate_pushes,
                    "resyncs": device.resyncs,
                    "resynced_at": device.resynced_at,
                    "catch_up_errors": device.catch_up_errors,
                    "catch_up_requests": device.catch_up_requests,
                    "readies": device.readies,
                    "caught_up_at": device.caught_up_at,
                    "attempts": device.attempts,
                    "failures": device.failures,
                    "opened": device.opened,
                    "direct_reconnects": device.direct_reconnects,
                    "closes": device.closes,
                }
            )
        print(json.dumps({"report": report}), flush=True)


# The coordinator ----------------------------------------------------------------------------------------


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, in KiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {percentile(values, 0.5):.2f}s  p99 {percentile(values, 0.99):.2f}s  max {max(values):.2f}s"


class Sender:
    """Sends one text to each of many users over HTTP, retrying on another API node with the same id."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}"}
        self.acked: dict[str, float] = {}

    async def send(self, http: httpx.AsyncClient, to: int, text: str) -> None:
        key = secrets.token_hex(12)
        body = {"to": to, "client_msg_id": key, "content": {"kind": "text", "text": text}}
        for attempt in range(60):
            url = self.urls[attempt % len(self.urls)]
            try:
                answer = await http.post(f"{url}/v1/messages", json=body, headers=self.headers)
                if answer.status_code < 500:
                    answer.raise_for_status()
                    self.acked[text] = time.time()
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
        raise RuntimeError(f"{text} never stored")

    async def to_all(self, users: list[int], prefix: str, concurrency: int = 64) -> None:
        semaphore = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=10) as http:

            async def one(uid: int) -> None:
                async with semaphore:
                    await self.send(http, uid, f"{prefix}-{uid}")

            await asyncio.gather(*(one(uid) for uid in users))


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _worker(arguments: list[str]) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--worker", *arguments]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


ROUTE_SAMPLE = 20
"""Devices of the killed gateway whose routes are watched."""


async def _admin(http: httpx.AsyncClient, api_env: dict[str, str], data_dir: Path, name: str) -> dict[str, str]:
    """Headers of a cluster admin, made as an operator makes the first one (``im server create-admin``)."""
    command = [sys.executable, "-c", "from im_cli.main import app; app()", "server", "create-admin", name]
    command += ["--data-dir", str(data_dir), "--password-stdin"]
    if "IM_DB_URL" in api_env:
        command += ["--db", api_env["IM_DB_URL"]]
    await asyncio.to_thread(subprocess.run, command, input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    answer = await http.post("/v1/auth/login", json={"username": name, "password": PASSWORD, "device": "bench"})
    return {"Authorization": f"Bearer {answer.raise_for_status().json()['access_token']}"}


async def poll_until(predicate: Any, timeout: float, interval: float = 0.02) -> float | None:
    started = time.time()
    while time.time() - started < timeout:
        with contextlib.suppress(Exception):
            if await predicate():
                return time.time()
        await asyncio.sleep(interval)
    return None


async def api_kill_load(
    cluster: EmbeddedCluster, env: dict[str, str], sender_name: str, users: list[int], results: dict[str, Any]
) -> Sender:
    port = free_port()
    extra = _spawn(
        [sys.executable, "-m", "im_server", "api"], {**env, "IM_API_PORT": str(port), "IM_NODE_ID": "api-extra"}
    )
    wait_for_port("127.0.0.1", port, process=extra, timeout=60)
    extra_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=cluster.api_url, timeout=10) as http:
        sessions = []
        for device in range(4):
            session = (
                await http.post(
                    "/v1/auth/login", json={"username": sender_name, "password": PASSWORD, "device": f"ws{device}"}
                )
            ).json()
            sessions.append(session["access_token"])
    http_sender = Sender([extra_url, cluster.api_url], sessions[0])
    waits: list[float] = []
    ws_acked: dict[str, float] = {}
    stop = asyncio.Event()

    async def ws_sender(token: str, offset: int) -> None:
        async with httpx.AsyncClient(base_url=cluster.api_url, timeout=30) as http:
            gateway = (await http.get("/v1/gateway", headers={"Authorization": f"Bearer {token}"})).json()["url"]
        async with websockets.connect(gateway, compression=None, max_queue=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            assert orjson.loads(await ws.recv())["type"] == "ready"
            count = 0
            while not stop.is_set():
                uid = users[(offset + count) % len(users)]
                text = f"ak-ws{offset}-{count}-{uid}"
                key = secrets.token_hex(12)
                frame = {"type": "send", "to": uid, "client_msg_id": key, "content": {"kind": "text", "text": text}}
                started = time.time()
                await ws.send(orjson.dumps(frame).decode())
                while True:
                    answer = orjson.loads(await ws.recv())
                    if answer.get("client_msg_id") == key:
                        break
                waits.append(time.time() - started)
                if answer["type"] == "ack":
                    ws_acked[text] = time.time()
                else:
                    results.setdefault("ws_errors", []).append(answer)
                count += 1

    async def http_loop(offset: int) -> None:
        count = 0
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                uid = users[(offset * 7919 + count) % len(users)]
                started = time.time()
                await http_sender.send(http, uid, f"ak-http{offset}-{count}-{uid}")
                waits.append(time.time() - started)
                count += 1

    tasks = [asyncio.create_task(ws_sender(token, i)) for i, token in enumerate(sessions)]
    tasks += [asyncio.create_task(http_loop(i)) for i in range(4)]
    await asyncio.sleep(3)
    killed = time.time()
    extra.send_signal(signal.SIGKILL)
    extra.wait()
    await asyncio.sleep(4)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    results["api_kill_longest_wait"] = max(waits) if waits else float("nan")
    results["api_kill_sends"] = len(waits)
    results["api_kill_at"] = killed
    http_sender.acked.update(ws_acked)
    return http_sender


async def coordinate(args: argparse.Namespace) -> None:
    run = secrets.token_hex(3)
    data_dir = Path(tempfile.mkdtemp(prefix="im-faults-"))
    port = free_port_block(args.gateways + 1)
    metrics_token = secrets.token_urlsafe(16)
    env = {
        **BENCH_ENV,
        "IM_DM_REQUIRES_FRIENDSHIP": "false",
        "IM_LOG_LEVEL": "WARNING",
        "IM_METRICS_TOKEN": metrics_token,  # /metrics answers only with it
    }
    cluster = EmbeddedCluster(
        ClusterPlan(
            data_dir=data_dir,
            api_port=port,
            gateways=args.gateways,
            apis=args.apis,
            extra_env=env,
            log_level="WARNING",
        ),
        on_event=lambda text: print(f"  [cluster] {text}"),
    )
    cluster.start()
    api_env = dict(cluster._children[0].env)
    assert cluster.nats_url is not None
    nats_port = int(cluster.nats_url.rsplit(":", 1)[1])
    pids = {child.name: child.process.pid for child in cluster._children if child.process is not None}
    workers: list[subprocess.Popen[str]] = []
    results: dict[str, Any] = {"gw1_url": cluster.gateway_urls()[0]}
    try:
        async with httpx.AsyncClient(base_url=cluster.api_url, timeout=30) as http:
            sender_name = f"f{run}sender"
            await http.post("/v1/auth/register", json={"username": sender_name, "password": PASSWORD})
            session = (
                await http.post(
                    "/v1/auth/login", json={"username": sender_name, "password": PASSWORD, "device": "bench"}
                )
            ).json()
            admin_headers = await _admin(http, api_env, data_dir, f"f{run}admin")
        sender = Sender([cluster.api_url], session["access_token"])
        peer = session["user"]["id"]
        per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]
        started = time.time()
        for index, count in enumerate(per):
            workers.append(_worker([cluster.api_url, str(index), str(count), str(peer), run, args.catch_up]))
        users: list[int] = []
        for worker in workers:
            assert worker.stdout is not None
            users += json.loads(worker.stdout.readline())["ready"]
        print(f"{len(users)} devices connected in {time.time() - started:.1f}s over {len(workers)} processes")
        await sender.to_all(users, "base")
        await asyncio.sleep(2)

        # 1. A gateway killed. Its devices' messages are sent first, so that what is measured for them is
        # the healing (reconnect, then catch up), not how long the bench takes to send 2,000 messages.
        where: dict[int, str] = {}
        for worker in workers:
            assert worker.stdin is not None
            assert worker.stdout is not None
            worker.stdin.write("where\n")
            worker.stdin.flush()
            where.update({int(uid): url for uid, url in json.loads(worker.stdout.readline())["where"].items()})
        on_gw1 = [uid for uid in users if where.get(uid) == results["gw1_url"]]
        results["gw1_users"] = on_gw1
        gk_order = on_gw1 + [uid for uid in users if where.get(uid) != results["gw1_url"]]
        killed = time.time()
        os.kill(pids["gw-1"], signal.SIGKILL)
        print(f"  gw-1 killed; server pids {pids}", flush=True)

        async def unassigned() -> bool:
            async with httpx.AsyncClient(timeout=10) as http:
                health = (await http.get(f"{cluster.api_url}/healthz")).json()
                return "gw-1" not in health["gateways"]

        # gw-1's routes are gone once none of its devices is routed there: moved by the device reconnecting
        # elsewhere, or removed by the reaper. Judged on a sample (each poll is a request per device).
        sample = on_gw1[:: max(1, len(on_gw1) // ROUTE_SAMPLE)][:ROUTE_SAMPLE]

        async def reaped() -> bool:
            async with httpx.AsyncClient(base_url=cluster.api_url, headers=admin_headers, timeout=10) as http:
                answers = await asyncio.gather(*(http.get(f"/v1/admin/cluster/routes/{uid}") for uid in sample))
                routes = [route for answer in answers for route in answer.raise_for_status().json()["routes"]]
                return not any(route["node_id"] == "gw-1" for route in routes)

        unassigned_task = asyncio.create_task(poll_until(unassigned, 30))
        reaped_task = asyncio.create_task(poll_until(reaped, 30, interval=0.2))
        await sender.to_all(on_gw1, "gk")
        results["gk_gw1_sends_s"] = time.time() - killed
        await sender.to_all(gk_order[len(on_gw1) :], "gk")
        results["gk_sends_s"] = time.time() - killed
        results["unassigned_after"] = ((await unassigned_task) or float("nan")) - killed
        results["reaped_after"] = ((await reaped_task) or float("nan")) - killed
        results["gateway_kill_at"] = killed
        await asyncio.sleep(args.settle)

        # 2. NATS away for --outage seconds.
        down = time.time()
        assert cluster._nats is not None
        cluster._nats.send_signal(signal.SIGKILL)
        cluster._nats.wait()
        await asyncio.sleep(1)
        await sender.to_all(users, "no")
        results["outage_sends"] = time.time() - down
        await asyncio.sleep(max(0.0, args.outage - (time.time() - down)))
        cluster._nats, _ = start_nats_server(
            data_dir / "nats", host="127.0.0.1", port=nats_port, log_file=data_dir / "logs" / "nats.log"
        )
        results["nats_back_at"] = time.time()
        print(f"  NATS back; server pids {pids}", flush=True)
        await asyncio.sleep(args.settle)

        # 3. An API node killed under load.
        if not args.skip_api_kill:
            more = await api_kill_load(cluster, {**os.environ, **api_env}, sender_name, users, results)
            sender.acked.update(more.acked)
            await asyncio.sleep(3)

        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("stop\n")
            worker.stdin.flush()
        reports: list[dict[str, Any]] = []
        for worker in workers:
            assert worker.stdout is not None
            for line in worker.stdout:
                if line.startswith('{"report"'):
                    reports += json.loads(line)["report"]
                    break
        peak = {name: vm_hwm(pid) for name, pid in pids.items() if name != "gw-1"}
        assert cluster._nats is not None
        peak["nats"] = vm_hwm(cluster._nats.pid)
        if args.dump is not None:
            args.dump.write_bytes(orjson.dumps({"reports": reports, "acked": sender.acked, "results": results}))
        summarize(reports, sender.acked, results, peak, args)
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.kill()
        cluster.stop()
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def summarize(
    reports: list[dict[str, Any]],
    acked: dict[str, float],
    results: dict[str, Any],
    peak: dict[str, int],
    args: argparse.Namespace,
) -> None:
    by_uid = {report["uid"]: report for report in reports}
    lost = 0
    duplicated = 0
    for report in reports:
        stored = report["stored"]
        duplicated += len(stored) - len(set(stored))
    for text in acked:
        found = by_uid.get(int(text.rsplit("-", 1)[1]))
        if found is None or text not in found["seen"]:
            lost += 1
    killed = results["gateway_kill_at"]
    gw1_users = set(results["gw1_users"])
    reconnect: list[float] = []
    caught_up: list[float] = []  # reconnected, its catch-up done, and every message committed before that seen
    steps: dict[str, list[float]] = {"until the attempt": [], "handshake": [], "auth -> ready": []}
    tries: collections.Counter[int] = collections.Counter()  # attempts it took to come back: devices
    failed: collections.Counter[str] = collections.Counter()  # why attempts failed: how often
    missed: list[float] = []  # of the devices whose message was committed before they reconnected: seen
    live: list[float] = []  # messages committed after their device reconnected: seen since commit
    never = 0
    old_caught_up: list[float] = []
    for report in reports:
        if report["uid"] not in gw1_users:
            continue
        text = f"gk-{report['uid']}"
        seen, committed = report["seen"].get(text), acked.get(text)
        if seen is not None:
            old_caught_up.append(seen - killed)
        after = [at for at, _ in report["readies"] if at >= killed]
        if not after:
            never += 1
            continue
        back_at = after[0]
        reconnect.append(back_at - killed)
        # The way back, in steps: the wait before the successful attempt, its handshake, auth -> ready.
        attempt = max(at for at in report["attempts"] if at <= back_at)
        opened = max(at for at in report["opened"] if at <= back_at)
        steps["until the attempt"].append(attempt - killed)
        steps["handshake"].append(opened - attempt)
        steps["auth -> ready"].append(back_at - opened)
        tries[sum(1 for at in report["attempts"] if killed <= at <= back_at)] += 1
        failed.update(why for at, why in report["failures"] if killed <= at <= back_at)
        done = min((at for at in report["caught_up_at"] if at >= back_at), default=None)
        if committed is None or seen is None or done is None:
            continue  # counted as lost below, or its catch-up never ended
        if committed <= back_at:
            missed.append(max(back_at, seen) - killed)
            caught_up.append(max(done, seen) - killed)
        else:
            caught_up.append(done - killed)  # nothing was missing when it came back
            live.append(seen - committed)
    back = results["nats_back_at"]
    outage = [
        max(0.0, report["seen"][f"no-{report['uid']}"] - back)
        for report in reports
        if f"no-{report['uid']}" in report["seen"]
    ]
    resyncs = sum(report["resyncs"] for report in reports)
    # Where the time after NATS returned goes: until the device is told to resync, then its catch-up.
    hinted = [
        min(at for at in report["resynced_at"] if at >= back) - back
        for report in reports
        if any(at >= back for at in report["resynced_at"])
    ]
    fetched = [
        max(0.0, report["seen"][f"no-{report['uid']}"] - min(at for at in report["resynced_at"] if at >= back))
        for report in reports
        if f"no-{report['uid']}" in report["seen"] and any(at >= back for at in report["resynced_at"])
    ]
    print()
    print(f"clients {len(reports)}  processes {args.procs}  gateways {args.gateways}  API processes {args.apis}")
    print(
        f"gateway kill: gw-1 unassigned after {results['unassigned_after']:.2f}s, "
        f"its routes gone after {results['reaped_after']:.2f}s (moved by reconnects or reaped)"
    )
    print(f"  {len(reconnect)} of {len(gw1_users)} devices of gw-1 reconnected, since the kill: {stats(reconnect)}")
    print("  ... " + ", ".join(f"{name}: {stats(values)}" for name, values in steps.items()))
    print("  ... attempts it took: " + ", ".join(f"{n}: {count} devices" for n, count in sorted(tries.items())))
    for why, count in failed.most_common(5):
        print(f"  ... {count} x {why}")
    direct = sum(report.get("direct_reconnects", 0) for report in reports)
    print(f"  reconnects to the next gateway of the assignment, without asking GET /v1/gateway: {direct}")
    if never:
        print(f"  {never} devices of gw-1 never reconnected")
    print(
        "  caught up (reconnected, its catch-up done, and its message seen if committed before it reconnected), "
        f"since the kill: {stats(caught_up)}  [{len(caught_up)} devices]"
    )
    print(f"  ... those whose message was committed before they reconnected: {stats(missed)}  [{len(missed)}]")
    print(f"  messages committed after their device reconnected, seen since commit: {stats(live)}  [{len(live)}]")
    print(
        f"  ... sending gw-1's {len(gw1_users)} messages (first, HTTP, 64 at a time) took "
        f"{results['gk_gw1_sends_s']:.2f}s, all {len(reports)} {results['gk_sends_s']:.2f}s"
    )
    print(f"  (before: the message seen, since the kill, whenever it was sent: {stats(old_caught_up)})")
    print(f"nats outage {args.outage:.0f}s ({len(outage)} messages committed while it was down, {resyncs} resyncs):")
    print(f"  delivered after NATS returned: {stats(outage)}")
    print(f"  ... sending them (HTTP, 64 at a time) took {results['outage_sends']:.2f}s after NATS went down")
    late = [
        max(0.0, report["seen"][f"no-{report['uid']}"] - max(back, acked.get(f"no-{report['uid']}", back)))
        for report in reports
        if f"no-{report['uid']}" in report["seen"]
    ]
    print(f"  ... since NATS returned or the message was acked, whichever is later: {stats(late)}")
    print(f"  ... first resync frame after NATS returned: {stats(hinted)}")
    print(f"  ... seen after that resync frame: {stats(fetched)}")
    if "api_kill_longest_wait" in results:
        print(
            f"api kill: {results['api_kill_sends']} sends, longest wait {results['api_kill_longest_wait']:.2f}s, "
            f"websocket errors {len(results.get('ws_errors', []))}"
        )
    pushes = sum(report["duplicate_pushes"] for report in reports)
    errors = sum(report["catch_up_errors"] for report in reports)
    requests = sum(report["catch_up_requests"] for report in reports)
    print(f"catch-up ({args.catch_up}): {requests} requests, {errors} failed (retried)")
    print(f"acked {len(acked)}  lost {lost}  duplicated {duplicated}  (pushes of a message already fetched: {pushes})")
    print("peak memory (VmHWM): " + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in sorted(peak.items())))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        faulthandler.register(signal.SIGUSR1)  # kill -USR1 <worker> prints where it is
        url, index, count, peer, run, Device.mode = sys.argv[2:8]
        asyncio.run(client_worker(url, int(index), int(count), int(peer), run))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument(
        "--apis", type=int, default=1, help="API processes sharing the API port (as `im server up --apis N`)"
    )
    parser.add_argument("--outage", type=float, default=20.0, help="seconds NATS stays down")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds given to heal after each fault")
    parser.add_argument("--skip-api-kill", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (the nodes' logs) at the end")
    parser.add_argument("--dump", type=Path, help="write every device's report and the acks to this JSON file")
    parser.add_argument(
        "--catch-up",
        choices=("ws", "http", "history"),
        default="ws",
        help="ws: conversations since the cursor with their newest messages, asked with a sync frame on the "
        "connection, history only if those do not reach back far enough, as the SDK does; http: the same "
        "with GET /v1/conversations (the SDK with an older gateway); history: one history request (the "
        "device knows its only conversation)",
    )
    args = parser.parse_args()
    asyncio.run(coordinate(args))


if __name__ == "__main__":
    random.seed()
    main()
