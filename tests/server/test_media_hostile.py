"""Damaged, truncated and oversized media of every accepted format: refused with the reader's own error.

Each format has a valid sample (read correctly), damaged variants (refused as ``corrupt``), and every
truncation of the sample gives a result or a :class:`MediaError`, never another exception.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from im_server.media import MediaError, probe_av, probe_image, sniff
from im_server.media.probe import READ_BUDGET, Source, read_av
from im_server.media.sniff import ZIP_READ_BUDGET, zip_type
from tests.support import media


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def _find(data: bytes, marker: bytes, skip: int = 0) -> int:
    at = data.find(marker)
    assert at >= 0, marker
    return at + skip


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


_JPEG = media.jpeg(256, 192)
_PNG = media.noisy_png(128, 96)
_GIF = media.picture("GIF", 128, 96, "P")
_WEBP = media.picture("WEBP", 128, 96, quality=80)
_BMP = media.picture("BMP", 64, 48)
_TIFF = media.picture("TIFF", 64, 48, compression="tiff_adobe_deflate")

IMAGES: dict[str, tuple[bytes, str, list[bytes]]] = {
    "jpeg": (
        _JPEG,
        "image/jpeg",
        [_JPEG[: len(_JPEG) // 2], _patched(_JPEG, _find(_JPEG, b"\xff\xc0", 5), b"\x00\x00")],
    ),
    "png": (_PNG, "image/png", [_PNG[: len(_PNG) // 2], _flip_middle(_PNG)]),
    "gif": (_GIF, "image/gif", [_GIF[:40], _GIF[: len(_GIF) // 2]]),
    "webp": (_WEBP, "image/webp", [_WEBP[: len(_WEBP) // 2], _patched(_WEBP, 20, b"\xff" * 16)]),
    "bmp": (_BMP, "image/bmp", [_BMP[:100], _patched(_BMP, 18, struct.pack("<ii", 0, 0))]),
    "tiff": (_TIFF, "image/tiff", [_TIFF[: len(_TIFF) // 2], _patched(_TIFF, 4, b"\xff\xff\xff\x7f")]),
}

_MP4, _MOV, _M4A = media.mp4(), media.mov(), media.m4a()
_WEBM, _MKV = media.webm(), media.mkv()
_OGG, _MP3, _WAV = media.ogg_opus(), media.mp3(), media.wav()
_FLAC, _AIFF, _AAC = media.flac(), media.aiff(), media.aac()

AV: dict[str, tuple[bytes, str, list[bytes]]] = {
    "mp4": (
        _MP4,
        "video/mp4",
        [_MP4[:60], _patched(_MP4, 28, b"\x7f\xff\xff\xff"), _patched(_MP4, 28, b"\x00\x00\x00\x01")],
    ),
    "mov": (_MOV, "video/quicktime", [_MOV[:60], _patched(_MOV, _find(_MOV, b"mvhd", 16), b"\x00" * 4)]),
    "m4a": (_M4A, "audio/mp4", [_M4A[:70], _patched(_M4A, _find(_M4A, b"mvhd", 16), b"\x00" * 4)]),
    "webm": (_WEBM, "video/webm", [_WEBM[:60], _patched(_WEBM, _find(_WEBM, b"\x18\x53\x80\x67", 4), b"\x00")]),
    "webm-live": (media.webm(None), "video/webm", [media.webm(None)[:120], media.webm(None, blocks=0)]),
    "mkv": (
        _MKV,
        "video/x-matroska",
        [_MKV[:64], _patched(_MKV, _find(_MKV, b"\x44\x89", 10), b"\x7f\xf8" + b"\x00" * 6)],
    ),
    "ogg": (_OGG, "audio/ogg", [_OGG[:60], _OGG[: len(_OGG) - 40], _patched(_OGG, 26, b"\xff")]),
    "mp3": (_MP3, "audio/mpeg", [_MP3[:300], b"ID3\x04\x00\x00\x00\x00\x00\x10" + b"\x00" * 600]),
    "wav": (_WAV, "audio/wav", [_WAV[:30], _patched(_WAV, 28, b"\x00\x00\x00\x00")]),
    "flac": (_FLAC, "audio/flac", [_FLAC[:20], _patched(_FLAC, 18, b"\x00\x00\x00")]),
    "aiff": (_AIFF, "audio/aiff", [_AIFF[:30], _patched(_AIFF, 28, b"\x00\x00")]),
    "aac": (_AAC, "audio/aac", [_AAC[:9], _AAC.replace(b"\xff\xf1\x50", b"\xff\xf1\xfc")]),
}


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "sample"
    path.write_bytes(data)
    return path


def _probe(tmp_path: Path, data: bytes, media_type: str) -> object:
    path = _write(tmp_path, data)
    if media_type.startswith("image/"):
        return probe_image(path, max_pixels=10**7, thumbnail_size=64, thumbnail_path=tmp_path / "t", budget=1 << 28)
    return probe_av(path, media_type)


@pytest.mark.parametrize("name", [*IMAGES, *AV])
def test_valid_samples_are_read(tmp_path, name):
    data, media_type, _ = {**IMAGES, **AV}[name]
    assert sniff(data[:8192], _write(tmp_path, data)) == media_type
    _probe(tmp_path, data, media_type)


@pytest.mark.parametrize("name", [*IMAGES, *AV])
def test_damaged_samples_are_corrupt(tmp_path, name):
    _, media_type, damaged = {**IMAGES, **AV}[name]
    for index, data in enumerate(damaged):
        with pytest.raises(MediaError) as refused:
            _probe(tmp_path, data, media_type)
        assert refused.value.reason == "corrupt", (index, refused.value.message)


@pytest.mark.parametrize("name", [*IMAGES, *AV])
def test_every_truncation_is_a_result_or_a_media_error(tmp_path, name):
    data, media_type, _ = {**IMAGES, **AV}[name]
    step = max(1, len(data) // 60)
    for end in range(0, len(data), step):
        with contextlib.suppress(MediaError):
            _probe(tmp_path, data[:end], media_type)


@pytest.mark.parametrize("name", list(AV))
def test_readers_stay_within_their_read_budget(name):
    data, media_type, _ = AV[name]
    source = Source(io.BytesIO(data), len(data), budget=READ_BUDGET)
    read_av(source, media_type)
    assert source.consumed <= max(len(data), 4096) * 3
    tight = Source(io.BytesIO(media.webm(None, blocks=400)), len(media.webm(None, blocks=400)), budget=2048)
    with pytest.raises(MediaError, match="too complex"):
        read_av(tight, "video/webm")


def test_impossible_durations_and_sizes_are_refused_or_dropped():
    huge = media.webm(1000, width=70_000, height=10)
    info = read_av(Source(io.BytesIO(huge), len(huge)), "video/webm")
    assert (info.width, info.height) == (None, None)
    for value in (float("nan"), float("inf"), 1e300, -5.0):
        data = _patched(_MKV, _find(_MKV, b"\x44\x89", 10), struct.pack(">d", value))
        with pytest.raises(MediaError):
            read_av(Source(io.BytesIO(data), len(data)), "video/x-matroska")


# Pictures within the memory budget -----------------------------------------------------------------


def _png_header(width: int, height: int, color_type: int = 2) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.mark.parametrize(
    ("data", "budget"),
    [
        (_png_header(5000, 5000, 6), 100 * 1024 * 1024),  # RGBA: 4 bytes a pixel, 100 MB decoded
        (media.picture("WEBP", 3000, 3000, lossless=True), 100 * 1024 * 1024),  # three buffers of 36 MB
        (media.picture("JPEG", 3000, 3000, progressive=True, subsampling=0), 32 * 1024 * 1024),  # coefficients
    ],
)
def test_pictures_beyond_the_decode_budget_are_refused_before_decoding(tmp_path, data, budget):
    path = _write(tmp_path, data)
    with pytest.raises(MediaError) as refused:
        probe_image(path, max_pixels=10**9, thumbnail_size=64, thumbnail_path=tmp_path / "t", budget=budget)
    assert refused.value.reason == "too_large"
    assert "memory" in refused.value.message


def test_big_jpegs_decode_at_a_reduced_scale(tmp_path):
    path = _write(tmp_path, media.picture("JPEG", 4000, 3000))
    # Decoded whole, 4000x3000 RGB would take 48 MB; at 1/8 scale it fits in a budget of 4 MB.
    info = probe_image(path, max_pixels=10**8, thumbnail_size=160, thumbnail_path=tmp_path / "t", budget=4 << 20)
    assert (info.width, info.height, info.thumbnail_width, info.thumbnail_height) == (4000, 3000, 160, 120)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "L", "I;16", "1"])
def test_thumbnails_of_every_mode(tmp_path, mode):
    image = Image.linear_gradient("L").resize((900, 600)).convert(mode if mode != "P" else "RGB")
    if mode == "P":
        image = image.quantize(16)
    out = io.BytesIO()
    image.save(out, format="PNG" if mode != "I;16" else "TIFF")
    info = probe_image(
        _write(tmp_path, out.getvalue()), max_pixels=10**7, thumbnail_size=100, thumbnail_path=tmp_path / "t"
    )
    assert (info.width, info.height, info.thumbnail_width, info.thumbnail_height) == (900, 600, 100, 67)
    with Image.open(tmp_path / "t") as thumbnail:
        assert thumbnail.size == (100, 67)
        assert thumbnail.mode == ("RGBA" if mode in ("RGBA", "LA") else "RGB")


# ZIP containers, read without inflating -----------------------------------------------------------


def _zip_bomb(inflated: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("mimetype", "w") as entry:
            block = bytes(1024 * 1024)
            for _ in range(inflated // len(block)):
                entry.write(block)
        archive.writestr("content.xml", b"<x/>")
    return out.getvalue()


def test_zip_bombs_are_sniffed_without_inflating(tmp_path):
    data = _zip_bomb(64 * 1024 * 1024)
    assert len(data) < 200_000
    media_type, consumed = zip_type(io.BytesIO(data), len(data))
    assert media_type == "application/zip"  # its "mimetype" is not a media type
    assert consumed <= 22 + 65_535 + 4096  # the end of the file, where the directory is, and no more
    assert sniff(data[:8192], _write(tmp_path, data)) == "application/zip"


def test_zip_containers_are_told_apart_by_their_directory_or_local_headers():
    def archive(entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", method) as zipped:
            for name, data in entries.items():
                zipped.writestr(name, data)
        return out.getvalue()

    epub = archive({"mimetype": b"application/epub+zip", "OEBPS/a.xhtml": b""})
    assert zip_type(io.BytesIO(epub), len(epub))[0] == "application/epub+zip"
    deflated = archive({"mimetype": b"application/vnd.oasis.opendocument.text"}, zipfile.ZIP_DEFLATED)
    assert zip_type(io.BytesIO(deflated), len(deflated))[0] == "application/vnd.oasis.opendocument.text"
    jar = archive({"META-INF/MANIFEST.MF": b"", "a/Main.class": b"\xca\xfe"})
    assert zip_type(io.BytesIO(jar), len(jar))[0] == "application/java-archive"
    # Cut short (no central directory): the local headers still tell.
    apk = archive({"AndroidManifest.xml": b"<m/>", "classes.dex": b"dex"})
    cut = apk[: apk.find(b"PK\x01\x02")]
    assert zip_type(io.BytesIO(cut), len(cut))[0] == "application/vnd.android.package-archive"
    # Zip64 end records, and a stub before the archive (self-extracting), are followed.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zipped:
        with zipped.open("AndroidManifest.xml", "w", force_zip64=True) as entry:
            entry.write(b"<m/>")
        zipped.writestr("classes.dex", b"")
    stubbed = b"MZ" + b"\x00" * 500 + out.getvalue()
    assert zip_type(io.BytesIO(stubbed), len(stubbed))[0] == "application/vnd.android.package-archive"


def test_long_zip_directories_are_read_up_to_a_bound():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zipped:
        for index in range(30_000):
            zipped.writestr(f"entry-with-a-long-name-{index:06d}.txt", b"")
        zipped.writestr("AndroidManifest.xml", b"")
        zipped.writestr("classes.dex", b"")
    data = out.getvalue()
    media_type, consumed = zip_type(io.BytesIO(data), len(data))
    assert media_type == "application/zip"  # the tell-tale names are past the bound
    assert consumed <= ZIP_READ_BUDGET
