"""The bus is a trust boundary: who may connect to NATS, what each role may do there, and that the
sender of a message is the device the gateway authenticated, whatever else is on the bus.

These run against a private nats-server with the exact permissions ``im server up`` writes (one
prefix, one user per gateway), and a real cluster on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import websockets
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

from im_sdk import AsyncClient
from im_server.bus.codec import encode_delivery
from im_server.bus.permissions import inbox_prefix
from im_server.gateway.node import GatewayNode
from im_server.services.tokens import TokenCodec
from tests.support.cluster import LoopThread, TestCluster
from tests.support.inbox import Inbox
from tests.support.nats import PrivateNats

PREFIX = "sec"


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path_factory.mktemp("nats-exact"), prefix=PREFIX, gateways=["gw-1", "gw-2"]).start()
    yield server
    server.close()


@pytest.fixture
def exact_cluster(cluster_loop: LoopThread, private_nats: PrivateNats, sqlite_url: str) -> Iterator[TestCluster]:
    """An API node and gateways gw-1 and gw-2, each with its own NATS user, on the exact permissions."""
    cluster = TestCluster(cluster_loop, private_nats, sqlite_url).start(gateways=2)
    try:
        assert sorted(node.node_id for node in cluster.gateways) == ["gw-1", "gw-2"]
        yield cluster
    finally:
        cluster.stop()


class Probe:
    """A raw NATS connection as one user, recording the permission errors the server answers."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def connect(self, server: PrivateNats, user: str, role: str, node: str) -> Probe:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await server.connect(
            user,
            inbox_prefix=inbox_prefix(PREFIX, role, node),
            error_cb=on_error,
            allow_reconnect=False,  # type: ignore[arg-type]
        )
        return self

    async def refused(self, subject: str) -> None:
        """Wait until the server has answered a permission violation naming ``subject``."""
        assert self.nc is not None
        await self.nc.flush()
        async with asyncio.timeout(5):
            while not any("permissions violation" in error and subject.lower() in error for error in self.errors):
                await asyncio.sleep(0.01)


@pytest.fixture
async def probes(private_nats: PrivateNats) -> AsyncIterator[Any]:
    opened: list[Probe] = []

    async def make(user: str, role: str = "gateway", node: str | None = None) -> Probe:
        probe = await Probe().connect(private_nats, user, role, node or user)
        opened.append(probe)
        return probe

    yield make
    for probe in opened:
        if probe.nc is not None:
            await probe.nc.close()


async def _ignore(msg: Any) -> None:
    pass


async def _observer(server: PrivateNats, subject: str) -> tuple[NATS, list[bytes]]:
    seen: list[bytes] = []
    nc = await server.connect()

    async def record(msg: Any) -> None:
        seen.append(msg.data)

    await nc.subscribe(subject, cb=record)
    await nc.flush()
    return nc, seen


async def test_a_client_without_credentials_is_refused(private_nats: PrivateNats):
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(private_nats.url, allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error)
    with pytest.raises(NatsError, match="Authorization Violation"):  # the same with a wrong password
        await nats.connect(
            private_nats.url, user="observer", password="guess", allow_reconnect=False, max_reconnect_attempts=0
        )


async def test_a_gateway_cannot_publish_deliveries_or_read_another_gateways_subject(private_nats, probes):
    gw1 = await probes("gw-1")
    watcher, seen = await _observer(private_nats, f"{PREFIX}.gw.gw-2")
    await gw1.nc.publish(f"{PREFIX}.gw.gw-2", b'{"items": []}\n')
    await gw1.refused(f'publish to "{PREFIX}.gw.gw-2"')
    await gw1.nc.publish(f"{PREFIX}.gw.gw-1", b'{"items": []}\n')  # not even to itself
    await gw1.refused(f'publish to "{PREFIX}.gw.gw-1"')

    for subject in (f"{PREFIX}.gw.gw-2", f"{PREFIX}.gw.*", ">", f"{PREFIX}.svc.send", "_INBOX.>"):
        await gw1.nc.subscribe(subject, cb=_ignore)
        await gw1.refused(f'subscription to "{subject}"')
    await gw1.nc.subscribe(f"{PREFIX}.svc.send", queue="api", cb=_ignore)
    await gw1.refused(f'subscription to "{PREFIX}.svc.send"')
    await gw1.nc.subscribe(f"{PREFIX}.gw.gw-1", cb=_ignore)  # its own subject is fine
    await watcher.flush()
    assert seen == []
    await watcher.close()


async def test_a_gateway_or_admin_tool_cannot_ask_for_traces(private_nats, probes):
    # Trace answers list users and devices: only API nodes may ask (admins go through the API).
    gw1 = await probes("gw-1")
    watcher, seen = await _observer(private_nats, f"{PREFIX}.trace")
    await gw1.nc.publish(f"{PREFIX}.trace", b'{"c":"d:1:2","s":1}', reply=gw1.nc.new_inbox())
    await gw1.refused(f'publish to "{PREFIX}.trace"')
    admin = await probes("admin", "admin")
    await admin.nc.publish(f"{PREFIX}.trace", b'{"c":"d:1:2","s":1}')
    await admin.refused(f'publish to "{PREFIX}.trace"')
    await watcher.flush()
    assert seen == []
    await watcher.close()


async def test_a_gateway_cannot_touch_revocations_files_or_other_heartbeats(private_nats, probes, exact_cluster):
    gw1 = await probes("gw-1")
    for subject in (
        f"$KV.{PREFIX}_revoked.forged-session",
        f"$JS.API.STREAM.PURGE.KV_{PREFIX}_revoked",
        f"$JS.API.STREAM.DELETE.KV_{PREFIX}_revoked",
        f"$JS.API.STREAM.UPDATE.KV_{PREFIX}_revoked",
        f"$JS.API.STREAM.CREATE.KV_{PREFIX}_access",
        f"$KV.{PREFIX}_access.0_0_0_0",
        f"$KV.{PREFIX}_nodes.gw-2",
        f"$O.{PREFIX}_files.C.x",
        f"$JS.API.STREAM.INFO.OBJ_{PREFIX}_files",
        f"{PREFIX}.sessions.barrier",
        f"{PREFIX}.evt.social",
    ):
        await gw1.nc.publish(subject, b"{}")
        await gw1.refused(f'publish to "{subject}"')
    observer = await private_nats.connect()
    revoked = await observer.jetstream().key_value(f"{PREFIX}_revoked")
    with pytest.raises(KeyNotFoundError):
        await revoked.get("forged-session")
    await observer.close()

    # What it needs works: read the revocations, write its own heartbeat and routes.
    js = gw1.nc.jetstream(timeout=5)
    watcher = await (await js.key_value(f"{PREFIX}_revoked")).watchall()
    await watcher.stop()
    nodes = await js.key_value(f"{PREFIX}_nodes")
    await nodes.put("gw-1", b'{"role": "gateway"}')
    routes = await js.key_value(f"{PREFIX}_routes")
    await routes.put("999999.probe", b"gw-1")
    await routes.delete("999999.probe")


async def test_the_admin_role_manages_the_access_list_and_nothing_else(private_nats, probes, exact_cluster):
    admin = await probes("admin", role="admin", node="ops")
    js = admin.nc.jetstream(timeout=5)
    access = await js.create_key_value(bucket=f"{PREFIX}_access")
    await access.put("deny.203_0_113_0-24", b"{}")
    nodes = await js.key_value(f"{PREFIX}_nodes")
    assert "gw-1" in await nodes.keys()
    for subject in (f"{PREFIX}.gw.gw-1", f"{PREFIX}.svc.send", f"$KV.{PREFIX}_revoked.x", f"$KV.{PREFIX}_routes.1.d"):
        await admin.nc.publish(subject, b"{}")
        await admin.refused(f'publish to "{subject}"')
    # Gateways and API nodes may read the list, not write it.
    gw1 = await probes("gw-1")
    assert await (await gw1.nc.jetstream(timeout=5).key_value(f"{PREFIX}_access")).get("deny.203_0_113_0-24")
    api = await probes("api", role="api", node="probe")
    await api.nc.publish(f"$KV.{PREFIX}_access.x", b"{}")
    await api.refused(f'publish to "$kv.{PREFIX}_access.x"')
    observer = await private_nats.connect()
    await observer.jetstream().delete_key_value(f"{PREFIX}_access")
    await observer.close()


def _forged(token: str, user_id: int) -> str:
    """The token with another user id in its payload (and the original signature)."""
    *head, payload, signature = token.split(".")  # v2.<key id>.<payload>.<signature>
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["u"] = user_id
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return ".".join([*head, forged, signature])


async def test_gateway_credentials_alone_cannot_send_as_anybody(exact_cluster, probes, closing):
    alice, bob = await exact_cluster.user("alice"), await exact_cluster.user("bob")
    closing += [alice, bob]
    bob_id = bob.session.user.id
    gw1 = await probes("gw-1")

    async def forward(request: object) -> list[dict[str, Any]]:
        reply = await gw1.nc.request(f"{PREFIX}.svc.send", orjson.dumps(request), timeout=5)
        return [json.loads(line) for line in reply.data.split(b"\n")]

    def send(text: str) -> dict[str, object]:
        return {
            "type": "send",
            "to": bob_id,
            "client_msg_id": f"id-{text.replace(' ', '-')}-000000",
            "content": {"kind": "text", "text": text},
        }

    stranger = TokenCodec(b"not the cluster's key at all").issue(alice.session.user.id, "dev1", "s", now=0, ttl=10**10)
    answers = await forward(
        {
            "tokens": ["", _forged(bob.session.access_token, alice.session.user.id), stranger, None],
            "sends": [
                [0, send("no token")],
                [1, send("forged")],
                [2, send("foreign key")],
                [3, send("null")],
                [7, send("no such token")],
                [-1, send("negative")],
            ],
        }
    )
    assert [answer["code"] for answer in answers] == ["unauthorized"] * 6, answers
    assert [answer["client_msg_id"] for answer in answers][:2] == ["id-no-token-000000", "id-forged-000000"]
    # The format from before tokens (the sender in the payload) is refused as a whole.
    answers = await forward([[alice.session.user.id, "dev1", send("old format")]])
    assert answers[0]["code"] == "bad_request"
    # A genuine token sends as its own device (the gateway authenticated it).
    answers = await forward({"tokens": [alice.session.access_token], "sends": [[0, send("real")]]})
    assert answers[0]["type"] == "ack"

    page = await bob.history(answers[0]["message"]["conversation"], after=0)
    assert [(m.sender, m.content.text) for m in page.messages] == [(alice.session.user.id, "real")]

    # A logged-out session's token no longer sends.
    token = alice.session.access_token
    await alice.logout()
    answers = await forward({"tokens": [token], "sends": [[0, send("after logout")]]})
    assert answers[0]["code"] == "unauthorized"


async def test_the_api_answers_sends_only_to_a_gateway_inbox(exact_cluster, probes, private_nats, closing):
    alice, bob = await exact_cluster.user("alice"), await exact_cluster.user("bob")
    closing += [alice, bob]
    gw1 = await probes("gw-1")
    watcher, seen = await _observer(private_nats, f"{PREFIX}.gw.gw-2")
    request = {"tokens": [alice.session.access_token], "sends": [[0, {"type": "ping"}]]}
    # A reply subject pointing at another gateway would make the API publish there for us.
    await gw1.nc.publish(f"{PREFIX}.svc.send", orjson.dumps(request), reply=f"{PREFIX}.gw.gw-2")
    answered = await gw1.nc.request(f"{PREFIX}.svc.send", orjson.dumps(request), timeout=5)
    assert b"bad_request" in answered.data  # the second was answered, so the first was handled
    await watcher.flush()
    assert seen == []
    await watcher.close()


async def test_a_gateway_drops_what_jetstream_was_asked_to_deliver(exact_cluster, probes, closing, caplog):
    alice, bob = await exact_cluster.user("alice"), await exact_cluster.user("bob")
    closing += [alice, bob]
    bob_inbox = Inbox(bob)
    node = await _connected_node(exact_cluster, bob)
    frame = orjson.dumps({"type": "message", "message": {"text": "forged"}})
    envelope = encode_delivery([(frame, [(bob.session.user.id, bob.session.device_id)])])
    gw = await probes("gw-1" if node == "gw-2" else "gw-2")
    js = gw.nc.jetstream(timeout=5)
    # A gateway writes routes, so it controls their values; JetStream delivers a stream wherever the
    # consumer's creator says.
    await (await js.key_value(f"{PREFIX}_routes")).put("999999.forged", envelope)
    await js._jsm.add_consumer(
        f"KV_{PREFIX}_routes",
        ConsumerConfig(
            deliver_subject=f"{PREFIX}.gw.{node}",
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            filter_subject=f"$KV.{PREFIX}_routes.999999.forged",
        ),
    )
    await exact_cluster.until(lambda: "dropped a delivery that no API node sent" in caplog.text)
    await alice.send_text(bob.session.user.id, "real")
    assert (await bob_inbox.next()).text == "real"  # nothing before it


async def _connected_node(cluster: TestCluster, client: AsyncClient) -> str:
    from tests.e2e.conftest import wait_connected

    return await wait_connected(cluster, client)


async def test_a_cluster_on_the_exact_permissions_works(exact_cluster, closing, tmp_path: Path):
    """Sends across gateways, typing, files and logging out, with every node on its own role."""
    alice, bob = await exact_cluster.user("alice"), await exact_cluster.user("bob")
    closing += [alice, bob]
    bob_inbox = Inbox(bob)
    await _connected_node(exact_cluster, bob)
    await alice.send_text(bob.session.user.id, "hello")
    assert (await bob_inbox.next()).text == "hello"
    document = tmp_path / "note.txt"
    document.write_bytes(b"plain text file")
    sent = await alice.send_file(bob.session.user.id, document)
    assert (await bob_inbox.next()).seq == sent.seq
    assert (await bob.download(sent, tmp_path / "back.txt")).read_bytes() == b"plain text file"
    token = bob.session.access_token
    await bob_inbox.close()
    await bob.logout()  # the API writes the revocation, every gateway refuses the token at once
    for gateway in exact_cluster.gateways:
        async with websockets.connect(gateway.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await ws.recv())["code"] == "unauthorized"


def test_a_gateway_that_starts_first_waits_for_the_api_to_create_the_buckets(
    cluster_loop: LoopThread, tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="im_server.bus.nats")
    server = PrivateNats(tmp_path / "nats", prefix="fresh", gateways=["gw-1"]).start()
    cluster = TestCluster(cluster_loop, server, sqlite_url)
    try:
        gateway = GatewayNode(cluster.gateway_settings("gw-1"))
        starting = asyncio.run_coroutine_threadsafe(gateway.start(), cluster_loop.loop)
        cluster_loop.run(cluster._until(lambda: "waiting for an API node to create the bucket" in caplog.text))
        cluster.start(gateways=0)  # the API node creates the buckets the gateway may not
        starting.result(30)
        cluster.gateways.append(gateway)
        cluster_loop.run(cluster._until(lambda: "gw-1" in cluster.live_gateways()))
    finally:
        cluster.stop()
        server.close()


async def test_the_api_removes_the_routes_of_a_dead_gateway_on_the_exact_permissions(exact_cluster, closing):
    """The API role may delete routes (those of a gateway found dead), as the reaper needs."""
    alice = await exact_cluster.user("alice")
    closing.append(alice)
    inbox = Inbox(alice)
    node = await _connected_node(exact_cluster, alice)
    api = exact_cluster.api.node
    gateway = next(g for g in exact_cluster.gateways if g.node_id == node)
    # A crash, as far as NATS can tell: the connection is gone, no goodbye, the route stays behind.
    await exact_cluster.loop.call(gateway._heartbeat.stop())
    await exact_cluster.loop.call(gateway.bus.nc.close())
    await exact_cluster.until(lambda: api.reaper.reaped >= 1, timeout=20)
    await exact_cluster.until(lambda: not api.mirror.routes.on_node(node))
    await inbox.close()
    exact_cluster.gateways.remove(gateway)
    with contextlib.suppress(Exception):
        await exact_cluster.loop.call(gateway.stop())


async def test_only_a_gateway_may_ask_for_syncs_and_only_for_its_tokens_devices(
    exact_cluster, probes, private_nats, closing
):
    alice, bob = await exact_cluster.user("alice"), await exact_cluster.user("bob")
    closing += [alice, bob]
    await bob.send_text(alice.session.user.id, "hello")
    sync = {"t": 0, "id": "s", "q": {"since": None, "limit": 10, "recent": 5}}
    # Other roles cannot publish on the sync subject at all, nor subscribe to it.
    for role, node in (("admin", "ops"), ("api", "probe")):
        other = await probes(role, role=role, node=node)
        await other.nc.publish(f"{PREFIX}.svc.sync", orjson.dumps({"tokens": [alice.session.access_token]}))
        await other.refused(f'publish to "{PREFIX}.svc.sync"')
    gw1 = await probes("gw-1")
    await gw1.nc.subscribe(f"{PREFIX}.svc.sync", queue="api", cb=_ignore)
    await gw1.refused(f'subscription to "{PREFIX}.svc.sync"')

    async def ask(request: object) -> list[dict[str, Any]]:
        reply = await gw1.nc.request(f"{PREFIX}.svc.sync", orjson.dumps(request), timeout=5)
        return [json.loads(line) for line in reply.data.split(b"\n")]

    stranger = TokenCodec(b"not the cluster's key at all").issue(alice.session.user.id, "dev1", "s", now=0, ttl=10**10)
    forged = _forged(bob.session.access_token, alice.session.user.id)
    answers = await ask(
        {
            "tokens": ["", forged, stranger],
            "syncs": [{**sync, "t": t, "id": f"s{t}"} for t in (0, 1, 2, 3)],
            "max_bytes": 65536,
        }
    )
    assert [(answer["type"], answer["code"], answer["id"]) for answer in answers] == [
        ("error", "unauthorized", f"s{t}") for t in (0, 1, 2, 3)
    ]
    # Malformed requests are refused as a whole; a user id in the request means nothing.
    for bad in (
        {"tokens": [alice.session.access_token], "syncs": [{**sync, "t": 64}], "max_bytes": 65536},
        {"tokens": [alice.session.access_token], "syncs": [], "max_bytes": 65536},
        {"tokens": [alice.session.access_token], "syncs": [{**sync, "q": {"limit": 5000}}], "max_bytes": 65536},
        {"tokens": [alice.session.access_token], "syncs": [sync], "max_bytes": 10**9},
        {"tokens": [alice.session.access_token], "syncs": [sync] * 65, "max_bytes": 65536},
        [[alice.session.user.id, sync]],
    ):
        answers = await ask(bad)
        assert len(answers) == 1 and answers[0]["code"] == "bad_request", bad
    # A genuine token syncs its own device's conversations, whatever else the request says.
    answers = await ask(
        {"tokens": [bob.session.access_token], "syncs": [{**sync, "user": alice.session.user.id}], "max_bytes": 65536}
    )
    assert answers[0]["type"] == "sync" and answers[0]["page"]["conversations"][0]["peer"] == alice.session.user.id
    # The answer goes only to a gateway inbox, never to a subject the request names.
    watcher, seen = await _observer(private_nats, f"{PREFIX}.gw.gw-2")
    request = {"tokens": [alice.session.access_token], "syncs": [sync], "max_bytes": 65536}
    await gw1.nc.publish(f"{PREFIX}.svc.sync", orjson.dumps(request), reply=f"{PREFIX}.gw.gw-2")
    assert (await ask(request))[0]["type"] == "sync"
    await watcher.flush()
    assert seen == []
    await watcher.close()
    # A logged-out session's token no longer syncs.
    token = alice.session.access_token
    await alice.logout()
    answers = await ask({"tokens": [token], "syncs": [sync], "max_bytes": 65536})
    assert answers[0]["code"] == "unauthorized"


async def test_sync_answers_stay_within_their_bounds(exact_cluster, probes, closing):
    # A page over max_bytes lists fewer conversations, then none of their recent messages; answers that do
    # not fit in one NATS message together are marked for the gateway to ask again.
    alice, bob, carol = [await exact_cluster.user(name) for name in ("alice", "bob", "carol")]
    closing += [alice, bob, carol]
    me = alice.session.user.id
    text = "x" * 3990
    for sender in (bob, carol):
        for i in range(50):
            await sender.send_text(me, f"{i} {text}")
    gw1 = await probes("gw-1")

    async def ask(max_bytes: int, count: int, limit: int = 10) -> list[bytes]:
        query = {"t": 0, "id": "s", "q": {"limit": limit, "recent": 50}}
        request = {"tokens": [alice.session.access_token], "syncs": [query] * count, "max_bytes": max_bytes}
        reply = await gw1.nc.request(f"{PREFIX}.svc.sync", orjson.dumps(request), timeout=10)
        return reply.data.split(b"\n")

    [whole] = await ask(4 * 1024 * 1024, 1)
    assert len(whole) > 400_000 and not orjson.loads(whole)["page"]["has_more"]
    [fewer] = await ask(300_000, 1)
    page = orjson.loads(fewer)["page"]
    assert len(fewer) <= 300_000 and len(page["conversations"]) == 1 and page["has_more"]
    assert len(page["conversations"][0]["recent"]) == 50
    [bare] = await ask(64 * 1024, 1)
    page = orjson.loads(bare)["page"]
    assert len(bare) <= 64 * 1024 and len(page["conversations"]) == 1 and page["has_more"]
    assert page["conversations"][0]["recent"] == [] and page["conversations"][0]["recent_after"] is None
    # Answers of about 420 KB each: as many as one NATS message holds, the rest to be asked again.
    fit = gw1.nc.max_payload // (len(whole) + 1)
    answers = await ask(500_000, fit + 2)
    pages = [answer for answer in answers if answer != b"again"]
    assert fit - 1 <= len(pages) <= fit and answers[len(pages) :] == [b"again"] * (len(answers) - len(pages))
    assert all(page.startswith(b'{"type":"sync"') for page in pages)
