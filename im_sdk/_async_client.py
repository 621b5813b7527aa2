"""The asynchronous client.

The blocking client (``im_sdk/_sync_client.py``) is generated from ``im_sdk/_async_client.py`` by
``tools/unasync.py``; the I/O primitives that differ come from ``im_sdk/_async_io.py`` and
``im_sdk/_sync_io.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from im_schema.admin import BotLoginRequest
from im_schema.buttons import Button
from im_schema.content import MediaKind
from im_schema.files import FILES_PATH, DownloadRequest, FileLimits, FileLimitsRequest, Upload, UploadRequest
from im_schema.frames import (
    SERVER_FRAME_TYPES,
    AuthFrame,
    ErrorFrame,
    MessageFrame,
    NoticeFrame,
    ReadyFrame,
    ResyncFrame,
    server_frames,
)
from im_schema.ids import is_conversation_id
from im_schema.lifecycle import (
    EditRequest,
    Presence,
    PresenceRequest,
    RecallRequest,
    Receipts,
    ReceiptsRequest,
    TypingRequest,
)
from im_schema.limits import HISTORY_PAGE_MAX
from im_schema.models import ConversationSummary, Message, ReadState, User
from im_schema.presses import (
    AckPressRequest,
    BotCommand,
    CommandList,
    CommandsRequest,
    PendingPressesRequest,
    Press,
    PressList,
    PressRequest,
    SetCommandsRequest,
)
from im_schema.rest import (
    ConversationPage,
    ConversationsRequest,
    GatewayRequest,
    GetUserRequest,
    HistoryRequest,
    LoginRequest,
    LogoutRequest,
    MarkReadRequest,
    Me,
    MessagePage,
    RefreshRequest,
    RegisterRequest,
    Request,
    SendMessageRequest,
    Session,
    WhoAmIRequest,
)
from im_schema.streams import AppendStreamRequest, FinishStreamRequest, OpenStreamRequest, StreamProgress

from ._async_io import ClientConnection, Lock, Reply, chunks, open_gateway, receive, sleep, to_thread, wait_closed
from ._base import error_from, is_idempotent, new_client_msg_id, parse, prepare, send_text_request, tls_context
from ._devices import AsyncDevices
from ._files import (
    CHUNK_SIZE,
    DownloadPlan,
    Progress,
    Source,
    check_caption,
    media_request,
    open_source,
    transfer_timeout,
)
from ._people import AsyncFriends, AsyncGroups
from ._session import SessionState
from ._streams import AsyncMessageStream
from .errors import APIError, AuthenticationError, IMError, ProtocolError, TokenExpiredError, TransportError
from .events import Event, MessageEvent, UnknownEvent, to_event
from .realtime.backoff import Backoff
from .realtime.policy import (
    EARLY_FRAMES,
    EARLY_FRAMES_MAX,
    Gateways,
    RefreshToken,
    ResyncSchedule,
    auth_answer,
    classify_close,
    reconnect_delay,
)
from .realtime.protocol import AskOverHttp, Deliver, Fetch, SendAgain, StartFrom, SyncEngine, SyncRequests
from .realtime.store import CursorKeeper
from .retry import Retry

__all__ = ["AsyncClient"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

CATCH_UP_PAGE = 500
"""Conversations per "conversations since" request of a catch-up."""
CATCH_UP_RECENT = 20
"""Seqs of newest messages each conversation of a catch-up carries (see ``ConversationsRequest.recent``)."""
SYNC_ANSWER_TIMEOUT = 30.0
"""Seconds a catch-up waits for the answer to its ``sync`` frame before giving the connection up (the
gateway answers ``unavailable`` well before, when no API node does)."""


class AsyncClient:
    """An asynchronous client for one account on one device.

    ::

        async with AsyncClient("http://localhost:8080") as client:
            await client.login("alice", "secret", device="laptop")
            await client.send_text("bob", "hello")
            async for event in client.events():
                print(event.sender, event.text)

    Args:
        server_url: The API's base URL.
        access_token: Resume a session without logging in (with ``refresh_token`` to renew it).
        refresh_token: Renews the access token when it expires.
        timeout: Seconds for each HTTP request.
        backoff: Reconnect delays of :meth:`events`.
        retry: How failed requests are retried (see :mod:`im_sdk.retry`); by default transport errors,
            ``502``, ``503``, ``504`` and ``unavailable`` are retried with jittered backoff for up to 30 s,
            honouring ``Retry-After``, for the requests that can be repeated safely.
        on_session: Called with every new :class:`~im_schema.rest.Session` (login and refresh), e.g. to
            persist the rotated tokens.
        state_path: A SQLite file where :meth:`events` keeps this device's sync cursors, so that a
            restarted client resumes where it stopped, without yielding anything twice or fetching
            history it has seen (see :mod:`im_sdk.realtime.store`).
        resync_after: Seconds without any frame from the gateway after which :meth:`events` checks for
            missed messages anyway ("conversations since" its cursor), as a last resort; ``None`` never.
        transport: An httpx transport, for tests.
    """

    def __init__(
        self,
        server_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        retry: Retry | None = None,
        on_session: Callable[[Session], None] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        resync_after: float | None = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.server_url, timeout=timeout, transport=transport, verify=tls_context()
        )
        self._state = SessionState(access_token, refresh_token, on_session)
        self._backoff = backoff or Backoff()
        self._gateways = Gateways()
        """Where realtime connections go: the API's assignment, and its alternates after a loss."""
        self._retry = retry or Retry()
        self._resync_after = resync_after
        self._refreshing = Lock()
        # Made now, not when events() starts, so that a message sent before that is known as our own.
        self._engine: SyncEngine | None = SyncEngine()
        self._events_started = False
        self._cursors = CursorKeeper(state_path, self.server_url)
        self.friends = AsyncFriends(self)
        """Friends, requests and blocks."""
        self.groups = AsyncGroups(self)
        """Every group operation."""
        self.devices = AsyncDevices(self)
        """My logged-in devices: list them, log them out."""

    # Plumbing -------------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool (and save the sync cursors, with ``state_path``)."""
        self._cursors.close()
        await self._http.aclose()

    @property
    def session(self) -> Session | None:
        """The tokens and account of the last login or refresh."""
        return self._state.session

    async def _send(self, request: Request[R]) -> httpx.Response:
        prepared = prepare(request)
        headers = self._state.headers() if prepared.auth else {}
        try:
            return await self._http.request(
                prepared.method, prepared.path, params=prepared.params, json=prepared.json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{prepared.method} {prepared.path}: {exc!r}") from exc

    async def request(self, request: Request[R]) -> R:
        """Send any request model and return its response model.

        An expired token is refreshed once; transport errors, ``502``, ``503``, ``504`` and
        ``unavailable`` are retried as the client's :class:`~im_sdk.retry.Retry` says, for requests that
        can be repeated safely (and for any request that surely never left).
        """
        attempts = self._retry.start()
        idempotent = is_idempotent(request)
        refreshed = False
        while True:
            token = self._state.access_token
            try:
                response = await self._send(request)
                return parse(request, response.status_code, response.content, response.headers)
            except TokenExpiredError:
                if refreshed or not (request.endpoint.auth and self._state.refresh_token):
                    raise
                refreshed = True
                await self._refresh_once(token)
            except IMError as exc:
                pause = attempts.pause(exc, idempotent=idempotent)
                if pause is None:
                    raise
                log.info("%s %s failed (%s); retrying in %.2fs", request.endpoint.method, request.path(), exc, pause)
                await sleep(pause)

    async def _refresh_once(self, stale: str | None) -> None:
        # Concurrent calls that all saw the same expired token refresh it once.
        async with self._refreshing:
            if self._state.access_token == stale:
                await self.refresh()

    # Accounts -------------------------------------------------------------------------------------

    async def register(self, username: str, password: str, *, display_name: str | None = None) -> User:
        """Create an account (this does not log in)."""
        return await self.request(RegisterRequest(username=username, password=password, display_name=display_name))

    async def login(self, username: str, password: str, *, device: str = "default") -> Session:
        """Log this device in; later calls use its tokens."""
        session = await self.request(LoginRequest(username=username, password=password, device=device))
        self._state.update(session)
        return session

    async def login_bot(self, token: str, *, device: str = "bot") -> Session:
        """Log a bot device in with its token (``im admin bots create``); later calls use its session."""
        session = await self.request(BotLoginRequest(token=token, device=device))
        self._state.update(session)
        return session

    async def refresh(self) -> Session:
        """Renew the tokens with the refresh token."""
        token = self._state.refresh_token
        if token is None:
            raise AuthenticationError("unauthorized", "no refresh token; log in again")
        session = await self.request(RefreshRequest(refresh_token=token))
        self._state.update(session)
        return session

    async def logout(self) -> None:
        """End this device's session on the server and forget the tokens."""
        await self.request(LogoutRequest())
        self._state.clear()

    async def whoami(self) -> Me:
        """The logged-in account and device."""
        return await self.request(WhoAmIRequest())

    async def get_user(self, user: int | str) -> User:
        """A user's profile, by id or username."""
        return await self.request(GetUserRequest(user=user))

    # Messages -------------------------------------------------------------------------------------

    async def send_text(
        self,
        to: int | str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
        buttons: Sequence[Button | tuple[str, str]] | None = None,
    ) -> Message:
        """Send text to a user (id or username) or into a conversation (``d:1:2``, ``g:7``).

        ``reply_to`` quotes a message of the conversation by seq; ``mentions`` names members to notify
        and ``mention_all`` notifies everyone (group owners and admins); ``buttons`` (up to 8,
        :class:`~im_schema.buttons.Button` or ``(id, label)`` pairs) are quick replies whose presses come
        back to this account (see :meth:`pending_presses`). The message is stored when this returns.
        After a transport error, ``502``, ``503``, ``504`` or ``unavailable`` the same ``client_msg_id``
        is sent again (see ``retry``), so a retry never stores a message twice.
        """
        request = send_text_request(
            to, text, client_msg_id, reply_to=reply_to, mentions=mentions, mention_all=mention_all, buttons=buttons
        )
        return await self._send_message(request)

    async def press(self, message: Message, button: str) -> Press:
        """Press a button of a message (see :meth:`press_at`)."""
        return await self.press_at(message.conversation, message.seq, button)

    async def press_at(self, conversation: str, seq: int, button: str) -> Press:
        """Press the button ``button`` (its id) of message ``seq``: the press goes to the message's sender.
        Pressing again while the sender has not handled the press returns the same press."""
        return await self.request(PressRequest(conversation=conversation, seq=seq, button=button))

    async def pending_presses(self, *, after: int = 0, limit: int = 100) -> PressList:
        """Presses of my messages' buttons that I have not acknowledged, oldest first."""
        return await self.request(PendingPressesRequest(after=after, limit=limit))

    async def ack_press(self, press: int) -> None:
        """Mark a press of my message's button handled: it is no longer listed."""
        await self.request(AckPressRequest(press=press))

    async def set_commands(self, commands: Sequence[BotCommand]) -> CommandList:
        """Declare the commands this account (a bot) answers, replacing the previous list."""
        return await self.request(SetCommandsRequest(commands=list(commands)))

    async def commands(self, user: int | str) -> list[BotCommand]:
        """The commands a user (a bot) declared."""
        return (await self.request(CommandsRequest(user=user))).commands

    async def recall(self, conversation: str, seq: int) -> Message:
        """Recall a message (mine within the recall window; any, as a group owner or admin)."""
        return await self.request(RecallRequest(conversation=conversation, seq=seq))

    async def edit(self, conversation: str, seq: int, text: str) -> Message:
        """Replace the text of my message (within the edit window)."""
        return await self.request(EditRequest(conversation=conversation, seq=seq, text=text))

    async def receipts(self, conversation: str, seq: int) -> Receipts:
        """Who has read a message, and who has not."""
        return await self.request(ReceiptsRequest(conversation=conversation, seq=seq))

    async def typing(self, conversation: str, active: bool = True) -> None:
        """Tell the others I am typing (or stopped)."""
        await self.request(TypingRequest(conversation=conversation, active=active))

    async def presence(self, user: int | str) -> Presence:
        """A friend's or fellow member's presence: online, or when last seen."""
        return await self.request(PresenceRequest(user=user))

    # Streaming messages ---------------------------------------------------------------------------

    def stream(
        self,
        to: int | str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
        interval: float = 0.2,
    ) -> AsyncMessageStream:
        """A streaming message to a user or into a conversation, written piece by piece::

            async with client.stream("g:7") as stream:
                await stream.append("Hello")
                await stream.append(", world")

        Opened at the first append, finished when the block ends (abandoned if it ends by an exception).
        Appends reach the server at most once per ``interval`` seconds. See
        :class:`~im_sdk.AsyncMessageStream`.
        """
        return AsyncMessageStream(
            self,
            to,
            client_msg_id=client_msg_id,
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
            interval=interval,
        )

    async def open_stream(
        self,
        to: int | str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
    ) -> Message:
        """Open a streaming message with its first ``text``; it is stored (with its seq) when this returns.

        The same ``client_msg_id`` returns the stored message instead of opening another (it may be closed
        by then: see :attr:`~im_schema.models.Message.stream`).
        """
        key = client_msg_id or new_client_msg_id()
        extras = {"reply_to": reply_to, "mentions": mentions or [], "mention_all": mention_all}
        if isinstance(to, str) and is_conversation_id(to):
            request = OpenStreamRequest(conversation=to, client_msg_id=key, text=text, **extras)
        else:
            request = OpenStreamRequest(to=to, client_msg_id=key, text=text, **extras)
        engine = self._engine
        if engine is not None:
            engine.expect_own(key)
        try:
            message = await self.request(request)  # retried with the same client_msg_id
        except BaseException:
            if engine is not None:
                engine.forget_own(key)
            raise
        if engine is not None:
            engine.mark_own(message)
        return message

    async def append_stream(self, conversation: str, seq: int, offset: int, text: str) -> StreamProgress:
        """Write ``text`` at ``offset`` of my open streaming message (``offset`` = its length appends)."""
        return await self.request(AppendStreamRequest(conversation=conversation, seq=seq, offset=offset, text=text))

    async def finish_stream(
        self,
        conversation: str,
        seq: int,
        *,
        offset: int | None = None,
        text: str | None = None,
        abandon: bool = False,
    ) -> Message:
        """Close my streaming message (writing ``text`` at ``offset`` first, if given); ``abandon`` marks it
        cut short. Returns the final message."""
        return await self.request(
            FinishStreamRequest(conversation=conversation, seq=seq, offset=offset, text=text, abandon=abandon)
        )

    async def _send_message(self, request: SendMessageRequest) -> Message:
        # Retried with the same client_msg_id (stored once), and announced to the sync engine so that
        # events() never hands this client its own message.
        engine = self._engine
        if engine is not None:
            engine.expect_own(request.client_msg_id)
        try:
            message = await self.request(request)  # retried with the same client_msg_id
        except BaseException:
            if engine is not None:
                engine.forget_own(request.client_msg_id)
            raise
        if engine is not None:
            engine.mark_own(message)
        return message

    async def conversations_page(
        self, *, since: str | None = None, limit: int = 200, recent: int = 0
    ) -> ConversationPage:
        """One page of conversations changed after ``since``, each with its messages of the last ``recent``
        seqs (at most :data:`~im_schema.limits.RECENT_MAX`)."""
        return await self.request(ConversationsRequest(since=since, limit=limit, recent=recent or None))

    async def conversations(self) -> list[ConversationSummary]:
        """All my conversations, most recently active first."""
        found: dict[str, ConversationSummary] = {}
        since: str | None = None
        while True:
            page = await self.conversations_page(since=since, limit=500)
            found.update((summary.id, summary) for summary in page.conversations)
            since = page.cursor
            if not page.has_more:
                break
        return sorted(found.values(), key=lambda summary: summary.updated_at, reverse=True)

    async def history(
        self, conversation: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> MessagePage:
        """Messages of a conversation: after ``after``, or the latest before ``before`` (exclusive)."""
        return await self.request(HistoryRequest(conversation=conversation, after=after, before=before, limit=limit))

    async def mark_read(self, conversation: str, seq: int) -> ReadState:
        """Mark the conversation read up to ``seq`` on all my devices."""
        return await self.request(MarkReadRequest(conversation=conversation, seq=seq))

    # Files ----------------------------------------------------------------------------------------

    async def file_limits(self) -> FileLimits:
        """What the server accepts: the largest upload of each kind and the refused types."""
        return await self.request(FileLimitsRequest())

    async def upload(
        self,
        source: Source,
        *,
        kind: MediaKind | None = None,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Upload:
        """Store a file on the server, streamed, and return what the server read from its bytes.

        Args:
            source: A path, the bytes, or a binary file object (read from its current position).
            kind: ``image``, ``file``, ``voice`` or ``video``: what the bytes must be. The server picks
                from the content when omitted.
            name: The file name (a path's own name by default).
            progress: Called with ``(bytes sent, total)`` as the upload goes out.

        Identical bytes are stored once, so uploading again is harmless: failures are retried like
        :meth:`request`'s (if the source can seek back) and an expired token is refreshed once.
        """
        spool = await to_thread(open_source, source, name)
        try:
            request = UploadRequest(kind=kind, name=spool.name)
            attempts = self._retry.start()
            refreshed = False
            while True:
                token = self._state.access_token
                headers = {**self._state.headers(), "Content-Type": "application/octet-stream"}
                if spool.size is not None:
                    headers["Content-Length"] = str(spool.size)
                try:
                    response = await self._http.post(
                        FILES_PATH,
                        params=request.payload(),
                        content=chunks(spool, progress),
                        headers=headers,
                        timeout=transfer_timeout(self._http.timeout),
                    )
                    return parse(request, response.status_code, response.content, response.headers)
                except httpx.HTTPError as exc:
                    error: IMError = TransportError(f"POST {FILES_PATH}: {exc!r}")
                    error.__cause__ = exc
                except TokenExpiredError:
                    if refreshed or not self._state.refresh_token or not spool.rewind():
                        raise
                    refreshed = True
                    await self._refresh_once(token)
                    continue
                except IMError as exc:
                    error = exc
                pause = attempts.pause(error, idempotent=True)
                if pause is None or not spool.rewind():
                    raise error
                log.info("upload failed (%s); retrying in %.2fs", error, pause)
                await sleep(pause)
        finally:
            spool.close()

    async def send_media(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        kind: MediaKind | None = None,
        caption: str | None = None,
        name: str | None = None,
        poster: Source | Upload | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Upload a file (unless given an :class:`~im_schema.files.Upload`) and send it as ``kind``, or as
        what the server detected; see :meth:`send_file` for the arguments."""
        check_caption(caption)
        upload = (
            source if isinstance(source, Upload) else await self.upload(source, kind=kind, name=name, progress=progress)
        )
        still = poster if isinstance(poster, Upload) or poster is None else await self.upload(poster, kind="image")
        return await self._send_message(
            media_request(to, upload, kind=kind, caption=caption, name=name, poster=still, client_msg_id=client_msg_id)
        )

    async def send_image(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        caption: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Send a picture (JPEG, PNG, GIF, WebP, BMP, TIFF); the server checks it decodes, reads its size
        and makes a thumbnail. See :meth:`send_file` for the arguments."""
        return await self.send_media(
            to, source, kind="image", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    async def send_file(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        caption: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Send any file as it is.

        Args:
            to: A user (id or username) or a conversation (``d:1:2``, ``g:7``).
            source: A path, the bytes, a binary file object, or an :class:`~im_schema.files.Upload` to
                send again without uploading.
            caption: Text shown with the file.
            name: The file name (a path's own name by default).
            progress: Called with ``(bytes sent, total)`` during the upload.
            client_msg_id: The idempotency key (a fresh one by default); a retried send is stored once.
        """
        return await self.send_media(
            to, source, kind="file", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    async def send_voice(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        caption: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Send a voice note (Ogg/Opus, MP3, M4A, AAC, FLAC, WAV, AIFF, WebM audio); the server reads its
        duration. See :meth:`send_file` for the arguments."""
        return await self.send_media(
            to, source, kind="voice", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    async def send_video(
        self,
        to: int | str,
        source: Source | Upload,
        *,
        caption: str | None = None,
        name: str | None = None,
        poster: Source | Upload | None = None,
        progress: Progress | None = None,
        client_msg_id: str | None = None,
    ) -> Message:
        """Send a clip (MP4, MOV, 3GP, WebM, MKV); the server reads its duration and picture size.
        ``poster`` is an image shown before it plays. See :meth:`send_file` for the other arguments."""
        return await self.send_media(
            to,
            source,
            kind="video",
            caption=caption,
            name=name,
            poster=poster,
            progress=progress,
            client_msg_id=client_msg_id,
        )

    async def download(
        self,
        message: Message,
        path: str | os.PathLike[str] | None = None,
        *,
        thumbnail: bool = False,
        progress: Progress | None = None,
    ) -> Path:
        """Save the file of a message (or its thumbnail or poster) and return where it went.

        ``path`` is the file to write, or a directory to write it into under its own name (the current
        directory by default). The bytes go to ``<path>.part`` first; an interrupted download resumes
        from there (here after a transport error, or by calling again later), and the file is moved into
        place only once its SHA-256 matches the blob's id.
        """
        plan = DownloadPlan.for_message(message, path, thumbnail=thumbnail)
        attempts = self._retry.start()
        refreshed = False
        while True:
            headers = await to_thread(plan.resume)
            token = self._state.access_token
            try:
                if not plan.complete:
                    await self._fetch(plan, headers, progress)
                return await to_thread(plan.finish)  # a corrupt result is removed: start over
            except TokenExpiredError:
                if refreshed or not self._state.refresh_token:
                    raise
                refreshed = True
                await self._refresh_once(token)
                continue
            except IMError as exc:
                pause = attempts.pause(exc, idempotent=True)
                if pause is None:
                    raise
                log.info("download failed (%s); resuming in %.2fs", exc, pause)
                await sleep(pause)

    async def _fetch(self, plan: DownloadPlan, headers: dict[str, str], progress: Progress | None) -> None:
        request = DownloadRequest(blob=plan.blob, name=plan.name)
        try:
            async with self._http.stream(
                "GET", request.path(), params=request.params(), headers={**self._state.headers(), **headers}
            ) as response:
                if response.status_code not in (200, 206):
                    raise error_from(response.status_code, await response.aread(), response.headers)
                file = await to_thread(plan.part.open, plan.accept(response.status_code, response.headers))
                try:
                    async for chunk in response.aiter_bytes(CHUNK_SIZE):
                        await to_thread(file.write, chunk)
                        plan.add(chunk, progress)
                finally:
                    await to_thread(file.close)
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {request.path()}: {exc!r}") from exc

    # Real time ------------------------------------------------------------------------------------

    async def messages(self, *, start: StartFrom = "unread") -> AsyncGenerator[MessageEvent[Reply], None]:
        """Only the messages of :meth:`events` (what bots and scripts usually want)."""
        async with contextlib.aclosing(self.events(start=start)) as events:
            async for event in events:
                if isinstance(event, MessageEvent):
                    yield event

    async def events(self, *, start: StartFrom = "unread") -> AsyncGenerator[Event[Reply], None]:
        """Everything for this device as it arrives, forever: messages, recalls and edits, read positions,
        typing, presence and other notices (see :mod:`im_sdk.events`).

        Connects to the gateway the API assigns, reconnects with jittered backoff when the connection
        drops, and after every (re)connect fetches whatever was missed, so each ``(conversation, seq)``
        is yielded exactly once and each conversation in seq order. ``start`` says where conversations
        seen for the first time begin: after what was read (``unread``), at the newest message
        (``latest``) or at the beginning (``all``). Messages this client sent are not yielded.
        """
        if self._engine is None:
            self._engine = SyncEngine(start=start)
        elif not self._events_started:
            self._engine.start = start  # only conversations seen from now on depend on it
        self._events_started = True
        engine = self._engine
        delays = self._backoff.delays()
        while True:
            try:
                # Closed as soon as this generator is (a consumer that stops early closes the connection
                # now, not whenever the event loop finalizes abandoned generators).
                async with contextlib.aclosing(self._connected(engine)) as connected:
                    async for item in connected:
                        delays = self._backoff.delays()  # a working connection resets the backoff
                        with self._cursors.yielding(item):
                            yield to_event(item.notice if isinstance(item, NoticeFrame) else item, self)
                delay = 0.0
            except (TransportError, ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
                delay = reconnect_delay(exc, delays)
                log.info("realtime connection lost (%r); reconnecting in %.2fs", exc, delay)
            except APIError as exc:
                if isinstance(exc, AuthenticationError) or exc.status in (400, 403, 404):
                    raise
                delay = exc.retry_after or next(delays)
                log.info("realtime setup failed (%s); retrying in %.2fs", exc, delay)
            engine.reset_fetching()
            await sleep(delay)

    async def _connected(self, engine: SyncEngine) -> AsyncGenerator[Message | NoticeFrame | UnknownEvent, None]:
        gateway = self._gateways.next()
        if gateway is None:
            # After a lost connection, the gateway it was on is named: a killed gateway is still assigned
            # for about a second (until the cluster misses its heartbeat), and another one will do.
            gateway = self._gateways.assigned(await self.request(GatewayRequest(avoid=self._gateways.lost)))
        else:
            log.info("reconnecting to gateway %s, the next of the last assignment", gateway.node_id)
        self._gateways.connecting(gateway)
        try:
            connection = await open_gateway(gateway.url)
        except InvalidURI as exc:
            raise ProtocolError(f"bad gateway URL {gateway.url!r}") from exc
        async with connection:
            ready = await self._authenticate(connection)
            self._gateways.up()
            # A record that programs read (the CLI shows "connected"): ``record.im_realtime == "up"``.
            log.info("realtime connection up (gateway %s)", ready.node_id, extra={"im_realtime": "up"})
            self._cursors.ready(engine, ready.user_id, ready.device_id)
            syncs = SyncRequests()
            backlog: list[Any] = []  # frames that came while a catch-up awaited its page: handled next, in order
            resyncs = ResyncSchedule(self._resync_after)
            try:
                async with contextlib.aclosing(self._catch_up(engine, connection, syncs, backlog)) as caught_up:
                    async for message in caught_up:
                        yield message
                while True:
                    if resyncs.due():
                        # Pushes may have been missed (the gateway said so, or all was quiet for long):
                        # sync from the cursor, on this same connection.
                        log.debug("resync on the open connection")
                        async with contextlib.aclosing(self._catch_up(engine, connection, syncs, backlog)) as caught_up:
                            async for message in caught_up:
                                yield message
                        resyncs.done()
                    if backlog:
                        frame = backlog.pop(0)
                    else:
                        try:
                            frame = _decode(await receive(connection, resyncs.wait()))
                        except TimeoutError:
                            continue  # a resync is due now
                    resyncs.heard()
                    if isinstance(frame, MessageFrame):
                        async with contextlib.aclosing(self._run(engine, engine.on_push(frame.message))) as run:
                            async for message in run:
                                yield message
                    elif isinstance(frame, NoticeFrame | UnknownEvent):
                        yield frame
                    elif isinstance(frame, ResyncFrame):
                        log.info("the gateway asks for a resync (%s)", frame.reason or "no reason given")
                        resyncs.asked()
                    elif isinstance(frame, ErrorFrame):
                        log.warning("gateway error: %s: %s", frame.code, frame.message)
            except ConnectionClosed:
                pass
        raise classify_close(connection.close_code, connection.close_reason)

    async def _catch_up(
        self, engine: SyncEngine, connection: ClientConnection, syncs: SyncRequests, backlog: list[Any]
    ) -> AsyncGenerator[Message, None]:
        """Run "conversations since" the engine's cursor and fetch what it shows missing (after each
        ``ready``, on a ``resync`` frame, and after a quiet period).

        Each conversation comes with its newest messages (``recent``): one that missed no more than
        those is caught up without a history request, so a device back after a short absence (a gateway
        restart, a NATS outage) usually needs only this. The pages are asked for with ``sync`` frames on
        the connection (HTTP with a gateway that does not know them, see :class:`SyncRequests`), so a
        crowd of devices reconnecting at once does not queue an HTTP request each on the API. Each page's
        deliveries are yielded before the next page is asked for (the engine counts them as delivered).
        """
        since = engine.since
        while True:  # every page of "conversations since"
            page = await self._conversations_page(connection, syncs, since, backlog)
            async with contextlib.aclosing(self._run(engine, engine.on_conversations(page))) as run:
                async for message in run:
                    yield message
            since = page.cursor
            if not page.has_more:
                break

    async def _conversations_page(
        self, connection: ClientConnection, syncs: SyncRequests, since: str | None, backlog: list[Any]
    ) -> ConversationPage:
        """One page of "conversations since", by ``sync`` frame or over HTTP as ``syncs`` decides.

        A ``sync`` refused as ``unauthorized`` or ``token_expired`` (the connection outlived its token's
        grace at the API) refreshes the token and ends the connection: the next one carries the new token.
        """
        while True:
            frame = syncs.request(since, CATCH_UP_PAGE, CATCH_UP_RECENT)
            if frame is None:
                return await self.conversations_page(since=since, limit=CATCH_UP_PAGE, recent=CATCH_UP_RECENT)
            token = self._state.access_token
            await connection.send(frame.model_dump_json(exclude_none=True))
            while True:
                received = _decode(await receive(connection, SYNC_ANSWER_TIMEOUT))
                outcome = syncs.answer(received)
                if outcome is not None:
                    break
                backlog.append(received)
            if isinstance(outcome, ConversationPage):
                return outcome
            if isinstance(outcome, SendAgain):
                log.info("the gateway is busy; syncing again in %.2fs", outcome.delay)
                await sleep(outcome.delay)
            elif isinstance(outcome, AskOverHttp):
                log.info("the gateway does not know the sync frame; catching up over HTTP")
            elif isinstance(outcome, AuthenticationError) and self._state.refresh_token:
                log.info("the sync was refused (%s); reconnecting with a refreshed token", outcome.code)
                await self._refresh_once(token)
                raise TransportError("token refreshed; reconnecting") from outcome
            else:
                raise outcome

    async def _authenticate(self, connection: ClientConnection) -> ReadyFrame:
        token = self._state.access_token
        if token is None:
            raise AuthenticationError("unauthorized", "log in first")
        await connection.send(AuthFrame(token=token).model_dump_json())
        for _ in range(EARLY_FRAMES_MAX):
            try:
                frame = _decode(await receive(connection, 15))
            except ConnectionClosed:
                frame = None
            if not isinstance(frame, EARLY_FRAMES):
                break
        answer = auth_answer(frame, connection.close_code, connection.close_reason)
        if isinstance(answer, RefreshToken):
            # The gateway closes after the error frame; the next connection carries the new token.
            await self._refresh_once(token)
            await wait_closed(connection)
            raise TransportError("token refreshed; reconnecting")
        if isinstance(answer, ReadyFrame):
            return answer
        raise answer

    async def _run(self, engine: SyncEngine, actions: list[Deliver | Fetch]) -> AsyncGenerator[Message, None]:
        """Carry out fetches, yielding each message as soon as it may be delivered.

        Yielding as it goes (rather than collecting first) means a fetch that fails later cannot drop
        messages the engine already counts as delivered.
        """
        # Every delivery the engine releases is handed to the cursor keeper at once (it counts them as
        # delivered already), then yielded in order.
        queue = list(actions)
        self._cursors.handed(action.message for action in queue if isinstance(action, Deliver))
        while queue:
            action = queue.pop(0)
            if isinstance(action, Deliver):
                yield action.message
                continue
            try:
                page = await self.history(
                    action.conversation, after=action.after, before=action.before, limit=HISTORY_PAGE_MAX
                )
            except APIError as exc:
                engine.on_fetch_failed(action, gone=exc.status == 404)
                if exc.status == 404:
                    continue  # left the conversation meanwhile
                raise
            released = engine.on_history(action, page)
            self._cursors.handed(step.message for step in released if isinstance(step, Deliver))
            queue[0:0] = released


def _decode(data: str | bytes) -> Any:
    """The frame, an :class:`UnknownEvent` for a frame type this version does not know, or ``None`` for a
    frame that cannot be read (logged and skipped: the loop keeps running)."""
    try:
        return server_frames.validate_json(data)
    except ValueError:
        pass
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if isinstance(raw, dict) and isinstance(raw.get("type"), str) and raw["type"] not in SERVER_FRAME_TYPES:
        return UnknownEvent(raw["type"], raw)  # from a newer server
    log.warning("skipped a frame this client cannot read: %.200r", data)
    return None
