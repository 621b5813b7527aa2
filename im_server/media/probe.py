"""Decoding what the bytes say: image size and thumbnail (Pillow), audio and video durations.

Images are decoded whole, so that a truncated or damaged picture is refused rather than stored. Durations
come from mutagen for audio formats, and from the container itself for ISO media (MP4, MOV, 3GP, M4A)
and Matroska (WebM, MKV), read here by walking their boxes and elements without decoding any frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = ["AvInfo", "ImageInfo", "MediaError", "probe_av", "probe_image"]

Reason = Literal["corrupt", "unsupported", "too_large"]


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


def probe_image(path: Path, *, max_pixels: int, thumbnail_size: int, thumbnail_path: Path) -> ImageInfo:
    """Decode an image completely and write its thumbnail (JPEG, or PNG if it has transparency).

    Raises:
        MediaError: ``unsupported`` for formats other than JPEG, PNG, GIF, WebP, BMP and TIFF;
            ``too_large`` beyond ``max_pixels`` (checked before decoding); ``corrupt`` if it does not
            decode.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            media_type = _PIL_FORMATS.get(image.format or "")
            if media_type is None:
                raise MediaError(f"{image.format} pictures are not accepted as images", "unsupported")
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    f"the picture is {width}x{height} pixels; the most this server accepts is {max_pixels:,}",
                    "too_large",
                )
            image.load()  # decodes everything: a truncated or damaged file fails here
            shown = ImageOps.exif_transpose(image)
            has_alpha = shown.mode in ("RGBA", "LA", "PA") or (shown.mode == "P" and "transparency" in shown.info)
            thumbnail = shown.convert("RGBA" if has_alpha else "RGB")
            thumbnail.thumbnail((thumbnail_size, thumbnail_size), Image.Resampling.LANCZOS)
            if has_alpha:
                thumbnail.save(thumbnail_path, format="PNG", optimize=True)
            else:
                thumbnail.save(thumbnail_path, format="JPEG", quality=80, optimize=True)
            return ImageInfo(
                media_type=media_type,
                width=shown.width,
                height=shown.height,
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


# Audio and video ----------------------------------------------------------------------------------

_ISO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "audio/mp4"})
_MATROSKA_TYPES = frozenset({"video/webm", "video/x-matroska", "audio/webm"})
_MUTAGEN_TYPES = frozenset({"audio/mpeg", "audio/ogg", "audio/flac", "audio/wav", "audio/aiff", "audio/aac"})


def probe_av(path: Path, media_type: str) -> AvInfo:
    """Read the duration (and for video the picture size) of an audio or video file.

    Raises:
        MediaError: ``unsupported`` if this server cannot read durations of ``media_type``; ``corrupt``
            if the file does not parse as one.
    """
    if media_type in _ISO_TYPES:
        with path.open("rb") as file:
            return _IsoReader(file, path.stat().st_size).read()
    if media_type in _MATROSKA_TYPES:
        with path.open("rb") as file:
            return _MatroskaReader(file, path.stat().st_size).read()
    if media_type in _MUTAGEN_TYPES:
        return _mutagen(path, media_type)
    raise MediaError(f"cannot read the duration of {media_type}; send it as a file", "unsupported")


def _mutagen(path: Path, media_type: str) -> AvInfo:
    import mutagen
    from mutagen.aac import AAC

    try:
        # ADTS streams have no header mutagen's detection recognizes; open them as AAC directly.
        found = AAC(path) if media_type == "audio/aac" else mutagen.File(path)  # type: ignore[no-untyped-call]  # AAC.__init__ is unannotated
    except Exception as exc:  # mutagen raises its own errors and, on hostile input, stdlib ones too
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise MediaError(f"the audio is damaged or truncated ({detail})", "corrupt") from None
    length = getattr(getattr(found, "info", None), "length", None)
    if found is None or not length or length <= 0:
        raise MediaError(f"cannot read a duration from this {media_type} file", "corrupt")
    return AvInfo(duration_ms=round(length * 1000), has_video=False)


class _IsoReader:
    """ISO base media files (MP4, MOV, 3GP, M4A): ``moov/mvhd`` for the duration, ``trak`` for tracks."""

    MAX_BOXES = 100_000

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._seen = 0

    def _boxes(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        position = start
        while position + 8 <= end:
            self._seen += 1
            if self._seen > self.MAX_BOXES:
                raise MediaError("too many boxes in the media file", "corrupt")
            self._file.seek(position)
            header = self._file.read(8)
            size, kind = struct.unpack(">I4s", header)
            offset = 8
            if size == 1:
                size = struct.unpack(">Q", self._file.read(8))[0]
                offset = 16
            elif size == 0:
                size = end - position
            if size < offset or position + size > end:
                raise MediaError(f"a damaged {kind.decode('latin-1')!r} box in the media file", "corrupt")
            yield kind, position + offset, position + size
            position += size

    def _read(self, start: int, count: int) -> bytes:
        self._file.seek(start)
        data = self._file.read(count)
        if len(data) < count:
            raise MediaError("the media file is truncated", "corrupt")
        return data

    def read(self) -> AvInfo:
        moov = next(((s, e) for kind, s, e in self._boxes(0, self._size) if kind == b"moov"), None)
        if moov is None:
            raise MediaError("no 'moov' box: the file is truncated or not a finished recording", "corrupt")
        timescale = duration = 0
        has_video = False
        width = height = None
        for kind, start, end in self._boxes(*moov):
            if kind == b"mvhd":
                version = self._read(start, 1)[0]
                if version == 1:
                    timescale, duration = struct.unpack(">IQ", self._read(start + 20, 12))
                else:
                    timescale, duration = struct.unpack(">II", self._read(start + 12, 8))
            elif kind == b"mvex" and duration == 0:
                for inner, s, _ in self._boxes(start, end):
                    if inner == b"mehd":
                        version = self._read(s, 1)[0]
                        fmt = ">Q" if version == 1 else ">I"
                        duration = struct.unpack(fmt, self._read(s + 4, 8 if version == 1 else 4))[0]
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
        return AvInfo(round(duration * 1000 / timescale), has_video, width, height)

    def _track(self, start: int, end: int) -> tuple[bytes | None, tuple[int, int] | None]:
        handler = None
        size = None
        for kind, s, e in self._boxes(start, end):
            if kind == b"tkhd":
                version = self._read(s, 1)[0]
                at = s + (88 if version == 1 else 76)
                w, h = struct.unpack(">II", self._read(at, 8))
                if w >> 16 and h >> 16:
                    size = (w >> 16, h >> 16)
            elif kind == b"mdia":
                for inner, s2, _ in self._boxes(s, e):
                    if inner == b"hdlr":
                        handler = self._read(s2 + 8, 4)
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

    MAX_ELEMENTS = 2_000_000

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._seen = 0

    def _vint(self, keep_marker: bool) -> tuple[int, int]:
        first = self._file.read(1)
        if not first:
            raise EOFError
        byte = first[0]
        length = 1
        mask = 0x80
        while length <= 8 and not byte & mask:
            length += 1
            mask >>= 1
        if length > 8:
            raise MediaError("a damaged element in the Matroska file", "corrupt")
        rest = self._file.read(length - 1)
        if len(rest) < length - 1:
            raise EOFError
        value = byte if keep_marker else byte & (mask - 1)
        for extra in rest:
            value = (value << 8) | extra
        if not keep_marker and value == (1 << (7 * length)) - 1:
            return _UNKNOWN, length
        return value, length

    def _header(self, position: int) -> tuple[int, int, int] | None:
        """``(id, data start, size)`` of the element at ``position``; ``None`` at the end of the file."""
        self._seen += 1
        if self._seen > self.MAX_ELEMENTS:
            raise MediaError("too many elements in the Matroska file", "corrupt")
        self._file.seek(position)
        try:
            element, id_length = self._vint(keep_marker=True)
            size, size_length = self._vint(keep_marker=False)
        except EOFError:
            return None
        return element, position + id_length + size_length, size

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
        self._file.seek(start)
        return int.from_bytes(self._file.read(min(end - start, 8)), "big")

    def read(self) -> AvInfo:
        header = self._header(0)
        if header is None or header[0] != 0x1A45DFA3 or header[2] == _UNKNOWN:
            raise MediaError("not a Matroska file", "corrupt")
        segment = self._header(header[1] + header[2])
        if segment is None or segment[0] != _SEGMENT:
            raise MediaError("no Segment in the Matroska file", "corrupt")
        _, position, size = segment
        end = self._size if size == _UNKNOWN else min(position + size, self._size)
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
            if size == _UNKNOWN or data + size > self._size:
                raise MediaError("the Matroska file is damaged or truncated", "corrupt")
            if element == _INFO:
                for inner, s, e in self._elements(data, data + size):
                    if inner == _TIMECODE_SCALE:
                        scale = self._uint(s, e) or scale
                    elif inner == _DURATION and e - s in (4, 8):
                        self._file.seek(s)
                        duration = struct.unpack(">f" if e - s == 4 else ">d", self._file.read(e - s))[0]
            elif element == _TRACKS:
                for entry, s, e in self._elements(data, data + size):
                    if entry == _TRACK_ENTRY:
                        video, picture = self._track(s, e)
                        if video and not has_video:
                            has_video, (width, height) = True, picture
            position = data + size
        if duration is not None and duration > 0:
            milliseconds = round(duration * scale / 1_000_000)
        elif last >= 0:
            milliseconds = round(last * scale / 1_000_000)
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
                for inner, s, _ in self._elements(data, min(data + size, self._size)):
                    if inner == _BLOCK:
                        last = max(last, base + self._block_time(s))
            position = data + size
        return end, last

    def _block_time(self, start: int) -> int:
        self._file.seek(start)
        self._vint(keep_marker=False)  # track number
        raw = self._file.read(2)
        if len(raw) < 2:
            return 0
        relative: int = struct.unpack(">h", raw)[0]
        return relative
