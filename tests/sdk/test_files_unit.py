"""The I/O-free parts of files in the schema and the SDK: contents, sources, resumable downloads."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from im_schema.content import Content, ImageContent, OutgoingContent, UnknownContent, VoiceContent
from im_schema.files import DownloadRequest, Upload
from im_schema.models import Message
from im_sdk import AsyncClient, Client, TransportError, UnknownValue
from im_sdk._files import DownloadPlan, media_request, open_source

BLOB = "ab" * 32
contents: TypeAdapter[Content] = TypeAdapter(Content)
outgoing: TypeAdapter[OutgoingContent] = TypeAdapter(OutgoingContent)


def _image(**extra) -> dict:
    thumbnail = {"blob": "cd" * 32, "media_type": "image/jpeg", "width": 32, "height": 24, "size": 900}
    return {
        "kind": "image",
        "blob": BLOB,
        "name": "a.png",
        "size": 10,
        "media_type": "image/png",
        "width": 64,
        "height": 48,
        "thumbnail": thumbnail,
        **extra,
    }


def test_stored_contents_parse_and_unknown_kinds_are_kept():
    assert isinstance(contents.validate_python(_image()), ImageContent)
    voice = {"kind": "voice", "blob": BLOB, "name": "n.ogg", "size": 5, "media_type": "audio/ogg", "duration_ms": 3}
    assert isinstance(contents.validate_python(voice), VoiceContent)
    future = contents.validate_python({"kind": "sticker", "blob": BLOB, "pack": 7})
    assert isinstance(future, UnknownContent) and future.model_extra == {"blob": BLOB, "pack": 7}


def test_what_a_client_sends_carries_no_metadata():
    assert outgoing.validate_python({"kind": "video", "blob": BLOB, "poster": BLOB}).poster == BLOB
    for forged in (
        {"kind": "image", "blob": BLOB, "width": 10},
        {"kind": "voice", "blob": BLOB, "duration_ms": 1},
        {"kind": "file", "blob": BLOB, "size": 1},
        {"kind": "image", "blob": "not-a-hash"},
        {"kind": "image", "blob": BLOB.upper()},
        {"kind": "system", "event": "x"},
    ):
        with pytest.raises(ValidationError):
            outgoing.validate_python(forged)


def test_media_requests():
    upload = Upload(blob=BLOB, kind="voice", name="n.ogg", size=5, media_type="audio/ogg", duration_ms=5)
    request = media_request("d:1:2", upload, caption="hi", client_msg_id="k" * 10)
    assert request.conversation == "d:1:2" and request.client_msg_id == "k" * 10
    assert request.content.model_dump(exclude_none=True) == {"kind": "voice", "blob": BLOB, "caption": "hi"}
    as_file = media_request(7, upload, kind="file", name="x.ogg")
    assert as_file.to == 7 and as_file.content.kind == "file" and as_file.content.name == "x.ogg"
    assert DownloadRequest(blob=BLOB, name="a b.png").params() == {"name": "a b.png"}


def test_a_kind_a_newer_server_detected_is_sent_as_a_file():
    raw = b'{"blob": "%s", "kind": "sticker", "name": "s.webp", "size": 5, "media_type": "image/webp"}' % BLOB.encode()
    upload = Upload.model_validate_json(raw)
    assert isinstance(upload.kind, UnknownValue) and upload.kind == "sticker"
    request = media_request("d:1:2", upload)
    assert request.content.model_dump(exclude_none=True) == {"kind": "file", "blob": BLOB}
    assert media_request("d:1:2", upload, kind="image").content.kind == "image"  # asked for: as asked


def test_sources():
    from_bytes = open_source(b"abc", "x.bin")
    assert (from_bytes.size, from_bytes.name, list(from_bytes.chunks(None))) == (3, "x.bin", [b"abc"])
    file = io.BytesIO(b"0123456789")
    file.seek(4)
    seen = []
    spool = open_source(file)
    assert spool.size == 6 and b"".join(spool.chunks(lambda done, total: seen.append((done, total)))) == b"456789"
    assert seen == [(6, 6)] and spool.rewind() and file.tell() == 4

    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            return 0

    piped = open_source(Pipe())
    assert piped.size is None and not piped.rewind()


def _message(data: bytes) -> Message:
    content = {"kind": "file", "blob": hashlib.sha256(data).hexdigest(), "name": "../r.txt", "size": len(data)}
    return Message(
        conversation="d:1:2",
        seq=3,
        sender=1,
        sent_at=datetime.now(UTC),
        content={**content, "media_type": "text/plain"},
    )


def test_a_download_plan_resumes_and_verifies(tmp_path):
    data = b"hello, resumable world"
    plan = DownloadPlan.for_message(_message(data), tmp_path, thumbnail=False)
    assert plan.target == tmp_path / "r.txt"  # the name is cut to its last component
    assert plan.resume() == {}
    plan.part.write_bytes(data[:5])
    assert plan.resume() == {"Range": "bytes=5-", "If-Range": f'"{plan.blob}"'}
    assert plan.accept(206, {"content-range": f"bytes 5-{len(data) - 1}/{len(data)}"}) == "ab"
    with pytest.raises(TransportError):
        plan.accept(206, {"content-range": "bytes 0-3/22"})
    assert plan.accept(200, {}) == "wb" and plan.done == 0  # the server sent everything: start over
    plan.add(data, None)
    plan.part.write_bytes(data)
    assert plan.complete and plan.finish().read_bytes() == data and not plan.part.exists()
    broken = DownloadPlan.for_message(_message(data), tmp_path / "b.txt", thumbnail=False)
    broken.part.write_bytes(b"x" * len(data))
    broken.resume()
    with pytest.raises(TransportError):
        broken.finish()
    assert not broken.part.exists()
    with pytest.raises(TypeError):
        DownloadPlan.for_message(_message(data), tmp_path, thumbnail=True)


def test_both_clients_have_the_file_methods():
    names = {"upload", "send_media", "send_image", "send_file", "send_voice", "send_video", "download", "file_limits"}
    assert names <= set(dir(Client)) and names <= set(dir(AsyncClient))
