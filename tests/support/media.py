"""Small, valid media files made on the spot: pictures with Pillow, the rest byte by byte.

Each maker builds the structure a real encoder writes (container headers, durations, track types) around
a token payload, which is all the server reads.
"""

from __future__ import annotations

import io
import struct
import wave

from PIL import Image


def png(width: int = 64, height: int = 48, *, alpha: bool = False, color: tuple[int, ...] = (200, 30, 60)) -> bytes:
    image = Image.new("RGBA" if alpha else "RGB", (width, height), (*color[:3], 128) if alpha else color[:3])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 48, *, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (20, 120, 220))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def noisy_png(width: int, height: int, seed: int = 1) -> bytes:
    """A PNG that does not compress well, for tests that need bulk."""
    import random

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return out.getvalue()


def wav(seconds: float = 1.5, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def mp3(seconds: float = 2.0) -> bytes:
    """MPEG-1 Layer III frames at 128 kbit/s, 44.1 kHz (silent payloads)."""
    frame = b"\xff\xfb\x90\x00" + b"\x00" * 413  # 417 bytes per frame
    frames = round(seconds * 44100 / 1152)
    return frame * frames


def _crc_table() -> list[int]:
    table = []
    for index in range(256):
        value = index << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _ogg_page(data: bytes, *, granule: int, sequence: int, flags: int, serial: int = 0x1234) -> bytes:
    lacing = []
    remaining = len(data)
    while remaining >= 255:
        lacing.append(255)
        remaining -= 255
    lacing.append(remaining)
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)) + bytes(lacing)
    page = bytearray(header + data)
    crc = 0
    for byte in page:
        crc = ((crc << 8) ^ _CRC[((crc >> 24) ^ byte) & 0xFF]) & 0xFFFFFFFF
    page[22:26] = struct.pack("<I", crc)
    return bytes(page)


def ogg_opus(seconds: float = 3.0) -> bytes:
    pre_skip = 312
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)
    vendor = b"im-tests"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    audio = b"\xf8\xff\xfe"  # one 20 ms frame of silence
    return (
        _ogg_page(head, granule=0, sequence=0, flags=0x02)
        + _ogg_page(tags, granule=0, sequence=1, flags=0)
        + _ogg_page(audio, granule=pre_skip + int(seconds * 48000), sequence=2, flags=0x04)
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(duration_ms: int = 2500, width: int = 320, height: int = 240, *, video: bool = True) -> bytes:
    """An ISO media file: ``ftyp``, a ``moov`` with ``mvhd`` and one track, and a token ``mdat``."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    mvhd = _box(b"mvhd", struct.pack(">B3xIIII", 0, 0, 0, 1000, duration_ms) + b"\x00" * 80)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    tkhd = _box(
        b"tkhd",
        struct.pack(">B3xIIIII", 0, 0, 0, 1, 0, duration_ms)
        + b"\x00" * 8
        + struct.pack(">hhhh", 0, 0, 0, 0)
        + matrix
        + struct.pack(">II", (width if video else 0) << 16, (height if video else 0) << 16),
    )
    hdlr = _box(b"hdlr", struct.pack(">B3xI4s", 0, 0, b"vide" if video else b"soun") + b"\x00" * 12 + b"h\x00")
    trak = _box(b"trak", tkhd + _box(b"mdia", hdlr))
    return ftyp + _box(b"moov", mvhd + trak) + _box(b"mdat", b"\x00" * 64)


def _vint_size(size: int) -> bytes:
    return struct.pack(">Q", size | (0x01 << 56))  # 8-byte size


def _element(element_id: int, payload: bytes) -> bytes:
    raw_id = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return raw_id + _vint_size(len(payload)) + payload


def webm(
    duration_ms: int | None = 4000,
    width: int = 640,
    height: int = 360,
    *,
    video: bool = True,
    blocks: int = 5,
    doc_type: bytes = b"webm",
) -> bytes:
    """A WebM file; without ``duration_ms`` it is written like a browser's live recording (no Duration,
    unknown-size segment and clusters), so the length comes from the last block."""
    header = _element(0x1A45DFA3, _element(0x4282, doc_type) + _element(0x4287, b"\x04") + _element(0x4285, b"\x02"))
    info = _element(0x2AD7B1, (1_000_000).to_bytes(3, "big"))
    if duration_ms is not None:
        info += _element(0x4489, struct.pack(">d", float(duration_ms)))
    track = _element(0xD7, b"\x01") + _element(0x83, b"\x01" if video else b"\x02")
    if video:
        track += _element(0xE0, _element(0xB0, width.to_bytes(4, "big")) + _element(0xBA, height.to_bytes(4, "big")))
    body = _element(0x1549A966, info) + _element(0x1654AE6B, _element(0xAE, track))
    step = (duration_ms or 4000) // max(1, blocks)
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    for index in range(blocks):
        timecode = index * step
        block = b"\x81" + struct.pack(">hB", 0, 0x80) + b"\x00" * 16
        content = _element(0xE7, timecode.to_bytes(4, "big")) + _element(0xA3, block)
        if duration_ms is None:
            body += b"\x1f\x43\xb6\x75" + unknown + content
        else:
            body += _element(0x1F43B675, content)
    if duration_ms is None:
        return header + b"\x18\x53\x80\x67" + unknown + body
    return header + _element(0x18538067, body)


def pe_executable() -> bytes:
    """The first bytes of a Windows program: an MZ stub pointing at a PE header."""
    stub = bytearray(b"MZ" + b"\x90\x00" * 29)
    stub[0x3C:0x40] = struct.pack("<I", 0x80)
    return bytes(stub.ljust(0x80, b"\x00")) + b"PE\x00\x00" + b"\x00" * 256


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def picture(fmt: str, width: int = 64, height: int = 48, mode: str = "RGB", **options: object) -> bytes:
    """A flat picture in any format Pillow writes (``GIF``, ``WEBP``, ``BMP``, ``TIFF``, ...)."""
    image = Image.new(mode, (width, height), 90 if mode in ("L", "P") else (90, 160, 30))
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def m4a(duration_ms: int = 3000) -> bytes:
    """An MPEG-4 audio file: the ``M4A `` brand and one sound track."""
    return _box(b"ftyp", b"M4A " + struct.pack(">I", 512) + b"M4A isomiso2") + mp4(duration_ms, video=False)[28:]


def mov(duration_ms: int = 2000, width: int = 320, height: int = 240) -> bytes:
    """A QuickTime movie: the ``qt  `` brand and one video track."""
    return _box(b"ftyp", b"qt  " + struct.pack(">I", 512) + b"qt  ") + mp4(duration_ms, width, height)[28:]


def mkv(duration_ms: int | None = 4000) -> bytes:
    """A Matroska file (DocType ``matroska``) with one video track."""
    return webm(duration_ms, doc_type=b"matroska")


def flac(seconds: float = 2.0, rate: int = 44100) -> bytes:
    """The header of a FLAC stream: ``fLaC`` and a STREAMINFO block (frames are not read)."""
    samples = int(seconds * rate)
    packed = (rate << 44) | (0 << 41) | (15 << 36) | samples  # rate, channels - 1, bits - 1, total samples
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + packed.to_bytes(8, "big") + b"\x00" * 16
    return b"fLaC" + b"\x80" + len(info).to_bytes(3, "big") + info + b"\xff\xf8" + b"\x00" * 32


def aiff(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """An AIFF file: ``COMM`` (with its 80-bit sample rate) and ``SSND``."""
    frames = int(seconds * rate)
    exponent = rate.bit_length() - 1
    mantissa = rate << (63 - exponent)
    comm = struct.pack(">hIh", 1, frames, 16) + struct.pack(">HQ", 16383 + exponent, mantissa)
    ssnd = struct.pack(">II", 0, 0) + b"\x00\x00" * frames
    body = b"AIFF" + b"COMM" + struct.pack(">I", len(comm)) + comm + b"SSND" + struct.pack(">I", len(ssnd)) + ssnd
    return b"FORM" + struct.pack(">I", len(body)) + body


def aac(seconds: float = 1.0) -> bytes:
    """ADTS frames of AAC-LC at 44.1 kHz (token payloads)."""
    payload = b"\x00" * 16
    length = 7 + len(payload)
    header = bytes([0xFF, 0xF1, 0x50, 0x80 | (length >> 11), (length >> 3) & 0xFF, ((length & 7) << 5) | 0x1F, 0xFC])
    return (header + payload) * max(1, round(seconds * 44100 / 1024))
