"""One contract for every blob store: the JetStream object store always, S3 when one is configured.

The S3 run needs an S3-compatible endpoint (MinIO, say) and a bucket that exists::

    IM_TEST_S3_URL=http://127.0.0.1:9000 IM_TEST_S3_BUCKET=im-test \\
    IM_TEST_S3_ACCESS_KEY=minioadmin IM_TEST_S3_SECRET_KEY=minioadmin pytest tests/storage/test_blob_stores.py

(``IM_TEST_S3_URL=aws`` uses AWS S3 itself with the usual credential chain; ``IM_TEST_S3_REGION`` sets the
region.) Without ``IM_TEST_S3_URL`` the S3 cases are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from pathlib import Path

import pytest

from im_server.blobs import BlobNotFound, BlobStore, JetStreamBlobStore
from im_server.bus.permissions import inbox_prefix

S3_URL = os.environ.get("IM_TEST_S3_URL")


def _file(tmp_path: Path, size: int, seed: int = 0) -> tuple[str, Path, bytes]:
    data = secrets.token_bytes(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size))
    path = tmp_path / f"blob-{size}-{seed}"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path, data


@pytest.fixture(params=["nats", "s3"])
async def store(request, nats_server):
    if request.param == "nats":
        prefix = f"t{secrets.token_hex(5)}"
        # As an API node: the role that owns the object store.
        connection = await nats_server.connect("api", inbox_prefix=inbox_prefix(prefix, "api", "blob-test"))
        js = connection.jetstream()
        blobs = JetStreamBlobStore(js, f"{prefix}_files", chunk_size=16 * 1024)
        await blobs.start()
        yield blobs
        await connection.close()
        observer = await nats_server.connect()
        await observer.jetstream().delete_object_store(blobs.bucket)
        await observer.close()
        return
    if not S3_URL:
        pytest.skip("set IM_TEST_S3_URL (and IM_TEST_S3_BUCKET, IM_TEST_S3_ACCESS_KEY, IM_TEST_S3_SECRET_KEY)")
    from im_server.blobs.s3 import S3BlobStore

    blobs = S3BlobStore(
        bucket=os.environ.get("IM_TEST_S3_BUCKET", "im-test"),
        prefix=f"im-tests/{secrets.token_hex(5)}/",
        endpoint_url=None if S3_URL == "aws" else S3_URL,
        region=os.environ.get("IM_TEST_S3_REGION", "us-east-1"),
        access_key_id=os.environ.get("IM_TEST_S3_ACCESS_KEY"),
        secret_access_key=os.environ.get("IM_TEST_S3_SECRET_KEY"),
        part_size=5 * 1024 * 1024,  # S3's smallest part
    )
    await blobs.start()
    yield blobs
    listing = await blobs.client.list_objects_v2(Bucket=blobs.bucket, Prefix=blobs.prefix)
    for item in listing.get("Contents", []):
        await blobs.client.delete_object(Bucket=blobs.bucket, Key=item["Key"])
    await blobs.close()


async def _read(store: BlobStore, blob: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await store.read(blob, offset, length)])


async def test_put_read_ranges_and_delete(store, tmp_path):
    # Several chunks of the object store; over one part of an S3 multipart upload.
    size = 300_001 if isinstance(store, JetStreamBlobStore) else 6 * 1024 * 1024 + 12_345
    blob, path, data = _file(tmp_path, size)
    assert await store.size(blob) is None and not await store.exists(blob)
    assert await store.put(blob, path, size=len(data), media_type="application/octet-stream") is True
    assert await store.put(blob, path, size=len(data), media_type="application/octet-stream") is False  # stored once
    assert await store.size(blob) == len(data) and await store.exists(blob)
    assert await _read(store, blob) == data
    ranges = [(0, 1), (5, 100), (16_383, 2), (16_384, 16_384), (size - 10, None), (size - 1, 50), (123_457, 99_999)]
    for offset, length in ranges:
        assert await _read(store, blob, offset, length) == data[offset : None if length is None else offset + length]
    assert await _read(store, blob, size, 10) == b""
    with pytest.raises(BlobNotFound):
        await store.read(hashlib.sha256(b"absent").hexdigest())
    assert await store.delete(blob) is True
    assert await store.size(blob) is None and await store.delete(blob) is False
    with pytest.raises(BlobNotFound):
        await store.read(blob)
    # Stored again after a delete.
    assert await store.put(blob, path, size=len(data), media_type="application/octet-stream") is True
    assert await _read(store, blob, 1, 3) == data[1:4]


async def test_concurrent_puts_of_the_same_bytes_store_one_copy(store, tmp_path):
    blob, path, data = _file(tmp_path, 100_000)
    results = await asyncio.gather(*(store.put(blob, path, size=len(data), media_type="x/y") for _ in range(4)))
    assert results.count(True) >= 1
    assert await _read(store, blob) == data
    if isinstance(store, JetStreamBlobStore):
        assert results.count(True) == 1
        info = await store._js.stream_info(store.stream)
        assert info.state.bytes < 2 * len(data)  # the losers' chunks were removed


async def test_a_cancelled_put_leaves_nothing(store, tmp_path):
    if not isinstance(store, JetStreamBlobStore):
        pytest.skip("S3 stores an object atomically (a failed multipart upload is aborted)")
    blob, path, data = _file(tmp_path, 4 * 1024 * 1024)
    js = store._js
    put = asyncio.create_task(store.put(blob, path, size=len(data), media_type="x/y"))
    async with asyncio.timeout(10):
        while (await js.stream_info(store.stream)).state.messages < 5:
            await asyncio.sleep(0.001)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert (await js.stream_info(store.stream)).state.messages == 0
    assert await store.size(blob) is None
