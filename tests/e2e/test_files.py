"""Images, files, voice notes and videos end to end: SDK → API → NATS object store → SQL, and back.

Every test runs a real cluster with the default blob store (a JetStream object store on the session's
nats-server); the per-kind tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from nats.js.errors import NotFoundError as NatsNotFound

from im_schema.content import FileContent, ImageContent, VideoContent, VoiceContent
from im_sdk import BlobNotFoundError, CorruptMediaError, PayloadTooLargeError
from tests.e2e.conftest import wait_connected
from tests.support import media

# kind -> (bytes, name, what the server must read from them)
SAMPLES = {
    "image": (media.png(640, 480), "photo.png", {"media_type": "image/png", "width": 640, "height": 480}),
    "file": (media.pdf(), "report.pdf", {"media_type": "application/pdf"}),
    "voice": (media.ogg_opus(3.0), "note.ogg", {"media_type": "audio/ogg", "duration_ms": 3000}),
    "video": (
        media.mp4(2500, 320, 240),
        "clip.mp4",
        {"media_type": "video/mp4", "duration_ms": 2500, "width": 320, "height": 240},
    ),
}
CONTENT_TYPES = {"image": ImageContent, "file": FileContent, "voice": VoiceContent, "video": VideoContent}


def auth(client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.session.access_token}"}


async def stored_blobs(cluster) -> set[str]:
    """The names of the objects in the cluster's object store bucket."""
    store = cluster.api.node.files.blobs

    async def names() -> set[str]:
        # Listing finds the stream by name, which the API role may not do: look as the test observer.
        observer = await cluster.observer()
        try:
            bucket = await observer.jetstream().object_store(store.bucket)
            return {info.name for info in await bucket.list(ignore_deletes=True)}
        except NatsNotFound:
            return set()
        finally:
            await observer.close()

    return await cluster.loop.call(names())


async def stream_messages(cluster) -> int:
    store = cluster.api.node.files.blobs

    async def count() -> int:
        return (await store._js.stream_info(store.stream)).state.messages

    return await cluster.loop.call(count())


@pytest.mark.parametrize("kind", list(SAMPLES))
async def test_each_kind_end_to_end(cluster, closing, tmp_path, kind):
    data, name, expected = SAMPLES[kind]
    alice, bob, carol = [await cluster.user(who) for who in ("alice", "bob", "carol")]
    closing += [alice, bob, carol]
    send = getattr(alice, f"send_{kind}")
    seen: list[tuple[int, int | None]] = []
    message = await send(bob.session.user.id, data, name=name, caption=f"a {kind}", progress=lambda *a: seen.append(a))
    content = message.content
    assert isinstance(content, CONTENT_TYPES[kind])
    assert content.blob == hashlib.sha256(data).hexdigest()
    assert (content.name, content.size, content.caption) == (name, len(data), f"a {kind}")
    for field, value in expected.items():
        assert getattr(content, field) == value, field
    assert seen and seen[-1] == (len(data), len(data))
    if kind == "image":
        assert content.thumbnail.media_type == "image/jpeg"
        assert (content.thumbnail.width, content.thumbnail.height) == (320, 240)

    # The recipient sees it in history and downloads exactly the bytes (and the thumbnail).
    page = await bob.history(message.conversation)
    assert page.messages[-1].content == content
    saved = await bob.download(page.messages[-1], tmp_path)
    assert saved == tmp_path / name and saved.read_bytes() == data
    assert not (tmp_path / f"{name}.part").exists()
    if kind == "image":
        thumb = await bob.download(message, tmp_path / "thumb.jpg", thumbnail=True)
        assert hashlib.sha256(thumb.read_bytes()).hexdigest() == content.thumbnail.blob

    async with httpx.AsyncClient(base_url=cluster.url, headers=auth(bob)) as http:
        # Ranged downloads: a middle slice, an open end, a suffix, and one past the end.
        whole = await http.get(f"/v1/files/{content.blob}", params={"name": name})
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"].startswith(expected["media_type"])
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"] == f'"{content.blob}"'
        assert f'filename="{name}"' in whole.headers["content-disposition"]
        middle = await http.get(f"/v1/files/{content.blob}", headers={"Range": "bytes=10-99"})
        assert middle.status_code == 206 and middle.content == data[10:100]
        assert middle.headers["content-range"] == f"bytes 10-{min(99, len(data) - 1)}/{len(data)}"
        tail = await http.get(f"/v1/files/{content.blob}", headers={"Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == data[-7:]
        rest = await http.get(f"/v1/files/{content.blob}", headers={"Range": f"bytes={len(data) - 5}-"})
        assert rest.content == data[-5:]
        beyond = await http.get(f"/v1/files/{content.blob}", headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416 and beyond.json()["error"]["code"] == "range_not_satisfiable"
        assert beyond.headers["content-range"] == f"bytes */{len(data)}"
        stale = await http.get(f"/v1/files/{content.blob}", headers={"Range": "bytes=0-1", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == data
        head = await http.head(f"/v1/files/{content.blob}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content

    # Someone who is in no conversation with the file can neither download it nor send it on.
    with pytest.raises(BlobNotFoundError):
        await carol.download(message, tmp_path / "stolen")
    with pytest.raises(BlobNotFoundError):
        await carol.send_media(alice.session.user.id, await_upload(content), kind=kind)
    assert not list(tmp_path.glob("stolen*"))

    # The recipient may forward it without uploading, and identical bytes are stored once.
    again = await bob.upload(data, kind=kind, name="copy")
    assert again.blob == content.blob
    forwarded = await bob.send_media(carol.session.user.id, again, caption="fwd")
    assert forwarded.content.blob == content.blob and forwarded.content.name == "copy"
    await carol.download(forwarded, tmp_path / "carol")
    expected_objects = {content.blob} | ({content.thumbnail.blob} if kind == "image" else set())
    assert await stored_blobs(cluster) == expected_objects


def await_upload(content):
    """An :class:`Upload` naming someone else's blob, as a forger would build it."""
    from im_schema.files import Upload

    return Upload(blob=content.blob, kind="file", name="x", size=content.size, media_type=content.media_type)


async def test_a_pushed_media_message_and_a_poster(sqlite_cluster, closing, inboxes, tmp_path):
    cluster = sqlite_cluster
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    inbox = inboxes(bob)
    await wait_connected(cluster, bob)
    clip = tmp_path / "holiday.webm"
    clip.write_bytes(media.webm(4000, 640, 360))
    sent = await alice.send_video(bob.session.user.username, clip, poster=media.jpeg(1280, 720), caption="look")
    event = await inbox.next()
    assert event.message == sent
    content = event.message.content
    assert isinstance(content, VideoContent)
    assert (content.name, content.media_type, content.duration_ms) == ("holiday.webm", "video/webm", 4000)
    assert (content.width, content.height) == (640, 360)
    assert content.poster is not None and (content.poster.width, content.poster.height) == (320, 180)
    poster = await bob.download(event.message, tmp_path / "poster.jpg", thumbnail=True)
    assert poster.stat().st_size == content.poster.size


async def test_kinds_are_detected_from_the_bytes(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    cases = [
        (media.jpeg(40, 30, orientation=6), "image", "image/jpeg", {"width": 30, "height": 40}),  # EXIF-rotated
        (media.wav(1.5), "voice", "audio/wav", {"duration_ms": 1500}),
        (media.mp3(2.0), "voice", "audio/mpeg", {}),
        (media.mp4(1000, video=False), "voice", "audio/mp4", {"duration_ms": 1000}),
        (media.webm(None, video=False, blocks=4), "voice", "audio/webm", {"duration_ms": 3000}),
        (media.webm(None, 320, 200), "video", "video/webm", {"width": 320, "height": 200}),
        (b"plain words\n", "file", "text/plain", {}),
        (media.pdf(), "file", "application/pdf", {}),
    ]
    for data, kind, media_type, fields in cases:
        upload = await alice.upload(data)
        assert (upload.kind, upload.media_type) == (kind, media_type), media_type
        for field, value in fields.items():
            assert getattr(upload, field) == value, (media_type, field)
    mp3 = await alice.upload(media.mp3(2.0))
    assert abs(mp3.duration_ms - 2000) < 60


async def test_oversized_uploads_are_refused_and_leave_nothing(make_cluster, closing, tmp_path):
    spool = tmp_path / "spool"
    cluster = make_cluster(
        upload_dir=spool, max_image_bytes=2000, max_file_bytes=3000, max_voice_bytes=2000, max_video_bytes=2000
    )
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    big = media.noisy_png(40, 40)  # ~4.9 KB
    for kind in ("image", "file", "voice", "video"):
        with pytest.raises(PayloadTooLargeError) as refused:
            await alice.send_media(bob.session.user.id, big, kind=kind)
        assert refused.value.status == 413 and "bytes" in refused.value.message
    # Without Content-Length the limit is enforced while the body streams in.

    async def chunks():
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    async with httpx.AsyncClient(base_url=cluster.url, headers=auth(alice)) as http:
        streamed = await http.post("/v1/files", params={"kind": "file"}, content=chunks())
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"
    # Detected as an image but over the image limit: kept as a plain file (within the file limit).
    small_limit = media.noisy_png(28, 28)
    assert 2000 < len(small_limit) <= 3000
    upload = await alice.upload(small_limit)
    assert (upload.kind, upload.media_type) == ("file", "image/png")
    assert await stored_blobs(cluster) == {upload.blob}
    assert list(spool.iterdir()) == []


async def test_corrupt_media_is_refused_clearly(sqlite_cluster, closing):
    alice = await sqlite_cluster.user("alice")
    closing.append(alice)
    picture = media.png(200, 200)
    truncated = picture[: len(picture) // 2]
    with pytest.raises(CorruptMediaError) as refused:
        await alice.upload(truncated, kind="image")
    assert refused.value.code == "corrupt_media" and refused.value.status == 422
    assert "damaged or truncated" in refused.value.message
    with pytest.raises(CorruptMediaError):
        await alice.upload(truncated)  # detected as a PNG: refused too
    with pytest.raises(CorruptMediaError):
        await alice.upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, kind="image")
    clip = media.mp4(1000)
    with pytest.raises(CorruptMediaError):
        await alice.upload(clip[: clip.index(b"moov") - 4], kind="video")  # no moov box
    with pytest.raises(CorruptMediaError):
        await alice.upload(media.ogg_opus()[:60], kind="voice")
    # As a plain file, damaged bytes are just bytes.
    assert (await alice.upload(truncated, kind="file")).kind == "file"
    assert await stored_blobs(sqlite_cluster) == {hashlib.sha256(truncated).hexdigest()}


async def test_an_interrupted_upload_leaves_nothing_behind(make_cluster, closing, tmp_path):
    spool = tmp_path / "spool"
    cluster = make_cluster(upload_dir=spool)
    alice = await cluster.user("alice")
    closing.append(alice)
    files = cluster.api.node.files
    host, port = urlsplit(cluster.url).hostname, urlsplit(cluster.url).port
    for kind, (data, _, _) in SAMPLES.items():
        body = data * (2_000_000 // len(data) + 1)
        head = (
            f"POST /v1/files?kind={kind} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
            f"{alice.session.access_token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((host, port)) as sock:
            sock.sendall(head + body[: len(body) // 2])
            await cluster.until(lambda: files.active_uploads == 1)
            await cluster.until(lambda: any(spool.iterdir()))  # the spool file exists meanwhile
        await cluster.until(lambda: files.active_uploads == 0)
        assert list(spool.iterdir()) == [], kind
    assert await stored_blobs(cluster) == set()
    assert await stream_messages(cluster) == 0
    # The same bytes, sent whole, go through.
    assert (await alice.upload(SAMPLES["file"][0], kind="file")).size == len(SAMPLES["file"][0])


async def test_a_download_resumes_and_is_verified(sqlite_cluster, closing, tmp_path):
    alice, bob = await sqlite_cluster.user("alice"), await sqlite_cluster.user("bob")
    closing += [alice, bob]
    data = media.noisy_png(300, 300)  # ~270 KB: several chunks of the object store
    message = await alice.send_file(bob.session.user.id, data, name="big.png")
    target = tmp_path / "big.png"
    _write(Path(f"{target}.part"), data[:100_000])
    seen: list[int] = []
    saved = await bob.download(message, target, progress=lambda done, total: seen.append(done))
    assert saved.read_bytes() == data
    assert seen[0] > 100_000 and seen[-1] == len(data)  # it went on from the partial file
    # A partial file that does not match the blob is detected, removed, and the download redone.
    _write(Path(f"{target}.part"), b"x" * 1000)
    target.unlink()
    assert (await bob.download(message, target)).read_bytes() == data


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_the_blocking_client_sends_and_downloads(sqlite_cluster, tmp_path):
    from im_sdk import Client
    from tests.support.cluster import PASSWORD

    cluster = sqlite_cluster
    alice, bob = cluster.loop.run(cluster.user("alice")), cluster.loop.run(cluster.user("bob"))
    try:
        with Client(cluster.url) as sender, Client(cluster.url) as receiver:
            sender.login(alice.session.user.username, PASSWORD, device="sync")
            receiver.login(bob.session.user.username, PASSWORD, device="sync")
            song = tmp_path / "song.wav"
            song.write_bytes(media.wav(0.5))
            seen: list[tuple[int, int | None]] = []
            with song.open("rb") as file:
                message = sender.send_voice(bob.session.user.id, file, progress=lambda *a: seen.append(a))
            assert message.content.name == "song.wav" and message.content.duration_ms == 500
            assert seen[-1] == (song.stat().st_size, song.stat().st_size)
            picture = sender.send_image(bob.session.user.id, media.png(10, 10), name="dot.png")
            out = receiver.download(picture, tmp_path)
            assert out.name == "dot.png" and out.read_bytes() == media.png(10, 10)
            assert receiver.download(message, tmp_path / "copy.wav").read_bytes() == song.read_bytes()
            limits = receiver.file_limits()
            assert limits.max_bytes["video"] == cluster.settings.max_video_bytes and ".exe" in limits.refused_extensions
    finally:
        cluster.loop.run(alice.aclose())
        cluster.loop.run(bob.aclose())


async def test_the_s3_blob_store_end_to_end(make_cluster, closing, tmp_path):
    """The same path with IM_BLOB_STORE=s3 (see tests/storage/test_blob_stores.py for the variables)."""
    import os

    url = os.environ.get("IM_TEST_S3_URL")
    if not url:
        pytest.skip("set IM_TEST_S3_URL (and IM_TEST_S3_BUCKET, IM_TEST_S3_ACCESS_KEY, IM_TEST_S3_SECRET_KEY)")
    cluster = make_cluster(
        blob_store="s3",
        s3_bucket=os.environ.get("IM_TEST_S3_BUCKET", "im-test"),
        s3_endpoint_url=None if url == "aws" else url,
        s3_region=os.environ.get("IM_TEST_S3_REGION", "us-east-1"),
        s3_access_key_id=os.environ.get("IM_TEST_S3_ACCESS_KEY"),
        s3_secret_access_key=os.environ.get("IM_TEST_S3_SECRET_KEY"),
    )
    alice, bob = await cluster.user("alice"), await cluster.user("bob")
    closing += [alice, bob]
    picture = media.png(100, 80)
    message = await alice.send_image(bob.session.user.id, picture, name="s3.png")
    assert (message.content.width, message.content.thumbnail.width) == (100, 100)
    assert (await bob.download(message, tmp_path)).read_bytes() == picture
    async with httpx.AsyncClient(base_url=cluster.url, headers=auth(bob)) as http:
        ranged = await http.get(f"/v1/files/{message.content.blob}", headers={"Range": "bytes=8-15"})
        assert ranged.status_code == 206 and ranged.content == picture[8:16]
    store = cluster.api.node.files.blobs
    assert store.kind == "s3"
    assert await cluster.loop.call(store.delete(message.content.blob))
    assert await cluster.loop.call(store.delete(message.content.thumbnail.blob))


async def test_group_files_follow_what_each_member_can_see(sqlite_cluster, closing, tmp_path):
    cluster = sqlite_cluster
    alice, bob, carol = [await cluster.user(who) for who in ("alice", "bob", "carol")]
    closing += [alice, bob, carol]
    group = await alice.groups.create("photos", [bob.session.user.id])
    conversation = f"g:{group.id}"
    before = await alice.send_image(conversation, media.png(20, 20), name="before.png")
    assert (await bob.download(before, tmp_path / "b1")).stat().st_size == before.content.size
    # Carol joins later, without the history: the earlier picture is not hers to fetch.
    await alice.groups.invite(group.id, [carol.session.user.id])
    with pytest.raises(BlobNotFoundError):
        await carol.download(before, tmp_path / "c1")
    after = await alice.send_file(conversation, b"minutes of the meeting", name="minutes.txt")
    assert (await carol.download(after, tmp_path / "c2")).read_bytes() == b"minutes of the meeting"
    # Bob leaves: what he could see stays his, what comes later does not.
    await bob.groups.leave(group.id)
    later = await alice.send_file(conversation, b"after bob left", name="later.txt")
    assert (await bob.download(after, tmp_path / "b2")).read_bytes() == b"minutes of the meeting"
    with pytest.raises(BlobNotFoundError):
        await bob.download(later, tmp_path / "b3")
