"""The state every command shares: which server and profile, and a client built from them."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import typer

from im_schema.ids import direct_conversation, is_conversation_id
from im_schema.rest import Session
from im_sdk import Client, IMError, Retry
from im_sdk.errors import AuthenticationError, TransportError

from .output import err
from .profiles import DEFAULT_SERVER, Profile, ProfileStore

__all__ = ["Context", "default_device", "fail"]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a problem to stderr and exit."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def default_device() -> str:
    """``cli-<hostname>``, reduced to the characters a device id may use."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40].strip("-_")
    return f"cli-{host or 'host'}"


@dataclass
class Context:
    """Global options plus helpers."""

    server: str | None
    profile_name: str
    store: ProfileStore = field(default_factory=ProfileStore)
    _names: dict[int, str] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return self.store.get(self.profile_name)

    @property
    def server_url(self) -> str:
        return self.server or self.profile.server or DEFAULT_SERVER

    def _remember(self, session: Session) -> None:
        profile = self.profile
        profile.server = self.server_url
        profile.username = session.user.username
        profile.user_id = session.user.id
        profile.device = session.device_id
        profile.access_token = session.access_token
        profile.refresh_token = session.refresh_token
        self.store.save(self.profile_name, profile)

    def client(self, *, logged_in: bool = True) -> Client:
        """A client for the server; with ``logged_in``, carrying the profile's tokens."""
        profile = self.profile
        if logged_in and not profile.access_token:
            fail(f"not logged in (profile {self.profile_name!r}); run: im login USERNAME")
        if logged_in and self.server and profile.server != self.server:
            fail(f"profile {self.profile_name!r} is logged in to {profile.server}, not {self.server}")
        return Client(
            self.server_url,
            access_token=profile.access_token if logged_in else None,
            refresh_token=profile.refresh_token if logged_in else None,
            on_session=self._remember,
            retry=Retry(deadline=5.0),  # someone is waiting at the terminal: say "cannot reach" sooner
            # Only events() opens it: `im listen` resumes where it stopped, other commands never touch it.
            state_path=self.store.state_path(self.profile_name) if logged_in else None,
        )

    def logged_out(self) -> None:
        """Forget the profile's tokens and sync cursors."""
        profile = self.profile
        profile.access_token = profile.refresh_token = None
        self.store.save(self.profile_name, profile)
        self.store.forget_state(self.profile_name)

    @contextlib.contextmanager
    def session(self) -> Iterator[Client]:
        """A logged-in client; SDK errors become one clear line on stderr and an exit code."""
        with self.client() as client:
            try:
                yield client
            except IMError as exc:
                self.explain(exc)

    def me(self) -> int:
        """The logged-in user's id."""
        user_id = self.profile.user_id
        if user_id is None:
            fail("not logged in; run: im login USERNAME")
        return user_id

    def conversation_for(self, client: Client, target: str) -> str:
        """A conversation id from a username, a user id or a conversation id."""
        if is_conversation_id(target):
            return target
        user = client.get_user(int(target) if target.isdigit() else target)
        self._names[user.id] = user.username
        if user.id == self.me():
            fail("that is you; name someone else")
        return direct_conversation(self.me(), user.id)

    def name_of(self, client: Client, user_id: int) -> str:
        """A username for display (looked up once per command)."""
        if user_id not in self._names:
            try:
                self._names[user_id] = client.get_user(user_id).username
            except IMError:
                self._names[user_id] = f"#{user_id}"
        return self._names[user_id]

    def explain(self, exc: IMError) -> NoReturn:
        """Turn an SDK error into a one-line message and an exit code."""
        if isinstance(exc, TransportError):
            fail(f"cannot reach {self.server_url}: {exc}", 3)
        if isinstance(exc, AuthenticationError):
            fail(f"{exc.message}; run: im login USERNAME", 2)
        fail(str(exc))
