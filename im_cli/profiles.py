"""Profiles: a server URL and the tokens of one login, kept in the user's config directory (mode 0600)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

__all__ = ["DEFAULT_SERVER", "Profile", "ProfileStore"]

DEFAULT_SERVER = "http://127.0.0.1:8080"


class Profile(BaseModel):
    """One saved login."""

    server: str = DEFAULT_SERVER
    username: str | None = None
    user_id: int | None = None
    device: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    # A second device session for the long-lived connection of `im listen` and `im chat`: the server
    # does not push a message back to the device that sent it, so messages sent by the one-shot
    # commands (device ``device``) reach the live connection (device ``live_device``) at once.
    live_device: str | None = None
    live_access_token: str | None = None
    live_refresh_token: str | None = None


class ProfileStore:
    """``profiles.json`` under ``IM_CONFIG_DIR`` or the platform's app directory for ``im``."""

    def __init__(self, directory: Path | None = None) -> None:
        configured = os.environ.get("IM_CONFIG_DIR")
        self.directory = directory or (Path(configured) if configured else Path(typer.get_app_dir("im")))
        self.path = self.directory / "profiles.json"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"{self.path} is unreadable: {exc}") from exc
        return data

    def get(self, name: str) -> Profile:
        """A profile (an empty one if it does not exist)."""
        raw = self._load().get(name)
        return Profile.model_validate(raw) if raw else Profile()

    def save(self, name: str, profile: Profile) -> None:
        """Write a profile; the file is created readable by its owner only and replaced atomically."""
        data = self._load()
        data[name] = profile.model_dump()
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".profiles-")
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(data, handle, indent=2)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def names(self) -> list[str]:
        """Saved profile names."""
        return sorted(self._load())

    @property
    def _current_path(self) -> Path:
        return self.directory / "current-profile"

    def current(self) -> str | None:
        """The profile chosen with ``im profile use`` (``None``: none chosen, or it was removed)."""
        try:
            name = self._current_path.read_text().strip()
        except OSError:
            return None
        return name if name and name in self._load() else None

    def use(self, name: str) -> None:
        """Make ``name`` the profile used when neither ``--profile`` nor ``IM_PROFILE`` says otherwise."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._current_path.write_text(name + "\n")

    def remove(self, name: str) -> bool:
        """Forget a profile, its tokens and its sync cursors; ``False`` if there was none of that name."""
        data = self._load()
        if name not in data:
            return False
        del data[name]
        self._write(data)
        self.forget_state(name)
        if self.current() is None:
            self._current_path.unlink(missing_ok=True)
        return True

    def state_path(self, name: str) -> Path:
        """The SQLite file where ``im listen`` keeps the profile's sync cursors (created when first used)."""
        safe = name if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) and name not in (".", "..") else None
        stem = safe or "profile-" + hashlib.sha256(name.encode()).hexdigest()[:16]
        return self.directory / "state" / f"{stem}.sqlite3"

    def forget_state(self, name: str) -> None:
        """Remove the profile's sync cursors (after a logout)."""
        path = self.state_path(name)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
