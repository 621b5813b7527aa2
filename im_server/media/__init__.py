"""Reading what uploaded bytes are: type sniffing, image decoding and thumbnails, audio/video durations.

Nothing here trusts what a client says about its file; everything is read from the bytes, by readers
bounded in what they read, inflate and decode whatever the bytes claim, and that fail only with
:class:`MediaError`. The functions are synchronous and CPU- or disk-bound: callers run them in a worker
thread.
"""

from __future__ import annotations

from .probe import AvInfo, ImageInfo, MediaError, probe_av, probe_image
from .sniff import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES, extension_for, sniff

__all__ = [
    "AUDIO_TYPES",
    "IMAGE_TYPES",
    "VIDEO_TYPES",
    "AvInfo",
    "ImageInfo",
    "MediaError",
    "extension_for",
    "probe_av",
    "probe_image",
    "sniff",
]
