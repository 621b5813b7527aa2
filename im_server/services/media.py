"""Media messages: turning what a client sends (a blob id and a caption) into what is stored.

Called by :meth:`MessagingService.prepare` for every send that is not text. The sender must have
uploaded the blob, or be able to see a message that carried it (forwarding); everything the message
says about the file (type, size, dimensions, duration, thumbnail) comes from what the server read from
the bytes at upload, never from the client.
"""

from __future__ import annotations

from im_schema.content import (
    FileContent,
    ImageContent,
    MediaContent,
    OutgoingFile,
    OutgoingImage,
    OutgoingMedia,
    OutgoingVideo,
    OutgoingVoice,
    Preview,
    VideoContent,
    VoiceContent,
)
from im_schema.errors import ErrorCode

from ..errors import BadRequest, NotFound, UnsupportedMedia
from ..settings import Settings
from ..storage.files import BlobRecord, FileStore, Usable
from .files import clean_name, default_name

__all__ = ["MediaService"]


def _preview(record: BlobRecord) -> Preview:
    assert record.width is not None
    assert record.height is not None
    return Preview(
        blob=record.id, media_type=record.media_type, width=record.width, height=record.height, size=record.size
    )


class MediaService:
    """Checks the blob of a media send and builds the content to store."""

    def __init__(self, settings: Settings, files: FileStore) -> None:
        self._settings = settings
        self._files = files

    async def _usable(self, sender: int, blob: str) -> Usable:
        usable = await self._files.usable(blob, sender)
        if usable is None:
            raise NotFound(
                f"no file {blob} that you uploaded or that was shared with you", code=ErrorCode.BLOB_NOT_FOUND
            )
        return usable

    async def resolve(self, sender: int, content: OutgoingMedia) -> MediaContent:
        """The content to store for ``content``; raises ``blob_not_found``, ``unsupported_media_type``
        (the blob is not of the kind sent) or ``text_too_long`` (the caption)."""
        if content.caption is not None and len(content.caption) > self._settings.max_text_len:
            raise BadRequest(
                f"the caption is longer than {self._settings.max_text_len} characters", code=ErrorCode.TEXT_TOO_LONG
            )
        usable = await self._usable(sender, content.blob)
        record = usable.blob
        name = (
            clean_name(content.name) or usable.uploaded_as or default_name(content.kind, record.id, record.media_type)
        )
        common = {
            "blob": record.id,
            "name": name,
            "size": record.size,
            "media_type": record.media_type,
            "caption": content.caption,
        }
        if isinstance(content, OutgoingFile):
            return FileContent(**common)
        if isinstance(content, OutgoingImage):
            if record.kind != "image" or record.thumbnail is None:
                raise self._mismatch(record, "an image")
            assert record.width is not None
            assert record.height is not None
            return ImageContent(
                **common, width=record.width, height=record.height, thumbnail=_preview(record.thumbnail)
            )
        if isinstance(content, OutgoingVoice):
            if record.kind != "voice" or record.duration_ms is None:
                raise self._mismatch(record, "a voice note")
            return VoiceContent(**common, duration_ms=record.duration_ms)
        assert isinstance(content, OutgoingVideo)
        if record.kind != "video" or record.duration_ms is None:
            raise self._mismatch(record, "a video")
        poster = None
        if content.poster is not None:
            still = (await self._usable(sender, content.poster)).blob
            if still.kind != "image" or still.thumbnail is None:
                raise self._mismatch(still, "a poster image")
            poster = _preview(still.thumbnail)
        return VideoContent(
            **common, duration_ms=record.duration_ms, width=record.width, height=record.height, poster=poster
        )

    @staticmethod
    def _mismatch(record: BlobRecord, wanted: str) -> UnsupportedMedia:
        return UnsupportedMedia(
            f"file {record.id} is {record.media_type} (uploaded as {record.kind}), not {wanted}; "
            f"upload it as one, or send it as a file"
        )
