"""Files in the terminal: how media messages read in a listing, and progress bars for transfers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from im_schema.content import ImageContent, MediaContent, VideoContent, VoiceContent
from im_schema.models import Message

from .output import err

__all__ = ["ProgressCallback", "describe_media", "human_size", "media_content", "progress_bar"]

ProgressCallback = Callable[[int, int | None], None]


def human_size(size: int) -> str:
    """``532 B``, ``1.2 KB``, ``3.4 MB``, ``1.1 GB`` (powers of 1,000, as file managers show them)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _duration(milliseconds: int) -> str:
    seconds = round(milliseconds / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def media_content(message: Message) -> MediaContent | None:
    """The file a message carries, if any."""
    content = message.content
    if isinstance(content, MediaContent):
        return content
    return None


def describe_media(message: Message) -> str | None:
    """``[image] cat.jpg · 1.2 MB · 800x600 — caption`` (plain text, not markup), or ``None`` without a file."""
    content = media_content(message)
    if content is None:
        return None
    details = [content.name, human_size(content.size)]
    if isinstance(content, ImageContent):
        details.append(f"{content.width}x{content.height}")
    elif isinstance(content, VoiceContent):
        details.append(_duration(content.duration_ms))
    elif isinstance(content, VideoContent):
        details.append(_duration(content.duration_ms))
        if content.width and content.height:
            details.append(f"{content.width}x{content.height}")
    elif content.media_type != "application/octet-stream":
        details.append(content.media_type)
    caption = f" — {content.caption}" if content.caption else ""
    return f"[{content.kind}] " + " · ".join(details) + caption


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[ProgressCallback]:
    """A progress bar on stderr (shown only on a terminal); yields the SDK's progress callback."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, size: int | None) -> None:
            bar.update(task, completed=done, total=size)

        yield update
