"""im_server.bus.routes (tables, delivery planning, rendezvous hashing) and im_server.bus.codec."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from im_server.bus.codec import decode_delivery, encode_delivery
from im_server.bus.routes import NodeInfo, NodeTable, RouteTable, plan_delivery, rendezvous


class Clock:
    def __init__(self, now=500.0):
        self.now = now

    def __call__(self):
        return self.now


def node(node_id, role="gateway"):
    return NodeInfo(node_id=node_id, role=role, url=f"ws://{node_id}", connections=0, started_at=0.0)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def nodes(clock):
    table = NodeTable(ttl=10.0, clock=clock)
    for node_id in ("gw-a", "gw-b", "gw-c"):
        table.heartbeat(node(node_id))
    return table


# RouteTable ---------------------------------------------------------------------------------------


def test_route_table_set_and_remove():
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(1, "phone", "gw-b")
    routes.set(2, "laptop", "gw-a")
    assert routes.devices(1) == {"laptop": "gw-a", "phone": "gw-b"}
    assert len(routes) == 3
    routes.set(1, "laptop", "gw-c")  # reconnected elsewhere
    assert routes.devices(1) == {"laptop": "gw-c", "phone": "gw-b"}
    assert len(routes) == 3
    routes.remove(1, "laptop")
    routes.remove(1, "phone")
    assert routes.devices(1) == {}
    assert len(routes) == 1


def test_route_table_remove_unknown_is_a_no_op():
    routes = RouteTable()
    routes.remove(9, "nothing")
    routes.set(1, "laptop", "gw-a")
    routes.remove(1, "phone")
    assert routes.devices(1) == {"laptop": "gw-a"}


def test_route_table_devices_of_unknown_user_is_empty():
    routes = RouteTable()
    assert routes.devices(404) == {}
    routes.devices(404)
    assert len(routes) == 0


# NodeTable ----------------------------------------------------------------------------------------


def test_node_is_live_until_its_heartbeat_is_ttl_old(clock):
    table = NodeTable(ttl=10.0, clock=clock)
    table.heartbeat(node("gw-a"))
    clock.now += 9.99
    assert table.is_live("gw-a")
    clock.now += 0.01
    assert not table.is_live("gw-a")
    table.heartbeat(node("gw-a"))
    assert table.is_live("gw-a")


def test_unknown_and_removed_nodes_are_not_live(nodes):
    assert not nodes.is_live("gw-zzz")
    nodes.remove("gw-b")
    nodes.remove("gw-b")
    assert not nodes.is_live("gw-b")
    assert [info.node_id for info in nodes.live()] == ["gw-a", "gw-c"]


def test_live_filters_by_role_and_sorts(clock):
    table = NodeTable(ttl=10.0, clock=clock)
    for node_id, role in (("gw-b", "gateway"), ("api-1", "api"), ("gw-a", "gateway")):
        table.heartbeat(node(node_id, role))
    assert [info.node_id for info in table.live()] == ["api-1", "gw-a", "gw-b"]
    assert [info.node_id for info in table.live("gateway")] == ["gw-a", "gw-b"]
    assert [info.node_id for info in table.live("api")] == ["api-1"]


def test_live_leaves_out_stale_nodes_and_all_reports_age(clock):
    table = NodeTable(ttl=10.0, clock=clock)
    table.heartbeat(node("gw-old"))
    clock.now += 8
    table.heartbeat(node("gw-new"))
    clock.now += 4
    assert [info.node_id for info in table.live()] == ["gw-new"]
    assert [(info.node_id, age) for info, age in table.all()] == [("gw-new", 4.0), ("gw-old", 12.0)]


# plan_delivery ------------------------------------------------------------------------------------


def test_plan_groups_devices_by_node(nodes):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(2, "laptop", "gw-a")
    routes.set(2, "phone", "gw-b")
    plan = plan_delivery([(b"f1", [1, 2], None)], routes, nodes)
    assert plan == {
        "gw-a": [(b"f1", [(1, "laptop"), (2, "laptop")])],
        "gw-b": [(b"f1", [(2, "phone")])],
    }


def test_plan_skips_the_senders_own_device_only(nodes):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(1, "phone", "gw-a")
    routes.set(2, "laptop", "gw-b")
    plan = plan_delivery([(b"f", [1, 2], (1, "laptop"))], routes, nodes)
    assert plan == {"gw-a": [(b"f", [(1, "phone")])], "gw-b": [(b"f", [(2, "laptop")])]}


def test_plan_skip_names_user_and_device(nodes):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(2, "laptop", "gw-a")
    plan = plan_delivery([(b"f", [1, 2], (1, "laptop"))], routes, nodes)
    assert plan == {"gw-a": [(b"f", [(2, "laptop")])]}  # user 2's laptop is not the sender's


def test_plan_skips_devices_on_dead_nodes(nodes, clock):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(2, "laptop", "gw-dead")  # never heartbeated
    routes.set(3, "laptop", "gw-c")
    clock.now += 5
    nodes.heartbeat(node("gw-a"))
    clock.now += 6  # gw-c's heartbeat is now 11 s old
    plan = plan_delivery([(b"f", [1, 2, 3], None)], routes, nodes)
    assert plan == {"gw-a": [(b"f", [(1, "laptop")])]}


def test_plan_one_entry_per_node_per_frame(nodes):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    routes.set(2, "laptop", "gw-a")
    routes.set(3, "laptop", "gw-b")
    frames = [(b"f1", [1, 2], None), (b"f2", [2, 3], None), (b"f3", [3], None)]
    plan = plan_delivery(frames, routes, nodes)
    assert plan == {
        "gw-a": [(b"f1", [(1, "laptop"), (2, "laptop")]), (b"f2", [(2, "laptop")])],
        "gw-b": [(b"f2", [(3, "laptop")]), (b"f3", [(3, "laptop")])],
    }


def test_plan_with_nobody_online_is_empty(nodes):
    routes = RouteTable()
    assert plan_delivery([(b"f", [1, 2], None)], routes, nodes) == {}
    routes.set(1, "laptop", "gw-a")
    assert plan_delivery([(b"f", [1], (1, "laptop"))], routes, nodes) == {}
    assert plan_delivery([], routes, nodes) == {}


def test_plan_accepts_generators(nodes):
    routes = RouteTable()
    routes.set(1, "laptop", "gw-a")
    plan = plan_delivery(((frame, iter([1]), None) for frame in (b"x", b"y")), routes, nodes)
    assert plan == {"gw-a": [(b"x", [(1, "laptop")]), (b"y", [(1, "laptop")])]}


# rendezvous ---------------------------------------------------------------------------------------

CANDIDATES = [f"gw-{i}" for i in range(8)]
KEYS = [f"user:{i}" for i in range(4000)]


def test_rendezvous_is_deterministic_and_order_independent():
    for key in KEYS[:200]:
        choice = rendezvous(key, CANDIDATES)
        assert choice in CANDIDATES
        assert rendezvous(key, list(reversed(CANDIDATES))) == choice
        assert rendezvous(key, iter(CANDIDATES)) == choice


def test_rendezvous_without_candidates():
    assert rendezvous("k", []) is None
    assert rendezvous("k", ["only"]) == "only"


def test_removing_a_candidate_moves_only_its_keys():
    before = {key: rendezvous(key, CANDIDATES) for key in KEYS}
    removed = "gw-3"
    remaining = [c for c in CANDIDATES if c != removed]
    after = {key: rendezvous(key, remaining) for key in KEYS}
    for key in KEYS:
        if before[key] != removed:
            assert after[key] == before[key], key
        else:
            assert after[key] != removed
    # The orphaned keys spread over the others instead of piling onto one.
    orphans = Counter(after[key] for key in KEYS if before[key] == removed)
    assert len(orphans) == len(remaining)


def test_adding_a_candidate_moves_keys_only_onto_it():
    before = {key: rendezvous(key, CANDIDATES) for key in KEYS}
    after = {key: rendezvous(key, [*CANDIDATES, "gw-new"]) for key in KEYS}
    moved = [key for key in KEYS if after[key] != before[key]]
    assert moved
    assert all(after[key] == "gw-new" for key in moved)
    assert len(moved) == pytest.approx(len(KEYS) / 9, rel=0.25)


def test_rendezvous_spreads_keys_evenly():
    counts = Counter(rendezvous(key, CANDIDATES) for key in KEYS)
    expected = len(KEYS) / len(CANDIDATES)
    assert set(counts) == set(CANDIDATES)
    for candidate in CANDIDATES:
        assert counts[candidate] == pytest.approx(expected, rel=0.2), counts


# codec --------------------------------------------------------------------------------------------


def test_codec_roundtrip():
    items = [
        (b'{"type":"message"}', [(1, "laptop"), (2, "phone")]),
        (b"", [(3, "x")]),
        (b"second\nframe with a newline", [(9, "bot-1")]),
    ]
    assert decode_delivery(encode_delivery(items)) == items


def test_codec_roundtrip_with_multibyte_utf8():
    frames = [
        '{"text":"héllo wörld ✓ 漢字 😀"}'.encode(),
        "😀".encode() * 100,
        "\u2028\u2029".encode(),
    ]
    items = [(frame, [(7, "téléphone"), (8, "📱")]) for frame in frames]
    decoded = decode_delivery(encode_delivery(items))
    assert decoded == items
    assert [frame.decode() for frame, _ in decoded] == [frame.decode() for frame in frames]


def test_codec_header_counts_bytes_not_characters():
    payload = encode_delivery([("é".encode(), [(1, "d")])])
    header, _, rest = payload.partition(b"\n")
    assert json.loads(header) == {"items": [{"to": [[1, "d"]], "n": 2}]}
    assert rest == "é".encode()


def test_codec_empty_delivery():
    assert decode_delivery(encode_delivery([])) == []


def test_codec_device_with_a_newline_does_not_break_the_header():
    items = [(b"f", [(1, "weird\ndevice")])]
    assert decode_delivery(encode_delivery(items)) == items


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"no header at all",
        b"\n",
        b"{not json}\nabc",
        b"[1, 2]\n",
        b"null\n",
        b"1\n",
        b'"items"\n',
        b"{}\n",
        b'{"items": 5}\n',
        b'{"items": [{"to": [[1, "d"]]}]}\nabc',
        b'{"items": [{"n": 3}]}\nabc',
        b'{"items": [{"to": [[1, "d"]], "n": 5}]}\nabc',
        b'{"items": [{"to": [[1, "d"]], "n": -1}]}\nabc',
        b'{"items": [{"to": [[1, "d"]], "n": "x"}]}\nabc',
        b'{"items": [{"to": [[1]], "n": 1}]}\na',
        b'{"items": [{"to": [["x", "d"]], "n": 1}]}\na',
        b'{"items": [{"to": 7, "n": 1}]}\na',
        b'{"items": [{"to": [null], "n": 1}]}\na',
        b'{"items": ["oops"]}\n',
        b"\xff\xfe\n",
        b'{"items": [{"to": [[1, "d"]], "n": 3}, {"to": [[2, "e"]], "n": 3}]}\nabcde',
    ],
)
def test_codec_rejects_malformed_payloads_with_value_error(payload):
    with pytest.raises(ValueError):  # noqa: PT011 -- the contract is "ValueError", whatever the message
        decode_delivery(payload)
