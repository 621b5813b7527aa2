"""``im chat``: the full-screen terminal client (Textual), on the SDK's AsyncClient."""

from .app import ChatApp

__all__ = ["ChatApp"]
