"""The state every command shares: which server and profile, a client built from them, and how the
arguments that name people, groups and conversations are resolved.

- A group argument is ``g:N``, ``N`` or the name of one of my groups (:meth:`Context.group_id`).
- A user argument is a username or a user id (:func:`user_ref`).
- A ``TO`` argument is a username, a user id, a conversation id (``d:1:2``, ``g:7``) or the name of one
  of my groups (:meth:`Context.conversation_for`).
- Server URLs are normalised (:func:`normalize_server`): ``http://host:8080/`` is ``http://host:8080``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from rich.markup import escape

from im_schema.groups import Group
from im_schema.ids import direct_conversation, is_conversation_id
from im_schema.rest import Session
from im_sdk import AsyncClient, Client, IMError, Retry
from im_sdk.errors import UserNotFoundError

from .errors import ExitCode, one_line
from .output import err
from .profiles import DEFAULT_SERVER, Profile, ProfileStore

__all__ = ["Context", "default_device", "fail", "live_device", "normalize_server", "user_ref"]


def fail(message: str, code: int = ExitCode.REFUSED) -> NoReturn:
    """Print a problem to stderr (one line; ``message`` is rich markup) and exit."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def live_device(device: str) -> str:
    """The device id of the live session that goes with ``device`` (``cli-host`` -> ``cli-host-live``)."""
    return f"{device[:59]}-live"


def default_device() -> str:
    """``cli-<hostname>``, reduced to the characters a device id may use."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40].strip("-_")
    return f"cli-{host or 'host'}"


def normalize_server(url: str) -> str:
    """One spelling per server: a scheme (``http://`` if none), a lower-case host, no trailing slash."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="'--server'")
    netloc = parts.netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, ""))


def user_ref(user: str) -> int | str:
    """A user argument for the SDK: digits are a user id, anything else a username."""
    text = user.strip().removeprefix("@")
    return int(text) if text.isdigit() else text


@dataclass
class Context:
    """Global options plus helpers."""

    server: str | None
    profile_name: str
    store: ProfileStore = field(default_factory=ProfileStore)
    _names: dict[int, str] = field(default_factory=dict)
    _groups: list[Group] | None = None

    @classmethod
    def create(cls, server: str | None, profile_name: str | None) -> Context:
        """From the global options: the server normalised, the profile (else the chosen one, else ``default``)."""
        store = ProfileStore()
        name = profile_name or store.current() or "default"
        return cls(server=normalize_server(server) if server else None, profile_name=name, store=store)

    @property
    def profile(self) -> Profile:
        return self.store.get(self.profile_name)

    @property
    def server_url(self) -> str:
        return self.server or normalize_server(self.profile.server or DEFAULT_SERVER)

    def _remember(self, session: Session) -> None:
        profile = self.profile
        profile.server = self.server_url
        profile.username = session.user.username
        profile.user_id = session.user.id
        profile.device = session.device_id
        profile.access_token = session.access_token
        profile.refresh_token = session.refresh_token
        self.store.save(self.profile_name, profile)

    def _remember_live(self, session: Session) -> None:
        profile = self.profile
        profile.live_device = session.device_id
        profile.live_access_token = session.access_token
        profile.live_refresh_token = session.refresh_token
        self.store.save(self.profile_name, profile)

    def client(self, *, logged_in: bool = True, live: bool = False) -> Client:
        """A client for the server; with ``logged_in``, carrying the profile's tokens (with ``live``, those
        of its live device session, for a long-lived connection, when the profile has one)."""
        profile = self.profile
        if live and profile.live_access_token and profile.access_token:
            return Client(
                self.server_url,
                access_token=profile.live_access_token,
                refresh_token=profile.live_refresh_token,
                on_session=self._remember_live,
                state_path=self.store.state_path(self.profile_name),
            )
        if logged_in and not profile.access_token:
            fail(f"not logged in (profile {self.profile_name!r}); run: im login USERNAME", ExitCode.AUTHENTICATION)
        if logged_in and self.server and normalize_server(profile.server) != self.server:
            fail(
                f"profile {self.profile_name!r} is logged in to {profile.server}, not {self.server};"
                " use another --profile",
                ExitCode.AUTHENTICATION,
            )
        return Client(
            self.server_url,
            access_token=profile.access_token if logged_in else None,
            refresh_token=profile.refresh_token if logged_in else None,
            on_session=self._remember,
            retry=Retry(deadline=5.0),  # someone is waiting at the terminal: say "cannot reach" sooner
            # Only events() opens it: `im listen` resumes where it stopped, other commands never touch it.
            state_path=self.store.state_path(self.profile_name) if logged_in else None,
        )

    def async_client(self, *, live: bool = True) -> AsyncClient:
        """A logged-in :class:`AsyncClient` (for ``im chat``), on the live device session when there is one."""
        profile = self.profile
        if not profile.access_token:
            fail(f"not logged in (profile {self.profile_name!r}); run: im login USERNAME", ExitCode.AUTHENTICATION)
        if self.server and normalize_server(profile.server) != self.server:
            fail(f"profile {self.profile_name!r} is logged in to {profile.server}, not {self.server}", ExitCode.USAGE)
        use_live = live and bool(profile.live_access_token)
        return AsyncClient(
            self.server_url,
            access_token=profile.live_access_token if use_live else profile.access_token,
            refresh_token=profile.live_refresh_token if use_live else profile.refresh_token,
            on_session=self._remember_live if use_live else self._remember,
        )

    def logged_out(self) -> None:
        """Forget the profile's tokens and sync cursors."""
        profile = self.profile
        profile.access_token = profile.refresh_token = None
        profile.live_access_token = profile.live_refresh_token = None
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
            fail("not logged in; run: im login USERNAME", ExitCode.AUTHENTICATION)
        return user_id

    def my_groups(self, client: Client) -> list[Group]:
        """My groups (fetched once per command)."""
        if self._groups is None:
            self._groups = client.groups.list()
        return self._groups

    def group_id(self, client: Client, group: str) -> int:
        """A group's id from ``g:N``, ``N`` or the name of one of my groups (exact, then ignoring case)."""
        text = group.strip()
        if text.startswith("g:") and text[2:].isdigit():
            return int(text[2:])
        if text.isdigit():
            return int(text)
        mine = [found for found in self.my_groups(client) if not found.dissolved]
        matches = [found for found in mine if found.name == text] or [
            found for found in mine if found.name.casefold() == text.casefold()
        ]
        if len(matches) == 1:
            return matches[0].id
        if matches:
            ids = ", ".join(found.conversation for found in matches)
            fail(f"{len(matches)} of your groups are called {text!r} ({ids}); name one by its id", ExitCode.USAGE)
        fail(f"none of your groups is called {text!r}; name it by its id (g:N)", ExitCode.REFUSED)

    def group_name(self, client: Client, group_id: int) -> str:
        """A group's name for display (``g:N`` when it is not one of mine)."""
        with contextlib.suppress(IMError):
            for found in self.my_groups(client):
                if found.id == group_id:
                    return found.name
        return f"g:{group_id}"

    def conversation_for(self, client: Client, target: str) -> str:
        """A conversation id from a username, a user id, a conversation id or the name of one of my groups."""
        text = target.strip()
        if is_conversation_id(text):
            return text
        try:
            user = client.get_user(user_ref(text))
        except (UserNotFoundError, ValidationError):
            if not text.isdigit():
                for found in self.my_groups(client):
                    if found.name == text and not found.dissolved:
                        return found.conversation
            if text[:2] in ("d:", "g:"):
                fail(
                    f"{escape(text)} is not a conversation id: "
                    "d:A:B (two different user ids, the smaller first) or g:N",
                    ExitCode.USAGE,
                )
            raise
        self._names[user.id] = user.username
        if user.id == self.me():
            fail("that is you; name someone else", ExitCode.USAGE)
        return direct_conversation(self.me(), user.id)

    def conversation_name(self, client: Client, conversation: str) -> str:
        """A conversation for display: the peer's name, or the group's name."""
        if conversation.startswith("g:") and conversation[2:].isdigit():
            return self.group_name(client, int(conversation[2:]))
        parts = conversation.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            me = self.profile.user_id
            peer = int(parts[2]) if int(parts[1]) == me else int(parts[1])
            return self.name_of(client, peer)
        return conversation

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
        from rich.markup import escape

        message, code = one_line(exc, self.server_url) or (str(exc), ExitCode.REFUSED)
        fail(escape(message), code)
