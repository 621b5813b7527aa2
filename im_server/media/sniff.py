"""What a file is, from its first bytes (and, for ZIP containers, its table of contents).

Bounded whatever the bytes: ZIP containers are told apart by the names in their central directory
(or, for an archive cut short, their local headers), read with :mod:`struct`, never by inflating an
entry: at most :data:`ZIP_READ_BUDGET` bytes are read and 100 bytes inflated (OpenDocument's and EPUB's
``mimetype`` entry).

An explicit table of signatures rather than a general magic database: what the server accepts as an
image, a voice note or a video, and what it refuses as executable, must be predictable and tested.
Whatever it does not recognize is ``text/plain`` (valid UTF-8 without NULs) or
``application/octet-stream``.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "AUDIO_TYPES",
    "IMAGE_TYPES",
    "SNIFF_BYTES",
    "VIDEO_TYPES",
    "ZIP_DIRECTORY_BYTES",
    "ZIP_ENTRIES",
    "ZIP_READ_BUDGET",
    "extension_for",
    "sniff",
    "zip_type",
]

SNIFF_BYTES = 8192
"""How many leading bytes :func:`sniff` looks at."""

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"})
"""Pictures accepted as ``image`` messages (the server decodes them with Pillow)."""

AUDIO_TYPES = frozenset(
    {"audio/mpeg", "audio/ogg", "audio/flac", "audio/wav", "audio/aiff", "audio/aac", "audio/mp4", "audio/webm"}
)
"""Audio accepted as ``voice`` messages (the server reads their duration)."""

VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "video/webm", "video/x-matroska"})
"""Containers accepted as ``video`` messages (the server reads their duration)."""

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
    "image/heic": ".heic",
    "image/avif": ".avif",
    "image/svg+xml": ".svg",
    "image/x-icon": ".ico",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "audio/wav": ".wav",
    "audio/aiff": ".aiff",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
    "audio/webm": ".weba",
    "audio/amr": ".amr",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/3gpp": ".3gp",
    "video/3gpp2": ".3g2",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi",
    "video/ogg": ".ogv",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/x-tar": ".tar",
    "application/x-7z-compressed": ".7z",
    "application/vnd.rar": ".rar",
    "application/json": ".json",
    "text/plain": ".txt",
    "text/html": ".html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
}


def extension_for(media_type: str) -> str:
    """A usual file name extension for a media type (``.bin`` when there is none)."""
    return _EXTENSIONS.get(media_type.split(";")[0], ".bin")


_ISO_IMAGE_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heic", b"msf1": "image/heic"}
_ISO_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


def _iso_bmff(head: bytes) -> str | None:
    if head[4:8] != b"ftyp" or len(head) < 12:
        return None
    major = head[8:12]
    size = int.from_bytes(head[0:4], "big")
    brands = {major} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if major in (b"avif", b"avis"):
        return "image/avif"
    if major in _ISO_IMAGE_BRANDS:
        return _ISO_IMAGE_BRANDS[major]
    if major in _ISO_AUDIO_BRANDS:
        return "audio/mp4"
    if major == b"qt  ":
        return "video/quicktime"
    if major.startswith(b"3g2"):
        return "video/3gpp2"
    if major.startswith(b"3gp"):
        return "video/3gpp"
    if brands & {b"avif"}:
        return "image/avif"
    return "video/mp4"


def _ebml(head: bytes) -> str:
    # The EBML header names the DocType (element 0x4282) in its first few dozen bytes.
    at = head.find(b"\x42\x82", 4, 256)
    doc_type = head[at + 2 : at + 20] if at >= 0 else b""
    if b"webm" in doc_type:
        return "video/webm"
    if b"matroska" in doc_type:
        return "video/x-matroska"
    return "application/octet-stream"


def _ogg(head: bytes) -> str:
    if b"OpusHead" in head or b"\x01vorbis" in head or b"\x7fFLAC" in head or b"Speex   " in head:
        return "audio/ogg"
    if b"\x80theora" in head:
        return "video/ogg"
    return "application/ogg"


def _mpeg_audio(head: bytes) -> str | None:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x3
    if layer == 0:
        return "audio/aac" if head[1] & 0xF6 == 0xF0 else None  # ADTS
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x3
    if bitrate in (0, 15) or rate == 3:
        return None
    return "audio/mpeg"


_ZIP_TAIL = 22 + 65_535
"""The end-of-central-directory record and the longest comment that may follow it."""
ZIP_DIRECTORY_BYTES = 1024 * 1024
"""The most bytes of a ZIP file's table of contents (central directory or local headers) read."""
ZIP_ENTRIES = 10_000
"""The most entries of a ZIP file's table of contents looked at."""
ZIP_READ_BUDGET = _ZIP_TAIL + 56 + 20 + ZIP_DIRECTORY_BYTES + 30 + 65_535 * 2 + 1024
"""The most bytes :func:`sniff` reads from a ZIP file: its tail, its table of contents, and the first
kilobyte of a ``mimetype`` entry (inflated to at most 100 bytes)."""


class _NotZip(Exception):
    """The bytes do not hold a readable table of contents."""


class _Reader:
    """Reads at offsets of a file, counting every byte against :data:`ZIP_READ_BUDGET`."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        self.size = size
        self.consumed = 0

    def read(self, position: int, count: int) -> bytes:
        count = max(0, min(count, self.size - position))
        if position < 0 or self.consumed + count > ZIP_READ_BUDGET:
            raise _NotZip
        self.consumed += count
        self.file.seek(position)
        return self.file.read(count)


def _zip(path: Path | None) -> str:
    if path is None:
        return "application/zip"
    try:
        with path.open("rb") as file:
            return zip_type(file, os.fstat(file.fileno()).st_size)[0]
    except OSError:
        return "application/zip"


def zip_type(file: BinaryIO, size: int) -> tuple[str, int]:
    """The media type of a ZIP container (Office document, OpenDocument, EPUB, Java archive, Android
    package, or plain ZIP), and how many bytes were read to tell (at most :data:`ZIP_READ_BUDGET`)."""
    reader = _Reader(file, size)
    try:
        try:
            names, first = _central_directory(reader)
        except _NotZip:
            names, first = _local_headers(reader)
        declared = _mimetype(reader, first) if names and names[0] == "mimetype" else None
    except (_NotZip, struct.error, zlib.error):
        return "application/zip", reader.consumed
    return declared or _zip_kind(names), reader.consumed


def _zip_kind(names: list[str]) -> str:
    present = set(names)
    if "AndroidManifest.xml" in present and any(name.endswith(".dex") for name in names):
        return "application/vnd.android.package-archive"
    if "META-INF/MANIFEST.MF" in present and any(name.endswith(".class") for name in names):
        return "application/java-archive"
    if "[Content_Types].xml" in present:
        for folder, media_type in (
            ("word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            ("xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ("ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ):
            if any(name.startswith(folder) for name in names):
                return media_type
    return "application/zip"


def _name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


def _central_directory(reader: _Reader) -> tuple[list[str], int]:
    """Names in the central directory, and where the first entry's local header is."""
    start = max(0, reader.size - _ZIP_TAIL)
    tail = reader.read(start, reader.size - start)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and len(tail) - at < 22:
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise _NotZip
    end_record = start + at
    directory_size, directory_offset = struct.unpack_from("<II", tail, at + 12)
    if directory_offset == 0xFFFFFFFF or directory_size == 0xFFFFFFFF:
        # Zip64: a locator just before the record points at the Zip64 end record.
        locator = reader.read(end_record - 20, 20)
        if len(locator) < 20 or locator[:4] != b"PK\x06\x07":
            raise _NotZip
        record_at = struct.unpack_from("<Q", locator, 8)[0]
        record = reader.read(record_at, 56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise _NotZip
        directory_size, directory_offset = struct.unpack_from("<QQ", record, 40)
        end_record = record_at
    # Bytes before the archive (a self-extracting stub) shift every offset; zipfile allows for it too.
    shift = end_record - directory_size - directory_offset
    if shift < 0:
        raise _NotZip
    directory = reader.read(end_record - directory_size, min(directory_size, ZIP_DIRECTORY_BYTES))
    names: list[str] = []
    first = -1
    position = 0
    while position + 46 <= len(directory) and len(names) < ZIP_ENTRIES:
        if directory[position : position + 4] != b"PK\x01\x02":
            break
        flags = struct.unpack_from("<H", directory, position + 8)[0]
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", directory, position + 28)
        offset = struct.unpack_from("<I", directory, position + 42)[0]
        names.append(_name(directory[position + 46 : position + 46 + name_length], flags))
        if first < 0:
            first = offset + shift
        position += 46 + name_length + extra_length + comment_length
    if not names:
        raise _NotZip
    return names, first


def _local_headers(reader: _Reader) -> tuple[list[str], int]:
    """Names from the local headers, for an archive without a readable central directory (cut short);
    stops at an entry whose size is only given after its data."""
    names: list[str] = []
    position = 0
    read = 0
    while len(names) < ZIP_ENTRIES and read < ZIP_DIRECTORY_BYTES:
        header = reader.read(position, 30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            break
        flags, _, _, _, _, compressed, _, name_length, extra_length = struct.unpack_from("<HHHHIIIHH", header, 6)
        names.append(_name(reader.read(position + 30, name_length), flags))
        read += 30 + name_length
        if flags & 0x08:
            break
        position += 30 + name_length + extra_length + compressed
    return names, 0


def _mimetype(reader: _Reader, at: int) -> str | None:
    """The media type an OpenDocument or EPUB file declares in its first entry, ``mimetype``; never
    more than a kilobyte read and a hundred bytes inflated."""
    header = reader.read(at, 30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        return None
    method, compressed = struct.unpack_from("<H", header, 8)[0], struct.unpack_from("<I", header, 18)[0]
    name_length, extra_length = struct.unpack_from("<HH", header, 26)
    data = reader.read(at + 30 + name_length + extra_length, min(compressed, 1024) if compressed else 1024)
    if method == 8:
        data = zlib.decompressobj(-15).decompress(data, 100)
    elif method != 0:
        return None
    declared = data[:100].decode("ascii", "replace").strip()
    return declared if re.fullmatch(r"application/[a-z0-9.+-]+", declared) else None


def _text(head: bytes) -> str | None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text/plain"
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # only a character cut at the end of the sample is forgiven
            return None
        text = head[: exc.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith("#!"):
        return "text/x-shellscript"
    if lowered.startswith(("<!doctype html", "<html")):
        return "text/html"
    if "<svg" in lowered[:1024] and lowered.startswith(("<svg", "<?xml", "<!doctype svg")):
        return "image/svg+xml"
    if lowered.startswith(("{", "[")) and lowered.rstrip().endswith(("}", "]")):
        return "application/json"
    return "text/plain"


_SIMPLE: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"8BPS", "image/vnd.adobe.photoshop"),
    (b"%PDF-", "application/pdf"),
    (b"{\\rtf", "application/rtf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"fLaC", "audio/flac"),
    (b"#!AMR", "audio/amr"),
    (b"ID3", "audio/mpeg"),
    (b"\x1a\x45\xdf\xa3", "ebml"),
    (b"OggS", "ogg"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"(\xb5/\xfd", "application/zstd"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x7fELF", "application/x-elf"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\x00asm", "application/wasm"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
)


def sniff(head: bytes, path: Path | None = None) -> str:
    """The media type of a file from its first :data:`SNIFF_BYTES` bytes.

    Args:
        head: The first bytes of the file (fewer if the file is shorter).
        path: The whole file, for formats told apart by more than their first bytes (ZIP containers
            such as Office documents, Java archives and Android packages).
    """
    for signature, media_type in _SIMPLE:
        if head.startswith(signature):
            if media_type == "ebml":
                return _ebml(head)
            if media_type == "ogg":
                return _ogg(head)
            if media_type == "zip":
                return _zip(path)
            return media_type
    if head[:4] == b"RIFF" and len(head) >= 12:
        form = head[8:12]
        return {b"WAVE": "audio/wav", b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}.get(
            form, "application/octet-stream"
        )
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    iso = _iso_bmff(head)
    if iso is not None:
        return iso
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8:
        # Mach-O universal binaries and Java classes share a magic number; the next word tells them apart.
        return "application/x-mach-binary" if int.from_bytes(head[4:8], "big") < 45 else "application/java-vm"
    if head[:2] == b"MZ":
        offset = int.from_bytes(head[0x3C:0x40], "little") if len(head) >= 0x40 else -1
        if 0 < offset <= len(head) - 4 and head[offset : offset + 4] == b"PE\x00\x00":
            return "application/vnd.microsoft.portable-executable"
        if _text(head) is None:
            return "application/x-dosexec"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 108, 124):
        return "image/bmp"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    audio = _mpeg_audio(head)
    if audio is not None:
        return audio
    return _text(head) or "application/octet-stream"
