"""Hostile uploads, downloads and media sends: each gets a clear error, and nothing is stored for it."""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest
import websockets

from im_schema.rest import GatewayRequest
from im_sdk import BlobNotFoundError, RefusedTypeError, UnsupportedMediaError
from tests.e2e.test_files import stored_blobs
from tests.support import media


@pytest.fixture
async def people(sqlite_cluster, closing):
    alice, bob, carol = [await sqlite_cluster.user(who) for who in ("alice", "bob", "carol")]
    closing += [alice, bob, carol]
    return alice, bob, carol


async def expect(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


async def test_uploads_of_the_wrong_type_are_refused(sqlite_cluster, people):
    alice, _, _ = people
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=sqlite_cluster.url, headers=headers) as http:

        async def post(data: bytes, **params: str) -> httpx.Response:
            return await http.post("/v1/files", params=params, content=data)

        # Bytes that are not what the kind needs.
        await expect(await post(media.pdf(), kind="image"), 415, "unsupported_media_type")
        await expect(
            await post(b"<svg xmlns='http://www.w3.org/2000/svg'/>", kind="image"), 415, "unsupported_media_type"
        )
        await expect(await post(media.png(), kind="voice"), 415, "unsupported_media_type")
        await expect(await post(media.ogg_opus(), kind="video"), 415, "unsupported_media_type")
        body = await expect(await post(media.webm(None, video=False), kind="video"), 415, "unsupported_media_type")
        assert "voice" in body["error"]["message"]
        await expect(await post(media.mp4(), kind="voice"), 415, "unsupported_media_type")
        await expect(await post(b"#!AMR\n" + b"\x00" * 64, kind="voice"), 415, "unsupported_media_type")
        # Refused types, whatever the kind or the name, and refused names, whatever the bytes.
        for kind in ("file", "image"):
            await expect(await post(media.pe_executable(), kind=kind, name="setup.txt"), 415, "refused_type")
        await expect(await post(b"\x7fELF\x02\x01\x01" + b"\x00" * 64), 415, "refused_type")
        await expect(await post(b"hello", name="invoice.pdf.exe"), 415, "refused_type")
        await expect(await post(b"hello", name="RUN.BAT"), 415, "refused_type")
        # A form instead of the raw bytes, an empty body, an unknown kind, a name too long.
        form = await http.post("/v1/files", files={"file": ("a.txt", b"hi")})
        await expect(form, 415, "unsupported_media_type")
        await expect(await post(b""), 400, "bad_request")
        await expect(await post(b"x", kind="executable"), 400, "bad_request")
        await expect(await post(b"x", name="n" * 300), 400, "bad_request")
        unauthenticated = await httpx.AsyncClient(base_url=sqlite_cluster.url).post("/v1/files", content=b"x")
        await expect(unauthenticated, 401, "unauthorized")
    with pytest.raises(RefusedTypeError):
        await alice.upload(media.pe_executable(), name="tool.dat")
    with pytest.raises(UnsupportedMediaError):
        await alice.send_image(people[1].session.user.id, media.pdf())
    assert await stored_blobs(sqlite_cluster) == set()
    # A path in the name is cut to its last component; control characters go.
    upload = await alice.upload(b"notes", name="../../etc/pass\x00wd\n")
    assert upload.name == "passwd"


async def test_forged_and_foreign_blobs(sqlite_cluster, people, tmp_path):
    alice, bob, carol = people
    picture = media.png(30, 30)
    mine = await alice.upload(picture, kind="image")
    document = await alice.upload(media.pdf(), kind="file")
    forged = hashlib.sha256(b"never uploaded").hexdigest()
    headers = {"Authorization": f"Bearer {carol.session.access_token}"}
    base = {"to": bob.session.user.id, "client_msg_id": uuid.uuid4().hex}
    async with httpx.AsyncClient(base_url=sqlite_cluster.url, headers=headers) as http:
        # Carol knows the ids of Alice's files (they are hashes of bytes she might have), but may not use them.
        for blob in (mine.blob, mine.thumbnail.blob, forged):
            await expect(await http.get(f"/v1/files/{blob}"), 404, "blob_not_found")
            content = {"kind": "image", "blob": blob}
            await expect(await http.post("/v1/messages", json={**base, "content": content}), 404, "blob_not_found")
        await expect(await http.get("/v1/files/not-a-hash"), 400, "bad_request")
        await expect(await http.get(f"/v1/files/{mine.blob.upper()}"), 400, "bad_request")
        # Metadata declared by the client is refused: the server reads it from the bytes.
        declared = {"kind": "image", "blob": mine.blob, "width": 1, "height": 1}
        await expect(await http.post("/v1/messages", json={**base, "content": declared}), 400, "bad_request")
        # A caption over the text limit.
        long = {"kind": "file", "blob": forged, "caption": "x" * 5000}
        await expect(await http.post("/v1/messages", json={**base, "content": long}), 400, "text_too_long")
    # Alice's own blobs, sent as the wrong kind.
    with pytest.raises(UnsupportedMediaError):
        await alice.send_media(bob.session.user.id, document, kind="image")
    with pytest.raises(UnsupportedMediaError):
        await alice.send_media(bob.session.user.id, mine, kind="video")
    with pytest.raises(UnsupportedMediaError):
        await alice.send_video(bob.session.user.id, media.mp4(), poster=document)
    # Once Alice sends the picture to Bob, Bob may download it; Carol still may not.
    message = await alice.send_image(bob.session.user.id, mine)
    assert (await bob.download(message, tmp_path / "ok.png")).read_bytes() == picture
    with pytest.raises(BlobNotFoundError):
        await carol.download(message, tmp_path / "no.png")
    # The same checks hold over a WebSocket send frame.
    assignment = await carol.request(GatewayRequest())
    async with websockets.connect(assignment.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": carol.session.access_token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        frame = {"type": "send", "to": bob.session.user.id, "client_msg_id": uuid.uuid4().hex}
        await ws.send(json.dumps({**frame, "content": {"kind": "image", "blob": mine.blob}}))
        answer = json.loads(await ws.recv())
        assert (answer["type"], answer["code"]) == ("error", "blob_not_found")
        own = await carol.upload(media.wav(0.2), kind="voice")
        await ws.send(
            json.dumps({**frame, "client_msg_id": uuid.uuid4().hex, "content": {"kind": "voice", "blob": own.blob}})
        )
        ack = json.loads(await ws.recv())
        assert ack["type"] == "ack" and ack["message"]["content"]["duration_ms"] == 200
