"""Upload limits against a real cluster: damaged media of every format, pictures past the decode
budget, bombs, and the per-user quota (bytes per day, uploads at once)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest

from im_sdk import RateLimitedError
from tests.e2e.test_files import stored_blobs
from tests.server.test_media_hostile import AV, IMAGES
from tests.support import media

KIND = {"image": "image", "audio": "voice", "video": "video"}


def _kind(media_type: str) -> str:
    return KIND[media_type.split("/")[0]]


async def expect(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


async def test_damaged_media_of_every_format_answers_corrupt_media(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=sqlite_cluster.url, headers=headers, timeout=30) as http:
        for name, (_, media_type, damaged) in {**IMAGES, **AV}.items():
            for index, data in enumerate(damaged):
                for params in ({}, {"kind": _kind(media_type)}):
                    response = await http.post("/v1/files", params=params, content=data)
                    assert response.status_code == 422, (name, index, params, response.text)
                    assert response.json()["error"]["code"] == "corrupt_media"
        # A ZIP whose first entry inflates to 64 MiB is sniffed from its directory and stored as a file.
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("mimetype", "w") as entry:
            for _ in range(64):
                entry.write(bytes(1024 * 1024))
        stored = await http.post("/v1/files", content=out.getvalue())
        assert stored.status_code == 201, stored.text
        assert (stored.json()["kind"], stored.json()["media_type"]) == ("file", "application/zip")
    assert await stored_blobs(sqlite_cluster) == {stored.json()["blob"]}


async def test_pictures_past_the_decode_budget_are_refused_before_decoding(make_cluster, closing):
    cluster = make_cluster(gateways=1, image_decode_memory=16 * 1024 * 1024)
    alice = await cluster.user("alice")
    closing.append(alice)
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=30) as http:
        big = media.picture("PNG", 2500, 2000, "RGBA")  # 20 MB decoded
        body = await expect(
            await http.post("/v1/files", params={"kind": "image"}, content=big), 413, "payload_too_large"
        )
        assert "memory" in body["error"]["message"]
        # Without a kind, it is kept as a plain file; a JPEG of the same size decodes at a reduced scale.
        assert (await http.post("/v1/files", content=big)).json()["kind"] == "file"
        photo = await http.post("/v1/files", params={"kind": "image"}, content=media.picture("JPEG", 2500, 2000))
        assert photo.status_code == 201, photo.text
        assert (photo.json()["width"], photo.json()["height"]) == (2500, 2000)


async def _chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_daily_upload_quota(make_cluster, db_url, closing):
    cluster = make_cluster(gateways=1, db_url=db_url, upload_quota_bytes=100_000)
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=30) as http:
        assert (await http.post("/v1/files", content=b"a" * 60_000)).status_code == 201
        # Declared too big for what is left: refused before a byte is read.
        body = await expect(await http.post("/v1/files", content=b"b" * 50_000), 429, "quota_exceeded")
        assert 0 < body["error"]["retry_after"] <= 86_400
        assert "00:00 UTC" in body["error"]["message"]
        # Streamed without a length: refused as it goes past the quota; what arrived counts.
        await expect(await http.post("/v1/files", content=_chunks(b"c" * 50_000)), 429, "quota_exceeded")
        # Now every upload is refused, whatever its size, and the answer says when to retry.
        refused = await http.post("/v1/files", content=b"d")
        await expect(refused, 429, "quota_exceeded")
        assert int(refused.headers["Retry-After"]) >= 1
        # Another API node of the cluster counts the same bytes (they are in the database).
        other = cluster.add_api()
        async with httpx.AsyncClient(base_url=other.url, headers=headers) as elsewhere:
            await expect(await elsewhere.post("/v1/files", content=b"e"), 429, "quota_exceeded")
    with pytest.raises(RateLimitedError):
        await alice.upload(b"f", name="f.txt")
    # Bob's quota is his own.
    assert (await bob.upload(b"g" * 90_000, name="g.bin")).size == 90_000


async def test_concurrent_upload_limit(make_cluster, closing):
    cluster = make_cluster(gateways=1, max_concurrent_uploads=2)
    alice = await cluster.user("alice")
    closing.append(alice)
    release = asyncio.Event()

    async def slow(data: bytes) -> AsyncIterator[bytes]:
        yield data[:10]
        await release.wait()
        yield data[10:]

    headers = {"Authorization": f"Bearer {alice.session.access_token}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=30) as http:
        pending = [
            asyncio.create_task(http.post("/v1/files", content=slow(bytes([index]) * 1000))) for index in range(2)
        ]
        files = cluster.api.node.files
        await cluster.until(lambda: files.active_uploads == 2)
        body = await expect(await http.post("/v1/files", content=b"third"), 429, "quota_exceeded")
        assert "at once" in body["error"]["message"]
        assert body["error"]["retry_after"] >= 1
        release.set()
        assert [(await task).status_code for task in pending] == [201, 201]
        await cluster.until(lambda: files.active_uploads == 0)
        assert (await http.post("/v1/files", content=b"third")).status_code == 201
