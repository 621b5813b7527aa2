"""Hostile uploads against a real API process: the peak memory each one costs it.

Starts ``im server up`` with one gateway (unless ``--url`` names a running cluster whose API process is
on this machine), registers a user, warms the upload path with small valid files, then uploads each
bomb in turn: a ZIP whose first entry inflates to 400 MB, a ZIP with 200,000 entries, pictures of
7000x7000 pixels in every accepted format (and headers that claim far more), and containers crafted
to make a reader walk forever (MP4, Matroska, Ogg, MP3 with a compressed ID3 frame, WAV). Before each
upload the API process's peak RSS is reset (``/proc/<pid>/clear_refs``, so run it as a user who owns
that process); after it, the peak is printed with the answer, as growth over the resident size just
before the upload and over the resident size after warming up (the allocator keeps some freed memory,
so the first figure can hide reuse; the second is the one to compare with the budget). The last line is
the worst growth, to compare with the documented budget (docs/operations.md, "Files").

    python bench/upload_bombs.py
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(__file__))
import httpx
from _common import cluster
from PIL import Image

from im_sdk import AsyncClient
from tests.support import media

PASSWORD = "bench-password"
SIDE = 7000


# Bombs --------------------------------------------------------------------------------------------


def zip_bomb(inflated: int = 400 * 1024 * 1024) -> bytes:
    """A ZIP whose first entry, ``mimetype``, inflates to ``inflated`` bytes of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(inflated // len(block))]
    data = b"".join(parts) + compressor.flush()
    crc = 0
    for _ in range(inflated // len(block)):
        crc = zlib.crc32(block, crc)
    name = b"mimetype"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), inflated, len(name), 0) + name
    central = (
        struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), inflated, len(name), 0, 0, 0, 0, 0, 0
        )
        + name
    )
    offset = len(local) + len(data)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), offset, 0)
    return local + data + central + end


def zip_entries(count: int = 200_000) -> bytes:
    """A ZIP of ``count`` empty entries: a long central directory."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for index in range(count):
            archive.writestr(f"f{index:07d}", b"")
    return out.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int, *, alpha: bool = False) -> bytes:
    """A PNG of one flat colour: a few hundred kilobytes that decode to ``width * height`` pixels."""
    channels = 4 if alpha else 3
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(1 + width * channels)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height``, and a token of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(4096)))


def pillow(fmt: str, mode: str = "RGB", size: int = SIDE, **options: object) -> Callable[[], bytes]:
    def make() -> bytes:
        out = io.BytesIO()
        Image.new(mode, (size, size)).save(out, format=fmt, **options)
        return out.getvalue()

    return make


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    data = bytearray(media.jpeg(16, 16))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def mp4_boxes(count: int = 200_000) -> bytes:
    """An MP4 with ``count`` empty boxes before its ``moov``."""
    return media.mp4()[:24] + b"\x00\x00\x00\x08free" * count + media.mp4()[24:]


def mp4_huge_box() -> bytes:
    """An MP4 whose second box claims a 64-bit size of 2^62 bytes."""
    return media.mp4()[:24] + struct.pack(">I4sQ", 1, b"mdat", 2**62) + b"\x00" * 64


def matroska_elements(count: int = 2_000_000) -> bytes:
    """A WebM live recording whose unknown-size cluster holds ``count`` empty Void elements."""
    live = media.webm(None, blocks=1)
    return live + b"\xec\x80" * count


def ogg_pages() -> bytes:
    """An Ogg Opus file whose last 64 KiB are full of page signatures that lead nowhere."""
    return media.ogg_opus(2.0) + b"OggS\x00" * 13_000


def mp3_compressed_id3(inflated: int = 200 * 1024 * 1024) -> bytes:
    """An MP3 whose ID3v2.4 tag holds a zlib-compressed frame of ``inflated`` bytes."""
    compressor = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    payload = b"".join(compressor.compress(block) for _ in range(inflated // len(block))) + compressor.flush()
    body = struct.pack(">I", inflated) + payload  # data length indicator, then the compressed data

    def syncsafe(value: int) -> bytes:
        return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))

    frame = b"PRIV" + syncsafe(len(body)) + b"\x00\x09" + body  # flags: compressed, with data length
    tag = b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame
    return tag + media.mp3(2.0)


def wav_chunks(count: int = 1_000_000) -> bytes:
    """A WAV of ``count`` empty chunks before its format."""
    body = b"WAVE" + b"junk\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", len(body)) + body


BOMBS: list[tuple[str, str | None, Callable[[], bytes]]] = [
    ("zip: first entry inflates to 400 MB", None, zip_bomb),
    ("zip: 200,000 entries", "file", zip_entries),
    ("png 7000x7000 RGB", None, lambda: png_bomb(SIDE, SIDE)),
    ("png 7000x7000 RGBA", "image", lambda: png_bomb(SIDE, SIDE, alpha=True)),
    ("png claiming 100000x100000", "image", lambda: png_claiming(100_000, 100_000)),
    ("jpeg 7000x7000 baseline", "image", pillow("JPEG", quality=50)),
    ("jpeg 7000x7000 progressive 4:2:0", "image", pillow("JPEG", quality=50, progressive=True, subsampling=2)),
    ("jpeg 7000x7000 progressive 4:4:4", "image", pillow("JPEG", quality=50, progressive=True, subsampling=0)),
    ("jpeg claiming 60000x60000", "image", lambda: jpeg_claiming(60_000, 60_000)),
    ("gif 7000x7000", "image", pillow("GIF", "P")),
    ("webp 7000x7000 lossless", "image", pillow("WEBP", "RGB", lossless=True, method=0)),
    ("webp 3500x3500 lossless", "image", pillow("WEBP", "RGB", 3500, lossless=True, method=0)),
    ("tiff 7000x7000 deflate", "image", pillow("TIFF", "RGB", compression="tiff_adobe_deflate")),
    ("mp4: 200,000 boxes", None, mp4_boxes),
    ("mp4: a box of 2^62 bytes", "video", mp4_huge_box),
    ("webm: 2,000,000 elements in a cluster", None, matroska_elements),
    ("ogg: 13,000 false page signatures", "voice", ogg_pages),
    ("mp3: ID3 frame inflating to 200 MB", None, mp3_compressed_id3),
    ("wav: 1,000,000 chunks", "voice", wav_chunks),
]


# Measuring ----------------------------------------------------------------------------------------


def listening_pid(port: int) -> int:
    """The process listening on a local TCP port (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak(pid: int) -> None:
    """Reset a process's peak RSS (VmHWM) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def run(url: str) -> None:
    pid = listening_pid(httpx.URL(url).port or 80)
    bombs = []
    for label, kind, make in BOMBS:
        started = time.perf_counter()
        bombs.append((label, kind, make()))
        print(f"made {label} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    async with AsyncClient(url, timeout=300) as client:
        name = f"bombs{secrets.token_hex(4)}"
        await client.register(name, PASSWORD)
        await client.login(name, PASSWORD, device="bench")
        headers = {"Authorization": f"Bearer {client.session.access_token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as http:
            # Warm up: the first upload of each kind imports and allocates what every later one reuses.
            for data in (media.png(), media.jpeg(), media.mp4(), media.webm(), media.ogg_opus(), media.mp3()):
                (await http.post("/v1/files", content=data)).raise_for_status()
            baseline = status_kib(pid, "VmRSS")
            worst = 0
            print(f"API process {pid}, {baseline / 1024:.0f} MiB resident after warming up.")
            print("Peak RSS during each upload, over the resident size just before it and over that first figure:")
            for label, kind, data in bombs:
                params = {"kind": kind} if kind else {}
                before = status_kib(pid, "VmRSS")
                reset_peak(pid)
                started = time.perf_counter()
                response = await http.post("/v1/files", params=params, content=data)
                seconds = time.perf_counter() - started
                peak = status_kib(pid, "VmHWM")
                worst = max(worst, peak - baseline)
                answer = response.json()
                outcome = answer["error"]["code"] if "error" in answer else f"stored as {answer['kind']}"
                print(
                    f"{label:40} {len(data) / 1024:7,.0f} KiB {response.status_code} {outcome:17} {seconds:5.1f} s "
                    f"+{max(0, peak - before) / 1024:6.1f} MiB  +{max(0, peak - baseline) / 1024:6.1f} MiB"
                )
            print(f"worst peak RSS growth over the warmed-up API process: {worst / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running cluster's API on this machine (default: start one)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url))
        return
    with cluster(1) as url:
        asyncio.run(run(url))


if __name__ == "__main__":
    main()
