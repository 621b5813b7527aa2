"""Metrics that move when traffic flows, request ids, and JSON logs with node, request and connection ids."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets

from im_schema.rest import GatewayRequest
from im_server import logs
from im_server.api.observe import valid_request_id
from im_server.cluster.metrics import Registry
from im_server.runner import main
from tests.e2e.conftest import wait_connected
from tests.support.metrics import METRICS_TOKEN, gateway_base, scrape, scrape_until


@pytest.fixture
def json_records() -> Iterator[io.StringIO]:
    """Records of the ``im_server`` loggers, DEBUG and up, as JSON lines (the handler ``IM_LOG_FORMAT=json`` sets)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("im_server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


async def test_metrics_move_when_traffic_flows(make_cluster, inboxes, closing):
    cluster = make_cluster(gateways=1, metrics_token=METRICS_TOKEN)
    api, gateway = cluster.url, gateway_base(cluster)
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    bob_in = inboxes(bob)
    await wait_connected(cluster, bob)
    api_before, gw_before = await scrape(api), await scrape(gateway)

    assignment = await alice.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        for i in range(3):
            frame = {"type": "send", "to": bob.session.user.id, "client_msg_id": uuid.uuid4().hex}
            await ws.send(json.dumps({**frame, "content": {"kind": "text", "text": f"m{i}"}}))
        assert [json.loads(await ws.recv())["type"] for _ in range(3)] == ["ack"] * 3
        assert [event.text for event in await bob_in.take(3)] == ["m0", "m1", "m2"]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{api}/v1/no-such-thing")).status_code == 404

        def grew(name: str, by: float, **labels: str):
            return lambda now: now.value(name, **labels) - api_before.value(name, **labels) >= by

        checks = [
            grew("im_messages_committed_total", 3),
            grew("im_send_seconds_count", 1),
            grew("im_commit_batch_size_count", 1),
            grew("im_delivery_recipients_count", 3),
            grew("im_deliveries_total", 3),
            grew("im_forwarded_send_batch_size_count", 1),
            grew("im_errors_total", 1, code="not_found"),
            grew("im_http_requests_total", 1, status="4xx"),
            grew("im_http_request_seconds_count", 1),
        ]
        now = await scrape_until(api, lambda now: all(check(now) for check in checks))
        assert now.value("im_routes") >= 2 and now.value("im_live_gateways") == 1
        assert now.value("im_nats_connected") == 1 and now.value("im_nats_reconnects_total") == 0
        assert ("im_storage_errors_total", frozenset({("kind", "busy")})) in now.samples

        gw = await scrape_until(
            gateway,
            lambda now: (
                now.value("im_gateway_frames_received_total") - gw_before.value("im_gateway_frames_received_total") >= 4
            ),
        )
        assert gw.value("im_gateway_connections") == 2
        assert (
            gw.value("im_gateway_connections_opened_total") - gw_before.value("im_gateway_connections_opened_total")
            == 1
        )
        assert gw.value("im_gateway_frames_delivered_total") - gw_before.value("im_gateway_frames_delivered_total") >= 3
        # ready, three acks, three pushes to bob
        assert gw.value("im_gateway_frames_sent_total") - gw_before.value("im_gateway_frames_sent_total") >= 7
        assert gw.value("im_gateway_forward_seconds_count") >= 1 and gw.value("im_gateway_forward_attempts_count") >= 1


def test_each_node_keeps_its_own_registry():
    first, second = Registry(), Registry()
    first.counter("im_example_total", "x").inc()
    second.counter("im_example_total", "x")  # the same name in another node's registry: no collision
    assert "im_example_total 1.0" in first.render() and "im_example_total 0.0" in second.render()
    with pytest.raises(ValueError, match="_total"):
        first.counter("im_badly_named", "a counter without _total")


async def test_api_and_gateway_healthz_answer_in_one_shape(make_cluster):
    # A load balancer or script reads either node's /healthz the same way: status "ok" with 200, else
    # "degraded" with 503 and the failing checks listed.
    cluster = make_cluster(gateways=1)
    gateway = cluster.gateways[0]
    async with httpx.AsyncClient() as http:
        await cluster.until(lambda: gateway._heartbeat is not None and gateway._heartbeat.last_ok is not None)
        for base in (cluster.url, gateway_base(cluster)):
            answer = await http.get(f"{base}/healthz")
            body = answer.json()
            assert answer.status_code == 200 and body["status"] == "ok", (base, body)
            assert {"status", "node_id", "checks", "degraded"} <= body.keys() and body["degraded"] == []
            assert all(body["checks"].values())
        await cluster.loop.call(gateway.drain(deadline=0))
        answer = await http.get(f"{gateway_base(cluster)}/healthz")
    body = answer.json()
    assert answer.status_code == 503 and body["status"] == "degraded" and body["degraded"] == ["accepting"]


async def test_request_ids_are_echoed_or_made(make_cluster, json_records):
    cluster = make_cluster(gateways=0)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        given = await http.get("/healthz", headers={"X-Request-ID": "req-42.a:b_c"})
        assert given.headers["x-request-id"] == "req-42.a:b_c"
        made = await http.get("/healthz")
        assert len(made.headers["x-request-id"]) == 16
        for hostile in ("x" * 129, "a b", "é", "", "<script>", '{"json":1}'):
            answer = await http.get("/healthz", headers={"X-Request-ID": hostile.encode()})
            assert answer.headers["x-request-id"] != hostile and valid_request_id(answer.headers["x-request-id"])
    records = [r for r in _records(json_records) if r.get("logger") == "im_server.api.observe"]
    assert any(r.get("request_id") == "req-42.a:b_c" and r["node_id"] == cluster.api.node.node_id for r in records)
    assert all({"time", "level", "message", "node_id", "request_id"} <= r.keys() for r in records)


async def test_gateway_records_carry_the_connection_id(make_cluster, json_records, closing):
    cluster = make_cluster(gateways=1)
    alice = await cluster.user("alice")
    closing.append(alice)
    assignment = await alice.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
    node = cluster.gateways[0]
    await cluster.until(lambda: not node.connections)
    opened = [
        r for r in _records(json_records) if "opened" in str(r["message"]) and r["logger"] == "im_server.gateway.node"
    ]
    assert opened and opened[-1]["node_id"] == node.node_id
    assert uuid.UUID(str(opened[-1]["connection_id"]))
    assert "request_id" not in opened[-1]


def test_text_stays_the_default_and_json_is_one_object_per_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("text"))
    handler.addFilter(logs.ContextFilter())
    record = logging.LogRecord("im_server.x", logging.WARNING, __file__, 1, "plain %s", ("text",), None)
    handler.handle(record)
    assert stream.getvalue().rstrip().endswith("WARNING im_server.x: plain text")
    handler.setFormatter(logs.formatter("json"))
    token = logs.connection_id.set("c-1")
    try:
        handler.handle(logging.LogRecord("im_server.x", logging.ERROR, __file__, 1, 'a "quoted"\nline', (), None))
    finally:
        logs.connection_id.reset(token)
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last["message"] == 'a "quoted"\nline' and last["level"] == "ERROR" and last["connection_id"] == "c-1"


def test_an_unknown_log_format_is_a_configuration_error(monkeypatch, capsys):
    monkeypatch.setenv("IM_LOG_FORMAT", "xml")
    assert main(["api"]) == 2
    assert "IM_LOG_FORMAT" in capsys.readouterr().err


def test_configure_installs_one_json_handler_with_the_ids():
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    saved_handlers, saved_level, saved_alembic = list(root.handlers), root.level, alembic.level
    stream = io.StringIO()
    try:
        logs.configure("DEBUG", "json", stream)
        logs.configure("DEBUG", "json", stream)  # again: still one handler, no duplicate lines
        node, request = logs.node_id.set("api-7"), logs.request_id.set("r-1")
        try:
            logging.getLogger("uvicorn.error").warning("through the root handler")
        finally:
            logs.node_id.reset(node)
            logs.request_id.reset(request)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        alembic.setLevel(saved_alembic)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["logger"], record["node_id"], record["request_id"]) == ("uvicorn.error", "api-7", "r-1")
    assert "connection_id" not in record
