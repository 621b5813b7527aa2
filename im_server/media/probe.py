"""Decoding what the bytes say: image size and thumbnail (Pillow), audio and video durations.

Everything here reads hostile input, so every reader is bounded:

- Pictures are opened lazily (Pillow reads the header only), refused above ``max_pixels`` or above the
  memory ``budget`` their decoding would need, both before any pixel is decoded; JPEG is decoded at the
  smallest DCT scale that still covers the thumbnail (``draft``), and the thumbnail is made in place
  (``reduce`` then resampling), so a picture costs one decoded buffer and no full-size copy. A picture
  is still decoded completely, so a truncated or damaged one is refused rather than stored.
- Audio and video are never decoded: durations are read from container headers by the small readers
  below (ISO media, Matroska, Ogg, FLAC, WAV, AIFF) or by mutagen's stream-info classes (MP3, AAC),
  never by its tag parsers (ID3 frames may be zlib-compressed). All of them read through a
  :class:`Source`, which refuses to read more than :data:`READ_BUDGET` bytes in total.

Every failure is a :class:`MediaError`; no other exception leaves :func:`probe_image` or
:func:`probe_av`, whatever the bytes.
"""

from __future__ import annotations

import ctypes
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

__all__ = [
    "MAX_DURATION_MS",
    "READ_BUDGET",
    "AvInfo",
    "ImageInfo",
    "MediaError",
    "Source",
    "decode_cost",
    "probe_av",
    "probe_image",
    "read_av",
]

Reason = Literal["corrupt", "unsupported", "too_large"]

READ_BUDGET = 16 * 1024 * 1024
"""The most bytes one audio/video probe reads, however the file is crafted (a one-hour live WebM
recording, walked block by block, reads about 6 MiB)."""
MAX_DURATION_MS = 2**31 - 1
"""Longer durations (about 24 days) are taken as damage."""
_MAX_SIDE = 65_535
"""Picture sides a container may claim; larger values are ignored."""


class MediaError(Exception):
    """The bytes cannot be used as the media they were taken for; ``reason`` says why."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A decoded picture and the thumbnail made of it."""

    media_type: str
    width: int
    """As shown, i.e. after the EXIF orientation is applied."""
    height: int
    thumbnail_type: str
    thumbnail_width: int
    thumbnail_height: int


@dataclass(frozen=True, slots=True)
class AvInfo:
    """What an audio or video container says about its contents."""

    duration_ms: int
    has_video: bool
    width: int | None = None
    height: int | None = None


# Images -------------------------------------------------------------------------------------------

_PIL_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_ORIENTATION = 0x0112
_SMALL_MODES = frozenset({"1", "L", "P"})
"""Pillow stores these with one byte per pixel (and ``I;16*`` with two); every other mode with four."""


def _bytes_per_pixel(mode: str) -> int:
    if mode in _SMALL_MODES:
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_cost(image: Any, full_size: tuple[int, int]) -> int:
    """Bytes of memory decoding ``image`` (an opened, not yet loaded Pillow image, after any ``draft``)
    and thumbnailing it take, from its header: the decoded buffer (four of them for WebP), the reduced
    picture the thumbnail is made from (at most a quarter of it), and for progressive JPEG libjpeg's
    coefficient buffer, kept at full size (``full_size``, the size before ``draft``) whatever the scale of
    decoding."""
    width, height = image.size
    decoded = width * height * _bytes_per_pixel(image.mode)
    if image.format == "WEBP":
        # libwebp's animation decoder keeps two RGBA canvases, hands Pillow a copy as bytes, and Pillow
        # unpacks that into its own buffer: four full-size RGBA pictures at once (measured).
        decoded = width * height * 4 * 4
    cost = decoded + decoded // 4  # the strips and the reduced picture the thumbnail is made from
    if image.format == "JPEG" and image.info.get("progressive"):
        # Two bytes per DCT coefficient, for every component at its own sampling (4:2:0 chroma is a
        # quarter of the luma).
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
        widest = max(layer[1] for layer in layers) or 1
        tallest = max(layer[2] for layer in layers) or 1
        share = sum(layer[1] * layer[2] for layer in layers) / (widest * tallest)
        cost += int(full_size[0] * full_size[1] * share * 2)
    return int(cost)


def probe_image(
    path: Path, *, max_pixels: int, thumbnail_size: int, thumbnail_path: Path, budget: int | None = None
) -> ImageInfo:
    """Decode an image completely and write its thumbnail (JPEG, or PNG if it has transparency).

    Args:
        path: The picture.
        max_pixels: Larger pictures are refused before decoding.
        thumbnail_size: The longer side of the thumbnail.
        thumbnail_path: Where the thumbnail is written.
        budget: Bytes of memory decoding may take (see :func:`decode_cost`); refused before decoding
            beyond it. Unbounded if ``None``.

    Raises:
        MediaError: ``too_large`` beyond ``max_pixels`` or ``budget`` (checked before decoding);
            ``corrupt`` if it is not a JPEG, PNG, GIF, WebP, BMP or TIFF picture (no other Pillow plugin
            is tried) or does not decode.
    """
    try:
        return _decode(path, max_pixels, thumbnail_size, thumbnail_path, budget)
    finally:
        # Here, once the decoded picture is unreachable: glibc would otherwise keep its freed blocks, and
        # one large picture would leave the process that much larger for good.
        _trim()


def _decode(path: Path, max_pixels: int, thumbnail_size: int, thumbnail_path: Path, budget: int | None) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the plugins of accepted formats ever see the bytes (no EPS, PSD, ... parsers).
        with Image.open(path, formats=list(_PIL_FORMATS)) as image:
            media_type = _PIL_FORMATS.get(image.format or "")
            if media_type is None:  # pragma: no cover - Image.open was told the formats
                raise MediaError(f"{image.format} pictures are not accepted as images", "unsupported")
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    f"the picture is {width}x{height} pixels; the most this server accepts is {max_pixels:,}",
                    "too_large",
                )
            if image.format == "JPEG":
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the smallest that covers the thumbnail.
                # At least twice the thumbnail, as Pillow's own thumbnail() asks, for a clean resampling.
                scale = min(1.0, 2 * thumbnail_size / max(width, height))
                target = (max(1, round(width * scale)), max(1, round(height * scale)))
                image.draft(image.mode if image.mode in ("RGB", "L") else None, target)
            if budget is not None and decode_cost(image, (width, height)) > budget:
                raise MediaError(
                    f"the picture ({width}x{height} pixels, {image.mode}) needs more memory to decode than this "
                    f"server allows",
                    "too_large",
                )
            has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            image.load()  # decodes everything: a truncated or damaged file fails here
            orientation = _orientation(image)
            thumbnail = _thumbnail(image, thumbnail_size, has_alpha)
            if orientation in _TRANSPOSE:
                thumbnail = thumbnail.transpose(_TRANSPOSE[orientation])
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if has_alpha:
                thumbnail.save(thumbnail_path, format="PNG", optimize=True)
            else:
                thumbnail.save(thumbnail_path, format="JPEG", quality=80, optimize=True)
            return ImageInfo(
                media_type=media_type,
                width=width,
                height=height,
                thumbnail_type="image/png" if has_alpha else "image/jpeg",
                thumbnail_width=thumbnail.width,
                thumbnail_height=thumbnail.height,
            )
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError("the picture has too many pixels", "too_large") from None
    except UnidentifiedImageError:
        raise MediaError("the bytes are not a picture this server can read", "corrupt") from None
    except Exception as exc:
        # Decoders fail on hostile input in many ways (OSError for truncation, SyntaxError, ValueError,
        # struct.error, ...); each means the same thing here: the picture cannot be read.
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise MediaError(f"the picture is damaged or truncated ({detail})", "corrupt") from None


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return None
    return function


_MALLOC_TRIM = _load_malloc_trim()


def _trim() -> None:
    """Give freed memory back to the system (where the C library can)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _transpositions() -> dict[int, Any]:
    from PIL import Image

    method = Image.Transpose
    return {
        2: method.FLIP_LEFT_RIGHT,
        3: method.ROTATE_180,
        4: method.FLIP_TOP_BOTTOM,
        5: method.TRANSPOSE,
        6: method.ROTATE_270,
        7: method.TRANSVERSE,
        8: method.ROTATE_90,
    }


_TRANSPOSE = _transpositions()
"""EXIF orientation to the transposition that shows the picture upright (as ``ImageOps.exif_transpose``)."""


def _orientation(image: Any) -> int:
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # damaged EXIF does not make the picture unreadable; it just has no orientation
        return 1
    return value if isinstance(value, int) else 1


_STRIP_ROWS = 256
"""Rows of the decoded picture converted and reduced at a time (a strip of a 16,000-pixel-wide RGBA
picture is 16 MB)."""


def _thumbnail(image: Any, size: int, has_alpha: bool) -> Any:
    """The thumbnail, made without a full-size copy of the decoded picture.

    The picture is first reduced by an integer factor (box averaging, as Pillow's ``reducing_gap``
    does) strip by strip: Pillow would otherwise convert the whole picture to premultiplied alpha for
    RGBA, or to RGB for palette and 16-bit pictures, each a full-size copy. The reduced picture, at least
    twice the thumbnail, is then resampled with Lanczos.
    """
    from PIL import Image

    wanted = "RGBA" if has_alpha else "RGB"
    factor = max(1, max(image.size) // (2 * size))
    if factor == 1:
        frame = image.convert(wanted)  # at most four times the thumbnail's area
    else:
        width, height = image.size
        frame = Image.new(wanted, (-(-width // factor), -(-height // factor)))
        rows = max(factor, _STRIP_ROWS // factor * factor)
        for top in range(0, height, rows):
            strip = image.crop((0, top, width, min(height, top + rows)))
            frame.paste(strip.convert(wanted).reduce(factor), (0, top // factor))
    frame.thumbnail((size, size), Image.Resampling.LANCZOS)
    return frame


# Audio and video ----------------------------------------------------------------------------------


_WINDOW = 64 * 1024


class Source:
    """A file read through a byte budget: no input, however crafted, makes a reader read more than
    ``budget`` bytes in all (seeking back and reading again counts again)."""

    def __init__(self, file: BinaryIO, size: int, budget: int = READ_BUDGET) -> None:
        self.size = size
        self.budget = budget
        self.consumed = 0
        """Bytes read so far."""
        self._file = file
        self._window = b""
        self._window_at = 0

    def read(self, position: int, count: int) -> bytes:
        """Up to ``count`` bytes at ``position`` (fewer at the end of the file)."""
        if position < 0 or count < 0:
            raise MediaError("a damaged offset in the media file", "corrupt")
        count = max(0, min(count, self.size - position))
        if self.consumed + count > self.budget:
            raise MediaError("the media file is too complex to read", "corrupt")
        self.consumed += count
        if count == 0:
            return b""
        offset = position - self._window_at
        if offset >= 0 and offset + count <= len(self._window):
            return self._window[offset : offset + count]
        self._file.seek(position)
        if count >= _WINDOW:
            return self._file.read(count)
        # Readers walk headers of a few bytes each, mostly forwards: read a window ahead, once.
        self._window, self._window_at = self._file.read(_WINDOW), position
        return self._window[:count]

    def exact(self, position: int, count: int) -> bytes:
        """Exactly ``count`` bytes at ``position``; ``corrupt`` if the file ends first."""
        data = self.read(position, count)
        if len(data) < count:
            raise MediaError("the media file is truncated", "corrupt")
        return data

    def fileobj(self) -> _SourceFile:
        """A file-like view (``read``, ``seek``, ``tell``) for libraries, reading through the budget."""
        return _SourceFile(self)


class _SourceFile:
    def __init__(self, source: Source) -> None:
        self._source = source
        self._position = 0

    def read(self, count: int = -1) -> bytes:
        if count is None or count < 0:
            count = self._source.size - self._position
        data = self._source.read(self._position, count)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._source.size}[whence]
        if base + offset < 0:
            raise OSError("negative seek")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position


_ISO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "audio/mp4"})
_MATROSKA_TYPES = frozenset({"video/webm", "video/x-matroska", "audio/webm"})


def probe_av(path: Path, media_type: str, *, budget: int = READ_BUDGET) -> AvInfo:
    """Read the duration (and for video the picture size) of an audio or video file.

    Raises:
        MediaError: ``unsupported`` if this server cannot read durations of ``media_type``; ``corrupt``
            if the file does not parse as one, or would take more than ``budget`` bytes of reading.
    """
    if media_type not in _READERS:
        raise MediaError(f"cannot read the duration of {media_type}; send it as a file", "unsupported")
    try:
        with path.open("rb") as file:
            return read_av(Source(file, path.stat().st_size, budget), media_type)
    except OSError as exc:
        raise MediaError(f"cannot read the media file ({exc.strerror})", "corrupt") from None


def read_av(source: Source, media_type: str) -> AvInfo:
    """:func:`probe_av` on an open :class:`Source` (what the fuzz tests drive)."""
    reader = _READERS.get(media_type)
    if reader is None:
        raise MediaError(f"cannot read the duration of {media_type}; send it as a file", "unsupported")
    try:
        info = reader(source)
    except MediaError:
        raise
    except Exception as exc:
        # A reader's own checks should catch every malformation; this is the net under them, so that a
        # missed case is still the client's corrupt file and never a server error.
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise MediaError(f"the {media_type} file is damaged or truncated ({detail})", "corrupt") from None
    return _checked(info, media_type)


def _checked(info: AvInfo, media_type: str) -> AvInfo:
    if not 0 < info.duration_ms <= MAX_DURATION_MS:
        raise MediaError(f"cannot read a plausible duration from this {media_type} file", "corrupt")
    width, height = info.width, info.height
    if width is None or height is None or not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        width = height = None
    return AvInfo(info.duration_ms, info.has_video, width, height)


def _milliseconds(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds <= 0 or seconds * 1000 > MAX_DURATION_MS:
        raise MediaError("the media file claims an impossible duration", "corrupt")
    return round(seconds * 1000)


class _IsoReader:
    """ISO base media files (MP4, MOV, 3GP, M4A): ``moov/mvhd`` for the duration, ``trak`` for tracks."""

    MAX_BOXES = 100_000

    def __init__(self, source: Source) -> None:
        self._source = source
        self._seen = 0

    def _boxes(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        position = start
        while position + 8 <= end:
            self._seen += 1
            if self._seen > self.MAX_BOXES:
                raise MediaError("too many boxes in the media file", "corrupt")
            size, kind = struct.unpack(">I4s", self._source.exact(position, 8))
            offset = 8
            if size == 1:
                if position + 16 > end:
                    raise MediaError("a damaged box in the media file", "corrupt")
                size = struct.unpack(">Q", self._source.exact(position + 8, 8))[0]
                offset = 16
            elif size == 0:
                size = end - position
            if size < offset or position + size > end:
                raise MediaError(f"a damaged {kind.decode('latin-1')!r} box in the media file", "corrupt")
            yield kind, position + offset, position + size
            position += size

    def read(self) -> AvInfo:
        moov = next(((s, e) for kind, s, e in self._boxes(0, self._source.size) if kind == b"moov"), None)
        if moov is None:
            raise MediaError("no 'moov' box: the file is truncated or not a finished recording", "corrupt")
        timescale = duration = 0
        has_video = False
        width = height = None
        for kind, start, end in self._boxes(*moov):
            if kind == b"mvhd":
                version = self._source.exact(start, 1)[0]
                if version == 1:
                    timescale, duration = struct.unpack(">IQ", self._source.exact(start + 20, 12))
                else:
                    timescale, duration = struct.unpack(">II", self._source.exact(start + 12, 8))
            elif kind == b"mvex" and duration == 0:
                for inner, s, _ in self._boxes(start, end):
                    if inner == b"mehd":
                        version = self._source.exact(s, 1)[0]
                        fmt = ">Q" if version == 1 else ">I"
                        duration = struct.unpack(fmt, self._source.exact(s + 4, 8 if version == 1 else 4))[0]
            elif kind == b"trak":
                handler, track_size = self._track(start, end)
                if handler == b"vide" and not has_video:
                    has_video = True
                    if track_size is not None:
                        width, height = track_size
        if timescale <= 0:
            raise MediaError("the media file has no valid 'mvhd' box", "corrupt")
        if duration <= 0:
            raise MediaError("cannot read the duration of this (fragmented) media file", "unsupported")
        return AvInfo(_milliseconds(duration / timescale), has_video, width, height)

    def _track(self, start: int, end: int) -> tuple[bytes | None, tuple[int, int] | None]:
        handler = None
        size = None
        for kind, s, e in self._boxes(start, end):
            if kind == b"tkhd":
                version = self._source.exact(s, 1)[0]
                at = s + (88 if version == 1 else 76)
                w, h = struct.unpack(">II", self._source.exact(at, 8))
                if w >> 16 and h >> 16:
                    size = (w >> 16, h >> 16)
            elif kind == b"mdia":
                for inner, s2, _ in self._boxes(s, e):
                    if inner == b"hdlr":
                        handler = self._source.exact(s2 + 8, 4)
        return handler, size


# Matroska element ids.
_SEGMENT, _INFO, _TRACKS, _CLUSTER = 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489
_TRACK_ENTRY, _TRACK_TYPE, _VIDEO, _PIXEL_WIDTH, _PIXEL_HEIGHT = 0xAE, 0x83, 0xE0, 0xB0, 0xBA
_CLUSTER_TIMECODE, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0xE7, 0xA3, 0xA0, 0xA1
_TOP_LEVEL = frozenset({_INFO, _TRACKS, _CLUSTER, 0x114D9B74, 0x1C53BB6B, 0x1254C367, 0x1941A469, 0x1043A770})
_UNKNOWN = -1


class _MatroskaReader:
    """Matroska and WebM: ``Info/Duration``, or, for live recordings without one (browsers'
    ``MediaRecorder``), the last block's timestamp."""

    MAX_ELEMENTS = 500_000

    def __init__(self, source: Source) -> None:
        self._source = source
        self._seen = 0

    @staticmethod
    def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int] | None:
        """``(value, length)`` of the variable-length integer at ``data[at:]``; ``None`` if cut off."""
        if at >= len(data):
            return None
        byte = data[at]
        if byte == 0:
            raise MediaError("a damaged element in the Matroska file", "corrupt")
        length = 9 - byte.bit_length()
        if at + length > len(data):
            return None
        value = byte if keep_marker else byte & ((0x80 >> (length - 1)) - 1)
        for extra in data[at + 1 : at + length]:
            value = (value << 8) | extra
        if not keep_marker and value == (1 << (7 * length)) - 1:
            return _UNKNOWN, length
        return value, length

    def _header(self, position: int) -> tuple[int, int, int] | None:
        """``(id, data start, size)`` of the element at ``position``; ``None`` at the end of the file."""
        self._seen += 1
        if self._seen > self.MAX_ELEMENTS:
            raise MediaError("too many elements in the Matroska file", "corrupt")
        data = self._source.read(position, 12)  # an id is at most 4 bytes, a size at most 8
        element = self._vint(data, 0, keep_marker=True)
        if element is None:
            return None
        if element[1] > 4:
            raise MediaError("a damaged element id in the Matroska file", "corrupt")
        size = self._vint(data, element[1], keep_marker=False)
        if size is None:
            return None
        return element[0], position + element[1] + size[1], size[0]

    def _elements(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """``(id, data start, data end)`` of the children of an element of known size."""
        position = start
        while position < end:
            header = self._header(position)
            if header is None:
                return
            element, data, size = header
            if size == _UNKNOWN or data + size > end:
                raise MediaError("a damaged element in the Matroska file", "corrupt")
            yield element, data, data + size
            position = data + size

    def _uint(self, start: int, end: int) -> int:
        return int.from_bytes(self._source.read(start, min(end - start, 8)), "big")

    def read(self) -> AvInfo:
        header = self._header(0)
        if header is None or header[0] != 0x1A45DFA3 or header[2] == _UNKNOWN:
            raise MediaError("not a Matroska file", "corrupt")
        segment = self._header(header[1] + header[2])
        if segment is None or segment[0] != _SEGMENT:
            raise MediaError("no Segment in the Matroska file", "corrupt")
        _, position, size = segment
        end = self._source.size if size == _UNKNOWN else min(position + size, self._source.size)
        scale = 1_000_000
        duration: float | None = None
        has_video = False
        width = height = None
        last = -1
        while position < end:
            header = self._header(position)
            if header is None:
                break
            element, data, size = header
            if element == _CLUSTER:
                if duration is not None:
                    break  # Info and Tracks come before the clusters
                cluster_end = end if size == _UNKNOWN else min(data + size, end)
                position, cluster_last = self._cluster(data, cluster_end)
                last = max(last, cluster_last)
                continue
            if size == _UNKNOWN or data + size > self._source.size:
                raise MediaError("the Matroska file is damaged or truncated", "corrupt")
            if element == _INFO:
                for inner, s, e in self._elements(data, data + size):
                    if inner == _TIMECODE_SCALE:
                        scale = self._uint(s, e) or scale
                    elif inner == _DURATION and e - s in (4, 8):
                        raw = self._source.exact(s, e - s)
                        duration = struct.unpack(">f" if e - s == 4 else ">d", raw)[0]
            elif element == _TRACKS:
                for entry, s, e in self._elements(data, data + size):
                    if entry == _TRACK_ENTRY:
                        video, picture = self._track(s, e)
                        if video and not has_video:
                            has_video, (width, height) = True, picture
            position = data + size
        if duration is not None and math.isfinite(duration) and duration > 0:
            milliseconds = _milliseconds(duration * scale / 1e9)
        elif last > 0:
            milliseconds = _milliseconds(last * scale / 1e9)
        else:
            raise MediaError("cannot read a duration from this Matroska file", "corrupt")
        return AvInfo(milliseconds, has_video, width, height)

    def _track(self, start: int, end: int) -> tuple[bool, tuple[int | None, int | None]]:
        is_video = False
        width = height = None
        for element, s, e in self._elements(start, end):
            if element == _TRACK_TYPE:
                is_video = self._uint(s, e) == 1
            elif element == _VIDEO:
                for inner, s2, e2 in self._elements(s, e):
                    if inner == _PIXEL_WIDTH:
                        width = self._uint(s2, e2)
                    elif inner == _PIXEL_HEIGHT:
                        height = self._uint(s2, e2)
        return is_video, (width, height)

    def _cluster(self, start: int, end: int) -> tuple[int, int]:
        """Walk one cluster; returns where it ends and its latest block timestamp (timecode units)."""
        base = 0
        last = -1
        position = start
        while position < end:
            header = self._header(position)
            if header is None:
                return end, last
            element, data, size = header
            if element in _TOP_LEVEL:  # the next cluster (or cues, tags...) after one of unknown size
                return position, last
            if size == _UNKNOWN:
                raise MediaError("a damaged cluster in the Matroska file", "corrupt")
            if element == _CLUSTER_TIMECODE:
                base = self._uint(data, data + size)
            elif element == _SIMPLE_BLOCK:
                last = max(last, base + self._block_time(data))
            elif element == _BLOCK_GROUP:
                for inner, s, _ in self._elements(data, min(data + size, self._source.size)):
                    if inner == _BLOCK:
                        last = max(last, base + self._block_time(s))
            position = data + size
        return end, last

    def _block_time(self, start: int) -> int:
        data = self._source.read(start, 10)  # track number (at most 8 bytes), then a 16-bit time
        track = self._vint(data, 0, keep_marker=False)
        if track is None or len(data) < track[1] + 2:
            return 0
        relative: int = struct.unpack_from(">h", data, track[1])[0]
        return relative


class _OggReader:
    """Ogg (Opus, Vorbis, FLAC, Speex): the codec's rate from the first page, the length from the
    granule position of the last page of the same stream (within the file's last 64 KiB)."""

    PAGE = 27 + 255 + 255 * 255
    """The largest Ogg page."""

    def __init__(self, source: Source) -> None:
        self._source = source

    @staticmethod
    def _page(data: bytes, at: int) -> tuple[int, int, int, bytes] | None:
        """``(granule, serial, length, first packet)`` of the page at ``data[at:]``; ``None`` if it is not
        a whole page."""
        if data[at : at + 5] != b"OggS\x00" or at + 27 > len(data):
            return None
        granule, serial = struct.unpack_from("<qI", data, at + 6)
        segments = data[at + 26]
        if at + 27 + segments > len(data):
            return None
        lacing = data[at + 27 : at + 27 + segments]
        start = at + 27 + segments
        length = 27 + segments + sum(lacing)
        if at + length > len(data):
            return None
        first = 0
        for value in lacing:
            first += value
            if value < 255:
                break
        return granule, serial, length, data[start : start + first]

    def read(self) -> AvInfo:
        head = self._source.read(0, self.PAGE)
        page = self._page(head, 0)
        if page is None:
            raise MediaError("the Ogg file does not start with a whole page", "corrupt")
        _, serial, _, packet = page
        skip = 0
        if packet.startswith(b"OpusHead") and len(packet) >= 19:
            rate, skip = 48_000, struct.unpack_from("<H", packet, 10)[0]
        elif packet.startswith(b"\x01vorbis") and len(packet) >= 16:
            rate = struct.unpack_from("<I", packet, 12)[0]
        elif packet.startswith(b"\x7fFLAC") and len(packet) >= 13 + 18:
            rate = int.from_bytes(packet[13 + 14 : 13 + 17], "big") >> 4  # STREAMINFO's 20-bit sample rate
        elif packet.startswith(b"Speex   ") and len(packet) >= 40:
            rate = struct.unpack_from("<I", packet, 36)[0]
        else:
            raise MediaError("an Ogg stream of a codec this server does not read", "unsupported")
        if rate <= 0:
            raise MediaError("the Ogg stream has no valid sample rate", "corrupt")
        start = max(0, self._source.size - self.PAGE)
        tail = self._source.read(start, self._source.size - start)
        granule = -1
        at = tail.rfind(b"OggS")
        while at >= 0:
            found = self._page(tail, at)
            if found is not None and found[1] == serial and found[0] >= 0:
                granule = found[0]
                break
            at = tail.rfind(b"OggS", 0, at)
        if granule <= skip:
            raise MediaError("cannot read a duration from this Ogg file", "corrupt")
        return AvInfo(_milliseconds((granule - skip) / rate), has_video=False)


def _flac(source: Source) -> AvInfo:
    # "fLaC", then the STREAMINFO block: 4 header bytes, then rate (20 bits) ... total samples (36 bits).
    data = source.exact(0, 4 + 4 + 18)
    if data[:4] != b"fLaC" or data[4] & 0x7F != 0:
        raise MediaError("the FLAC file does not start with its STREAMINFO", "corrupt")
    bits = int.from_bytes(data[18:26], "big")
    rate = bits >> 44
    samples = bits & ((1 << 36) - 1)
    if rate == 0 or samples == 0:
        raise MediaError("the FLAC file does not say its length", "corrupt")
    return AvInfo(_milliseconds(samples / rate), has_video=False)


def _chunks(source: Source, start: int, little: bool) -> Iterator[tuple[bytes, int, int]]:
    """``(id, data start, size)`` of the first chunks of a RIFF or IFF file (at most 64)."""
    position = start
    for _ in range(64):
        header = source.read(position, 8)
        if len(header) < 8:
            return
        kind, size = struct.unpack("<4sI" if little else ">4sI", header)
        yield kind, position + 8, size
        position += 8 + size + (size & 1)  # chunks are padded to an even length


def _wav(source: Source) -> AvInfo:
    header = source.exact(0, 12)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise MediaError("not a RIFF/WAVE file", "corrupt")
    byte_rate = 0
    for kind, start, size in _chunks(source, 12, little=True):
        if kind == b"fmt ":
            if size < 16:
                raise MediaError("a damaged 'fmt ' chunk in the WAV file", "corrupt")
            byte_rate = struct.unpack("<I", source.exact(start + 8, 4))[0]
        elif kind == b"data":
            if byte_rate <= 0:
                raise MediaError("the WAV file has no valid 'fmt ' chunk before its data", "corrupt")
            # A recorder that stopped early leaves the declared size; trust what is there.
            available = min(size, source.size - start)
            return AvInfo(_milliseconds(available / byte_rate), has_video=False)
    raise MediaError("the WAV file has no 'data' chunk", "corrupt")


def _aiff(source: Source) -> AvInfo:
    header = source.exact(0, 12)
    if header[:4] != b"FORM" or header[8:12] not in (b"AIFF", b"AIFC"):
        raise MediaError("not an AIFF file", "corrupt")
    for kind, start, size in _chunks(source, 12, little=False):
        if kind == b"COMM":
            if size < 18:
                raise MediaError("a damaged 'COMM' chunk in the AIFF file", "corrupt")
            comm = source.exact(start, 18)
            frames = struct.unpack_from(">I", comm, 2)[0]
            exponent, mantissa = struct.unpack_from(">HQ", comm, 8)  # an 80-bit extended float
            exponent &= 0x7FFF
            if mantissa == 0 or not 16383 - 64 < exponent < 16383 + 64:
                raise MediaError("the AIFF file has no valid sample rate", "corrupt")
            rate = mantissa * 2.0 ** (exponent - 16383 - 63)
            return AvInfo(_milliseconds(frames / rate), has_video=False)
    raise MediaError("the AIFF file has no 'COMM' chunk", "corrupt")


def _mpeg(source: Source) -> AvInfo:
    from mutagen.mp3 import MPEGInfo

    # The stream information only: mutagen's tag parsers would inflate compressed ID3 frames.
    info = MPEGInfo(source.fileobj())
    return AvInfo(_milliseconds(float(info.length)), has_video=False)


def _aac(source: Source) -> AvInfo:
    from mutagen.aac import AACInfo

    info = AACInfo(source.fileobj())
    return AvInfo(_milliseconds(float(info.length)), has_video=False)


_READERS: dict[str, Callable[[Source], AvInfo]] = {
    **dict.fromkeys(_ISO_TYPES, lambda source: _IsoReader(source).read()),
    **dict.fromkeys(_MATROSKA_TYPES, lambda source: _MatroskaReader(source).read()),
    "audio/ogg": lambda source: _OggReader(source).read(),
    "audio/flac": _flac,
    "audio/wav": _wav,
    "audio/aiff": _aiff,
    "audio/mpeg": _mpeg,
    "audio/aac": _aac,
}
"""The reader of each media type whose duration this server reads."""
