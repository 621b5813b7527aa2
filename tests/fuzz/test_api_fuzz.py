"""schemathesis against the OpenAPI document of a running cluster (on PostgreSQL when reachable, else SQLite).

Every phase runs (examples, coverage, fuzzing and the stateful phase, which chains operations through
the links it infers), authenticated by registering and logging in (``tests/fuzz/hooks.py``). The checks:
no 5xx, every response matches its documented schema, status and content type, and invalid input is
refused. Before the run a few real resources are made (a friend, a direct conversation, a group, pending
requests, a file) and the document fetched from the API is given them as parameter examples, so that
most operations reach a 2xx rather than a 404.

CI runs a bounded number of examples per operation, without the coverage phase (its boundary values are
many, and slow); the long run, every phase, is one command::

    IM_FUZZ_EXAMPLES=100 IM_FUZZ_PHASES=examples,coverage,fuzzing,stateful IM_FUZZ_SEED=random \
        .venv/bin/pytest tests/fuzz -s

``-s`` prints the figures (requests, operations that reached a 2xx). CI uses a fixed seed;
``IM_FUZZ_SEED=random`` draws a new one (printed at the end of the run) and ``IM_FUZZ_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from im_schema.groups import (
    AddAdminRequest,
    CreateGroupRequest,
    InviteRequest,
    JoinGroupRequest,
    ListGroupInvitationsRequest,
    ListJoinRequestsRequest,
    ListMyInvitationsRequest,
)
from im_schema.social import BlockRequest, SendFriendRequest, UpdatePrivacyRequest
from im_sdk import AsyncClient
from tests.support.cluster import PASSWORD, TestCluster

EXAMPLES = int(os.environ.get("IM_FUZZ_EXAMPLES", "4"))
PHASES = os.environ.get("IM_FUZZ_PHASES", "examples,fuzzing,stateful")
SEED = os.environ.get("IM_FUZZ_SEED", "20261201")
"""A fixed seed keeps CI's run the same from one commit to the next; ``IM_FUZZ_SEED=random`` draws one."""
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)
ROOT = Path(__file__).resolve().parents[2]


async def _seed(cluster: TestCluster) -> dict[str, Any]:
    """Resources for the fuzzer's account to act on; returns its username and the examples to add."""
    fuzzer = await cluster.user("fuzz", device="seed")
    names = ("bob", "carol", "dave", "erin", "frank", "grace", "ivan", "mallory")
    bob, carol, dave, erin, frank, grace, ivan, mallory = [await cluster.user(name) for name in names]
    spare = AsyncClient(cluster.url)
    clients = (fuzzer, bob, carol, dave, erin, frank, grace, ivan, mallory, spare)
    try:
        assert fuzzer.session and bob.session and erin.session and frank.session
        assert grace.session and mallory.session
        me = fuzzer.session.user
        bob_id, erin_id, frank_id = bob.session.user.id, erin.session.user.id, frank.session.user.id
        await cluster.friends(fuzzer, bob)
        first = await fuzzer.send_text(bob_id, "hello")
        second = await fuzzer.send_text(bob_id, "edit me")
        to_accept = await carol.request(SendFriendRequest(to=me.id))
        to_decline = await dave.request(SendFriendRequest(to=me.id))
        group = await fuzzer.request(
            CreateGroupRequest(name="fuzzers", members=[bob_id, erin_id, frank_id], join_policy="approval")
        )
        # Groups of their own for the operations that end the fuzzer's rule over a group.
        to_transfer = await fuzzer.request(CreateGroupRequest(name="handed over", members=[bob_id]))
        to_dissolve = await fuzzer.request(CreateGroupRequest(name="doomed"))
        await fuzzer.request(AddAdminRequest(group_id=group.id, user=bob_id))
        for client in (carol, dave):
            await client.request(JoinGroupRequest(group_id=group.id, message="let me in"))
        to_approve, to_reject = (await fuzzer.request(ListJoinRequestsRequest(group_id=group.id))).requests[:2]
        theirs = await bob.request(CreateGroupRequest(name="bobs", members=[me.id], join_policy="open"))
        open_group = await bob.request(CreateGroupRequest(name="open", join_policy="open"))
        await fuzzer.request(BlockRequest(user=mallory.session.user.id))
        # Invitations: to the fuzzer (to accept and to decline), and from it (to withdraw).
        for client in (fuzzer, ivan):
            await client.request(UpdatePrivacyRequest(group_invites="nobody"))
        invited_to = [await bob.request(CreateGroupRequest(name=name, members=[me.id])) for name in ("yes", "no")]
        to_accept_invitation, to_decline_invitation = (await fuzzer.request(ListMyInvitationsRequest())).invitations
        assert ivan.session is not None
        await fuzzer.request(InviteRequest(group_id=group.id, users=[ivan.session.user.id]))
        (to_withdraw,) = (await fuzzer.request(ListGroupInvitationsRequest(group_id=group.id))).invitations
        assert {to_accept_invitation.group_id, to_decline_invitation.group_id} == {g.id for g in invited_to}
        upload = await fuzzer.upload(b"plain text, fuzzed", name="notes.txt")
        session = await spare.login(me.username, PASSWORD, device="refresh")
        g = group.id
        examples: dict[str, Any] = {
            "user": bob.session.user.username,
            "group_id": g,
            "conversation": first.conversation,
            "seq": first.seq,
            "blob": upload.blob,
            "device": "seed",
        }
        overrides: dict[tuple[str, str], dict[str, Any]] = {
            ("post", "/v1/friends/requests/{request_id}/accept"): {"request_id": to_accept.id},
            ("post", "/v1/friends/requests/{request_id}/decline"): {"request_id": to_decline.id},
            ("post", "/v1/groups/{group_id}/requests/{request_id}/approve"): {"request_id": to_approve.id},
            ("post", "/v1/groups/{group_id}/requests/{request_id}/reject"): {"request_id": to_reject.id},
            ("patch", "/v1/conversations/{conversation}/messages/{seq}"): {"seq": second.seq},
            ("delete", "/v1/groups/{group_id}/admins/{user}"): {"user": bob_id},
            ("post", "/v1/groups/{group_id}/leave"): {"group_id": theirs.id},
            ("post", "/v1/groups/{group_id}/join"): {"group_id": open_group.id},
            ("post", "/v1/groups/invitations/{invitation_id}/accept"): {"invitation_id": to_accept_invitation.id},
            ("post", "/v1/groups/invitations/{invitation_id}/decline"): {"invitation_id": to_decline_invitation.id},
            ("delete", "/v1/groups/{group_id}/invitations/{invitation_id}"): {"invitation_id": to_withdraw.id},
            ("delete", "/v1/blocks/{user}"): {"user": mallory.session.user.id},
            ("post", "/v1/groups/{group_id}/transfer"): {"group_id": to_transfer.id},
            ("delete", "/v1/groups/{group_id}"): {"group_id": to_dissolve.id},
        }
        bodies: dict[tuple[str, str], dict[str, Any]] = {
            ("post", "/v1/auth/login"): {"username": me.username, "password": PASSWORD, "device": "seed"},
            ("post", "/v1/auth/refresh"): {"refresh_token": session.refresh_token},
            ("post", "/v1/groups/{group_id}/admins"): {"user": erin_id},
            ("post", "/v1/groups/{group_id}/kick"): {"user": frank_id},
            ("post", "/v1/groups/{group_id}/invite"): {"users": [grace.session.user.id]},
            ("post", "/v1/friends/requests"): {"to": grace.session.user.id, "message": "hello"},
            ("post", "/v1/auth/register"): {"username": f"new-{me.username}", "password": PASSWORD},
            ("post", "/v1/groups/{group_id}/transfer"): {"user": bob_id},
            ("post", "/v1/groups/{group_id}/mute"): {"user": erin_id, "until": "2999-01-01T00:00:00Z"},
            ("patch", "/v1/friends/{user}"): {"remark": "fuzzed"},
            ("post", "/v1/blocks"): {"user": mallory.session.user.id},
            ("post", "/v1/messages"): {
                "conversation": first.conversation,
                "client_msg_id": "fuzz-example-1",
                "content": {"kind": "text", "text": "from the examples"},
            },
        }
        return {"username": me.username, "examples": examples, "overrides": overrides, "bodies": bodies}
    finally:
        for client in clients:
            await client.aclose()


def _with_examples(document: dict[str, Any], seeded: dict[str, Any]) -> dict[str, Any]:
    """The document with the seeded resources as examples of path parameters and bodies."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            values = {**seeded["examples"], **seeded["overrides"].get((method, path), {})}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in values:
                    parameter["example"] = values[parameter["name"]]
            body = seeded["bodies"].get((method, path))
            if body is not None:
                operation["requestBody"]["content"]["application/json"]["example"] = body
    return document


def _operations_with_2xx(document: dict[str, Any], har: dict[str, Any]) -> tuple[int, set[str], set[str]]:
    """(requests, operations answered with a 2xx, all operations) from the HAR log of a run."""
    patterns = []
    everything = set()
    for path, operations in document["paths"].items():
        regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for method in operations:
            everything.add(f"{method.upper()} {path}")
            patterns.append((method.upper(), regex, path))
    reached = set()
    entries = har["log"]["entries"]
    for entry in entries:
        if not 200 <= entry["response"]["status"] < 300:
            continue
        method = entry["request"]["method"]
        url_path = httpx.URL(entry["request"]["url"]).path
        for wanted, regex, path in patterns:
            if wanted == method and regex.match(url_path):
                reached.add(f"{method} {path}")
                break
    return len(entries), reached, everything


@pytest.mark.timeout(3600)
def test_schemathesis_finds_no_errors(cluster: TestCluster, tmp_path: Path) -> None:
    seeded = asyncio.run(_seed(cluster))
    document = _with_examples(httpx.get(f"{cluster.url}/openapi.json").json(), seeded)
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(document))
    reports = tmp_path / "reports"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(schema),
        "--url",
        cluster.url,
        "--checks",
        CHECKS,
        "--phases",
        PHASES,
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--report",
        "har",
        "--report-har-path",
        str(reports / "run.har"),
        "--output-truncate",
        "true",
        "--suppress-health-check",
        "all",
        *(["--seed", SEED] if SEED != "random" else []),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
        "IM_FUZZ_URL": cluster.url,
        "IM_FUZZ_USERNAME": seeded["username"],
        "IM_FUZZ_PASSWORD": PASSWORD,
    }
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3000, check=False)
    print(run.stdout[-30_000:], run.stderr[-5_000:])
    har_files = list(reports.glob("*.har"))
    assert har_files, run.stdout[-20_000:]
    requests, reached, operations = _operations_with_2xx(document, json.loads(har_files[0].read_text()))
    print(f"\nschemathesis: {requests} requests; {len(reached)} of {len(operations)} operations reached a 2xx")
    print("never a 2xx:", ", ".join(sorted(operations - reached)) or "none")
    assert run.returncode == 0, run.stdout[-20_000:]
    assert len(reached) >= 0.75 * len(operations), sorted(operations - reached)
