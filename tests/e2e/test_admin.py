"""The admin role over a real cluster: bootstrapping the first admin, admin-only endpoints (403 for
anyone else), disabling accounts, bot accounts and their tokens, and the cluster's nodes and routes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from im_schema.admin import (
    ClusterNodesRequest,
    ClusterStatsRequest,
    CreateBotRequest,
    DisableUserRequest,
    DrainRequest,
    EnableUserRequest,
    KickDeviceRequest,
    ListBotsRequest,
    ListUsersRequest,
    MakeAdminRequest,
    RevokeBotRequest,
    ShowUserRequest,
    UserRoutesRequest,
)
from im_schema.rest import Request
from im_sdk import AsyncClient, AuthenticationError, ForbiddenError, NotFoundError
from im_server.services.admin import bootstrap_admin
from tests.e2e.conftest import wait_connected
from tests.support.cluster import FAST, PASSWORD, TestCluster


@pytest.fixture
def strict(make_cluster):
    """A cluster with the friendship rule on (the default of real deployments)."""
    return make_cluster(gateways=2, dm_requires_friendship=True)


async def _admin(cluster: TestCluster) -> AsyncClient:
    client = await cluster.user("admin")
    assert client.session is not None
    user, created = await bootstrap_admin(cluster.settings.db_url, client.session.user.username, None)
    assert user.is_admin and not created
    return client


def _name(client: AsyncClient) -> str:
    assert client.session is not None
    return client.session.user.username


def _admin_requests(target: str) -> list[Request]:  # type: ignore[type-arg]
    return [
        ListUsersRequest(),
        ShowUserRequest(user=target),
        DisableUserRequest(user=target),
        EnableUserRequest(user=target),
        MakeAdminRequest(user=target),
        CreateBotRequest(username="sneakybot"),
        ListBotsRequest(),
        RevokeBotRequest(bot=target),
        ClusterNodesRequest(),
        UserRoutesRequest(user=target),
        ClusterStatsRequest(),
        KickDeviceRequest(user=target),
        DrainRequest(node="gw-any"),
    ]


async def test_every_admin_endpoint_refuses_non_admins(strict, closing):
    alice = await strict.user("alice")
    bob = await strict.user("bob")
    closing += [alice, bob]
    for request in _admin_requests(_name(bob)):
        with pytest.raises(ForbiddenError) as caught:
            await alice.request(request)
        assert caught.value.code == "forbidden", request
    # Bob was neither disabled, made an admin nor kicked by any of that.
    assert (await bob.whoami()).user.username == _name(bob)
    async with httpx.AsyncClient(base_url=strict.url) as raw:
        answer = await raw.get("/v1/admin/users")
        assert answer.status_code == 401


async def test_create_admin_bootstraps_and_admins_make_admins(strict, closing):
    root = await _admin(strict)
    carol = await strict.user("carol")
    closing += [root, carol]
    with pytest.raises(ForbiddenError):
        await carol.request(ListUsersRequest())
    made = await root.request(MakeAdminRequest(user=_name(carol)))
    assert made.is_admin
    page = await carol.request(ListUsersRequest(limit=1))
    assert len(page.users) == 1 and page.next_after == page.users[0].id
    rest = await carol.request(ListUsersRequest(after=page.next_after, limit=500))
    names = {user.username for user in page.users + rest.users}
    assert {_name(root), _name(carol)} <= names
    shown = await carol.request(ShowUserRequest(user=carol.session.user.id))
    assert shown.is_admin and shown.disabled_at is None
    # A new account created by the bootstrap command can log in and is an admin.
    user, created = await bootstrap_admin(strict.settings.db_url, "rootnew", PASSWORD)
    assert created and user.is_admin
    fresh = AsyncClient(strict.url, backoff=FAST)
    closing.append(fresh)
    await fresh.login("rootnew", PASSWORD)
    await fresh.request(ListBotsRequest())


async def test_bootstrap_refuses_bad_input(strict):
    with pytest.raises(ValueError, match="no user"):
        await bootstrap_admin(strict.settings.db_url, "nobodyhere", None)
    with pytest.raises(ValueError, match="pattern"):
        await bootstrap_admin(strict.settings.db_url, "Bad Name!", PASSWORD)
    with pytest.raises(ValueError, match="at least 8"):
        await bootstrap_admin(strict.settings.db_url, "shortpw", "x")


async def test_disabled_user_is_logged_out_and_cannot_log_in(strict, closing, inboxes):
    root = await _admin(strict)
    bob = await strict.user("bob")
    closing += [root, bob]
    inboxes(bob)
    await wait_connected(strict, bob)
    disabled = await root.request(DisableUserRequest(user=_name(bob)))
    assert disabled.disabled_at is not None
    with pytest.raises(AuthenticationError):
        await bob.whoami()
    again = AsyncClient(strict.url, backoff=FAST)
    closing.append(again)
    with pytest.raises(ForbiddenError) as caught:
        await again.login(_name(bob), PASSWORD)
    assert caught.value.code == "account_disabled"
    # The connection went with the session: no route remains for bob.
    assert bob.session is not None
    await strict.until(lambda: not strict.api.node.mirror.routes.devices(bob.session.user.id))
    with pytest.raises(ForbiddenError):
        await root.request(DisableUserRequest(user=_name(root)))  # an admin cannot lock itself out
    await root.request(EnableUserRequest(user=_name(bob)))
    await again.login(_name(bob), PASSWORD)


async def test_bot_accounts(strict, closing):
    root = await _admin(strict)
    alice = await strict.user("alice")
    closing += [root, alice]
    created = await root.request(CreateBotRequest(username="weatherbot", display_name="Weather"))
    assert created.user.is_bot and created.token.startswith("imbot_")
    bot = AsyncClient(strict.url, backoff=FAST)
    closing.append(bot)
    session = await bot.login_bot(created.token)
    assert session.user.is_bot and session.device_id == "bot"
    # Visibly a bot in its public profile, and exempt from the friendship rule both ways.
    assert (await alice.get_user("weatherbot")).is_bot
    await alice.send_text("weatherbot", "paris?")
    await bot.send_text(_name(alice), "sunny")
    # No password opens a bot account.
    with pytest.raises(AuthenticationError):
        await AsyncClient(strict.url, backoff=FAST).login("weatherbot", PASSWORD)
    listed = await root.request(ListBotsRequest())
    assert [item.username for item in listed.bots] == ["weatherbot"]
    revoked = await root.request(RevokeBotRequest(bot="weatherbot"))
    assert revoked.devices == ["bot"]
    with pytest.raises(AuthenticationError):
        await bot.whoami()
    with pytest.raises(AuthenticationError):
        await AsyncClient(strict.url, backoff=FAST).login_bot(created.token)
    with pytest.raises(NotFoundError):
        await root.request(RevokeBotRequest(bot=_name(alice)))  # not a bot


async def test_hostile_admin_input(strict, closing):
    root = await _admin(strict)
    closing.append(root)
    assert root.session is not None
    headers = {"Authorization": f"Bearer {root.session.access_token}"}
    async with httpx.AsyncClient(base_url=strict.url, headers=headers) as raw:
        for path in ("/v1/admin/users?limit=0", "/v1/admin/users?limit=100000", "/v1/admin/users?after=-1"):
            answer = await raw.get(path)
            assert answer.status_code == 400, path
            assert answer.json()["error"]["code"] == "bad_request"
        answer = await raw.get("/v1/admin/users/" + "x" * 500)
        assert answer.status_code == 400
        answer = await raw.post("/v1/admin/bots", json={"username": "a b"})
        assert answer.status_code == 400
        answer = await raw.post("/v1/auth/bot", json={"token": "imbot_" + "A" * 40})
        assert answer.status_code == 401
        answer = await raw.post("/v1/auth/bot", json={"token": "x" * 10_000})
        assert answer.status_code == 400
        answer = await raw.post("/v1/admin/cluster/kick", json={"user": "nobodyhere"})
        assert answer.status_code == 404


async def _until_answer(client, request, predicate, timeout: float = 10):
    """The first answer to ``request`` that satisfies ``predicate`` (the last one when none did in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(answer := await client.request(request)) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return answer


async def test_cluster_nodes_routes_stats_and_kick(strict, closing, inboxes):
    root = await _admin(strict)
    bob = await strict.user("bob", device="phone")
    closing += [root, bob]
    inboxes(bob)
    node_id = await wait_connected(strict, bob)
    # On a loaded machine a heartbeat may come late and a node drop out of the list for a moment.
    nodes = await _until_answer(root, ClusterNodesRequest(), lambda n: len(n.nodes) == 3)
    roles = sorted(node.role for node in nodes.nodes)
    assert roles == ["api", "gateway", "gateway"]
    gateway = next(node for node in nodes.nodes if node.node_id == node_id)
    assert gateway.connections >= 0 and gateway.state == "serving" and gateway.version
    assert gateway.address.startswith("ws")
    routes = await root.request(UserRoutesRequest(user=_name(bob)))
    assert [(route.device_id, route.node_id, route.live) for route in routes.routes] == [("phone", node_id, True)]
    stats = await _until_answer(root, ClusterStatsRequest(), lambda s: s.api_nodes + s.gateway_nodes == 3)
    assert (stats.api_nodes, stats.gateway_nodes) == (1, 2)
    assert stats.users >= 2 and stats.routes >= 1 and stats.nats is None
    with pytest.raises(NotFoundError):
        await root.request(KickDeviceRequest(user=_name(bob), device="tablet"))
    kicked = await root.request(KickDeviceRequest(user=_name(bob), device="phone"))
    assert kicked.devices == ["phone"]
    with pytest.raises(AuthenticationError):
        await bob.whoami()
    assert bob.session is not None
    await strict.until(lambda: not strict.api.node.mirror.routes.devices(bob.session.user.id))


async def test_drain_under_light_load_loses_and_duplicates_nothing(make_cluster, closing, inboxes):
    cluster = make_cluster(gateways=2)
    root = await _admin(cluster)
    alice = await cluster.user("alice")
    receivers = [await cluster.user(f"r{index}") for index in range(4)]
    closing += [root, alice, *receivers]
    boxes = [inboxes(receiver) for receiver in receivers]
    held = [await wait_connected(cluster, receiver) for receiver in receivers]
    victim_id = max(set(held), key=held.count)
    victim = next(node for node in cluster.gateways if node.node_id == victim_id)
    with pytest.raises(ForbiddenError):
        await alice.request(DrainRequest(node=victim_id))
    per_receiver = 15

    async def traffic() -> None:
        for number in range(per_receiver):
            for receiver in receivers:
                await alice.send_text(_name(receiver), f"m{number}")
            await asyncio.sleep(0.01)

    sending = asyncio.create_task(traffic())
    first = [event.text for event in await boxes[0].take(2)]  # the traffic is flowing
    drained = await root.request(DrainRequest(node=victim_id))
    assert drained.state == "draining"
    await sending
    await cluster.until(victim.drained.is_set)
    assert not victim.connections
    for index, box in enumerate(boxes):
        texts = (first if index == 0 else []) + [
            event.text for event in await box.take(per_receiver - (2 if index == 0 else 0))
        ]
        assert texts == [f"m{number}" for number in range(per_receiver)]
        with pytest.raises(TimeoutError):
            await box.next(timeout=0.2)  # and nothing twice
    # Every receiver is back, on the other gateway; nobody is assigned to the drained one.
    for receiver in receivers:
        assert await wait_connected(cluster, receiver) != victim_id
    assert cluster.api.node.assign_gateway(1, "any").node_id != victim_id
    with pytest.raises(NotFoundError):
        await root.request(DrainRequest(node="gw-nosuchnode"))


async def test_stats_include_the_nats_monitoring_figures(make_cluster, closing, tmp_path):
    from im_server.cluster.natsbin import free_port, nats_server_binary, spawn, wait_for_port, write_config

    # A nats-server with its monitoring endpoint on (the stats read its /varz over HTTP).
    port, http_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    config = write_config(
        tmp_path / "nats.conf", host="127.0.0.1", port=port, store_dir=tmp_path / "js", http_port=http_port
    )
    process = spawn([nats_server_binary(), "-c", str(config)])
    try:
        wait_for_port("127.0.0.1", http_port, process=process)
        cluster = make_cluster(gateways=1, nats_monitor_url=f"http://127.0.0.1:{http_port}")
        root = await _admin(cluster)
        closing.append(root)
        stats = await root.request(ClusterStatsRequest())
        assert stats.nats is not None
        assert {"server_id", "version", "connections", "in_msgs"} <= set(stats.nats)
    finally:
        process.terminate()
        process.wait()
    # Unreachable: the cluster's own totals still come, with the reason in place of the figures.
    stats = await root.request(ClusterStatsRequest())
    assert stats.nats is not None and "error" in stats.nats and stats.gateway_nodes == 1


async def test_a_drained_gateway_process_exits_and_leaves_the_registry(make_cluster, closing):
    cluster = make_cluster(gateways=1)
    root = await _admin(cluster)
    closing.append(root)
    process, _ = cluster.spawn_gateway_process("gw-drainme")
    drained = await root.request(DrainRequest(node="gw-drainme"))
    assert drained.state == "draining"
    # Nobody is assigned to it any more, whatever the device.
    assert all(cluster.api.node.assign_gateway(7, f"d{index}").node_id != "gw-drainme" for index in range(20))
    await cluster.until(lambda: process.poll() is not None, timeout=20)
    assert process.returncode == 0
    await cluster.until(lambda: "gw-drainme" not in cluster.live_gateways())
