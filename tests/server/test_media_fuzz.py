"""Property-based fuzzing of the hand-written readers (ISO media, Matroska, Ogg, FLAC, WAV, AIFF), the
mutagen-backed ones (MP3, AAC), the picture prober and the sniffer.

The property, for any bytes: a result or the module's own error (:class:`MediaError`; a media type for
the sniffer), never another exception, and never more bytes read than the reader's budget. Inputs are
random bytes and, to reach deep into each format, valid samples with random bytes overwritten, inserted
or cut off.

CI runs a bounded number of examples per test; a longer run raises it, e.g.::

    IM_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q tests/server/test_media_fuzz.py
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from im_server.media import MediaError, probe_image, sniff
from im_server.media.probe import AvInfo, Source, read_av
from im_server.media.sniff import ZIP_READ_BUDGET, zip_type
from tests.support import media

EXAMPLES = int(os.environ.get("IM_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="IM_FUZZ_EXAMPLES" not in os.environ,  # CI: the same examples every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BUDGET = 256 * 1024
"""A tight read budget, so that the property is checked where it bites."""


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A valid sample with a few random edits: bytes overwritten, inserted, or the end cut off."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        patch = draw(st.binary(min_size=1, max_size=8))
        if draw(st.booleans()):
            data[at : at + len(patch)] = patch
        else:
            data[at:at] = patch
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def _inputs(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    prefixes = sorted({sample[:8] for sample in samples})
    random = st.tuples(st.sampled_from(prefixes), st.binary(max_size=512)).map(lambda parts: parts[0] + parts[1])
    return mutated(samples) | random | st.binary(max_size=256)


AV_SAMPLES: dict[str, list[bytes]] = {
    "video/mp4": [media.mp4(), media.mp4(1234, video=False), media.mp4(10**6, 1920, 1080)],
    "video/quicktime": [media.mov()],
    "audio/mp4": [media.m4a()],
    "video/webm": [media.webm(), media.webm(None, blocks=3), media.webm(500, video=False)],
    "video/x-matroska": [media.mkv(), media.mkv(None)],
    "audio/ogg": [media.ogg_opus(), media.ogg_opus(0.5)],
    "audio/flac": [media.flac()],
    "audio/wav": [media.wav(0.1)],
    "audio/aiff": [media.aiff(0.1)],
    "audio/mpeg": [media.mp3(0.2)],
    "audio/aac": [media.aac(0.1)],
}


@pytest.mark.parametrize("media_type", list(AV_SAMPLES))
def test_av_readers_give_a_result_or_a_media_error_within_their_budget(media_type):
    @FUZZ
    @given(data=_inputs(AV_SAMPLES[media_type]))
    def check(data: bytes) -> None:
        source = Source(io.BytesIO(data), len(data), budget=BUDGET)
        try:
            info = read_av(source, media_type)
        except MediaError:
            pass
        else:
            assert isinstance(info, AvInfo)
            assert 0 < info.duration_ms < 2**31
            assert info.width is None or 0 < info.width <= 65_535
        assert source.consumed <= BUDGET

    check()


IMAGE_SAMPLES = [
    media.png(24, 16),
    media.png(20, 20, alpha=True),
    media.jpeg(24, 16, orientation=6),
    media.picture("GIF", 24, 16, "P"),
    media.picture("WEBP", 24, 16),
    media.picture("BMP", 8, 8),
    media.picture("TIFF", 8, 8),
]


def test_the_picture_prober_gives_a_result_or_a_media_error():
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)

        @FUZZ
        @given(data=mutated(IMAGE_SAMPLES))
        def check(data: bytes) -> None:
            path = folder / "in"
            path.write_bytes(data)
            try:
                info = probe_image(
                    path, max_pixels=1_000_000, thumbnail_size=32, thumbnail_path=folder / "t", budget=16 << 20
                )
            except MediaError:
                return
            assert info.thumbnail_width <= 32 and info.thumbnail_height <= 32

        check()


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


ZIP_SAMPLES = [
    _zip({"mimetype": b"application/epub+zip", "a.xhtml": b"<p/>"}),
    _zip({"mimetype": b"application/vnd.oasis.opendocument.text"}, zipfile.ZIP_DEFLATED),
    _zip({"[Content_Types].xml": b"", "word/document.xml": b"<w/>"}),
    _zip({"AndroidManifest.xml": b"", "classes.dex": b""}),
]


@FUZZ
@given(data=_inputs(ZIP_SAMPLES))
def test_zip_containers_give_a_type_within_the_read_budget(data):
    media_type, consumed = zip_type(io.BytesIO(data), len(data))
    assert media_type.startswith("application/")
    assert consumed <= ZIP_READ_BUDGET


SNIFF_SAMPLES = [sample for samples in AV_SAMPLES.values() for sample in samples] + IMAGE_SAMPLES + ZIP_SAMPLES


@FUZZ
@given(data=_inputs(SNIFF_SAMPLES) | st.binary(max_size=9000))
def test_the_sniffer_gives_a_media_type_for_any_bytes(data):
    media_type = sniff(data[:8192])
    assert "/" in media_type
