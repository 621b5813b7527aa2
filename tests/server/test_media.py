"""The pure parts of file handling: type sniffing, media probing, byte ranges, names."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from im_server.api.ranges import ByteRange, Unsatisfiable, content_disposition, parse_range
from im_server.blobs.jetstream import parse_runs, runs
from im_server.media import MediaError, probe_av, probe_image, sniff
from im_server.services.files import clean_name, default_name
from tests.support import media


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (media.png(), "image/png"),
        (media.jpeg(), "image/jpeg"),
        (b"GIF89a" + b"\x00" * 10, "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM" + b"\x00" * 12 + struct.pack("<I", 40) + b"\x00" * 30, "image/bmp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (media.wav(), "audio/wav"),
        (media.mp3(), "audio/mpeg"),
        (b"ID3\x04\x00" + b"\x00" * 20, "audio/mpeg"),
        (b"\xff\xf1\x50\x80" + b"\x00" * 10, "audio/aac"),
        (media.ogg_opus(), "audio/ogg"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom", "audio/mp4"),
        (media.mp4(), "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "video/quicktime"),
        (b"\x00\x00\x00\x14ftyp3gp4\x00\x00\x00\x00isom", "video/3gpp"),
        (media.webm(), "video/webm"),
        (media.pdf(), "application/pdf"),
        (b"\x1f\x8b\x08\x00", "application/gzip"),
        (media.pe_executable(), "application/vnd.microsoft.portable-executable"),
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00", "application/x-dosexec"),
        (b"\x7fELF\x02\x01\x01\x00", "application/x-elf"),
        (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", "application/x-mach-binary"),
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", "application/x-mach-binary"),
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x34", "application/java-vm"),
        ("Grüße\n".encode(), "text/plain"),
        (b"#!/bin/sh\necho hi\n", "text/x-shellscript"),
        (b"<!DOCTYPE html><html></html>", "text/html"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (b'{"a": [1, 2]}', "application/json"),
        (b"\x00\x01\x02\x03binary", "application/octet-stream"),
        (b"", "text/plain"),
    ],
)
def test_sniff(data, expected):
    assert sniff(data[:8192]) == expected


def test_sniff_tells_zip_containers_apart(tmp_path):
    def archive(name: str, entries: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as out:
            for entry, data in entries.items():
                out.writestr(entry, data)
        return path

    cases = {
        "a.zip": ({"readme.txt": b"hi"}, "application/zip"),
        "a.jar": ({"META-INF/MANIFEST.MF": b"", "Main.class": b"\xca\xfe"}, "application/java-archive"),
        "a.apk": ({"AndroidManifest.xml": b"", "classes.dex": b""}, "application/vnd.android.package-archive"),
        "a.odt": ({"mimetype": b"application/vnd.oasis.opendocument.text"}, "application/vnd.oasis.opendocument.text"),
        "a.docx": (
            {"[Content_Types].xml": b"", "word/document.xml": b""},
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    }
    for name, (entries, expected) in cases.items():
        path = archive(name, entries)
        assert sniff(path.read_bytes()[:8192], path) == expected, name
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert sniff(broken.read_bytes(), broken) == "application/zip"


def test_probe_image_reads_orientation_and_makes_thumbnails(tmp_path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(media.jpeg(400, 200, orientation=6))  # stored landscape, shown portrait
    info = probe_image(source, max_pixels=10**6, thumbnail_size=100, thumbnail_path=tmp_path / "t")
    assert (info.media_type, info.width, info.height) == ("image/jpeg", 200, 400)
    assert (info.thumbnail_type, info.thumbnail_width, info.thumbnail_height) == ("image/jpeg", 50, 100)
    clear = tmp_path / "clear.png"
    clear.write_bytes(media.png(50, 50, alpha=True))
    info = probe_image(clear, max_pixels=10**6, thumbnail_size=100, thumbnail_path=tmp_path / "t2")
    assert info.thumbnail_type == "image/png" and (tmp_path / "t2").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (media.png(100, 100)[:200], "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "corrupt"),
        (b"not a picture at all", "corrupt"),
        (media.png(2000, 1000), "too_large"),
    ],
)
def test_probe_image_refuses(tmp_path, data, reason):
    path = tmp_path / "in"
    path.write_bytes(data)
    with pytest.raises(MediaError) as refused:
        probe_image(path, max_pixels=1_000_000, thumbnail_size=64, thumbnail_path=tmp_path / "t")
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("data", "media_type", "expected"),
    [
        (media.wav(1.25), "audio/wav", (1250, False, None, None)),
        (media.ogg_opus(61.5), "audio/ogg", (61500, False, None, None)),
        (media.mp4(90_000, 1920, 1080), "video/mp4", (90000, True, 1920, 1080)),
        (media.mp4(5000, video=False), "video/mp4", (5000, False, None, None)),
        (media.webm(12_345, 640, 480), "video/webm", (12345, True, 640, 480)),
        (media.webm(None, blocks=3), "video/webm", (2666, True, 640, 360)),
    ],
)
def test_probe_av(tmp_path, data, media_type, expected):
    path = tmp_path / "in"
    path.write_bytes(data)
    info = probe_av(path, media_type)
    assert (info.duration_ms, info.has_video, info.width, info.height) == expected


@pytest.mark.parametrize(
    ("data", "media_type", "reason"),
    [
        (media.mp4()[:40], "video/mp4", "corrupt"),
        (b"\x00\x00\x00\x08ftyp" + b"\x00\x00\xff\xffmoov", "video/mp4", "corrupt"),
        (media.webm()[:30], "video/webm", "corrupt"),
        (b"\x1a\x45\xdf\xa3\x80", "video/webm", "corrupt"),
        (b"#!AMR\n", "audio/amr", "unsupported"),
        (b"ID3\x04" + b"\x00" * 30, "audio/mpeg", "corrupt"),
        (b"garbage", "video/x-msvideo", "unsupported"),
    ],
)
def test_probe_av_refuses(tmp_path, data, media_type, reason):
    path = tmp_path / "in"
    path.write_bytes(data)
    with pytest.raises(MediaError) as refused:
        probe_av(path, media_type)
    assert refused.value.reason == reason


def test_ranges():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 9)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=90-500", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-500", 100) == ByteRange(0, 99)
    assert parse_range("BYTES = 5 - 6", 100) == ByteRange(5, 6)
    for ignored in ("bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-", "bytes=a-b", "nonsense"):
        assert parse_range(ignored, 100) is None, ignored
    for unsatisfiable in ("bytes=100-", "bytes=100-200", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(unsatisfiable, 100)
    assert ByteRange(90, 99).content_range(100) == "bytes 90-99/100" and ByteRange(90, 99).length == 10


def test_names():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert clean_name("a\x00b\u202ec.txt") == "abc.txt"
    assert clean_name("..") is None and clean_name("") is None and clean_name(None) is None
    assert clean_name("x" * 300) == "x" * 255
    assert default_name("image", "ab" * 32, "image/png") == "image-abababababab.png"
    header = content_disposition("attachment", 'naïve "quote".pdf')
    assert header == "attachment; filename=\"na_ve _quote_.pdf\"; filename*=UTF-8''na%C3%AFve%20%22quote%22.pdf"


def test_chunk_sequence_runs():
    assert runs([3, 4, 5, 9, 10, 12]) == "3-5,9-10,12-12"
    assert parse_runs("3-5,9-10,12-12") == [3, 4, 5, 9, 10, 12]
    assert runs([]) == "" and parse_runs("") == []
