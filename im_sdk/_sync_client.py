"""The synchronous client: the same methods as :class:`~im_sdk.AsyncClient`, blocking."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from im_schema.admin import BotLoginRequest
from im_schema.content import MediaKind
from im_schema.files import FILES_PATH, DownloadRequest, FileLimits, FileLimitsRequest, Upload, UploadRequest
from im_schema.frames import AuthFrame, ErrorFrame, MessageFrame, NoticeFrame, ReadyFrame, server_frames
from im_schema.lifecycle import (
    EditRequest,
    Presence,
    PresenceRequest,
    RecallRequest,
    Receipts,
    ReceiptsRequest,
    TypingRequest,
)
from im_schema.models import ConversationSummary, Message, ReadState, User
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

from ._base import error_from, parse, prepare, send_text_request
from ._devices import Devices
from ._files import CHUNK_SIZE, DownloadPlan, Progress, Source, media_request, open_source, transfer_timeout
from ._people import Friends, Groups
from ._session import SessionState
from .errors import APIError, AuthenticationError, ProtocolError, TokenExpiredError, TransportError
from .events import Event, MessageEvent, to_event
from .realtime.backoff import Backoff
from .realtime.policy import classify_close, reconnect_delay
from .realtime.protocol import Deliver, Fetch, StartFrom, SyncEngine
from .realtime.store import CursorKeeper

__all__ = ["Client"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class Client:
    """A blocking client for one account on one device; see :class:`~im_sdk.AsyncClient`.

    ::

        with Client("http://localhost:8080") as client:
            client.login("alice", "secret", device="script")
            client.send_text("bob", "build finished")
    """

    def __init__(
        self,
        server_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        on_session: Callable[[Session], None] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._http = httpx.Client(base_url=self.server_url, timeout=timeout, transport=transport)
        self._state = SessionState(access_token, refresh_token, on_session)
        self._backoff = backoff or Backoff()
        self._refreshing = threading.Lock()
        # Made now, not when events() starts, so that a message sent before that is known as our own.
        self._engine: SyncEngine | None = SyncEngine()
        self._events_started = False
        self._cursors = CursorKeeper(state_path, self.server_url)
        self.friends = Friends(self)
        """Friends, requests and blocks."""
        self.groups = Groups(self)
        """Every group operation."""
        self.devices = Devices(self)
        """My logged-in devices: list them, log them out."""

    # Plumbing -------------------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool (and save the sync cursors, with ``state_path``)."""
        self._cursors.close()
        self._http.close()

    @property
    def session(self) -> Session | None:
        """The tokens and account of the last login or refresh."""
        return self._state.session

    def _send(self, request: Request[R]) -> httpx.Response:
        prepared = prepare(request)
        headers = self._state.headers() if prepared.auth else {}
        try:
            return self._http.request(
                prepared.method, prepared.path, params=prepared.params, json=prepared.json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{prepared.method} {prepared.path}: {exc!r}") from exc

    def request(self, request: Request[R]) -> R:
        """Send any request model and return its response model; refreshes an expired token once."""
        response = self._send(request)
        try:
            return parse(request, response.status_code, response.content, response.headers)
        except TokenExpiredError:
            if not (request.endpoint.auth and self._state.refresh_token):
                raise
        self._refresh_once(self._state.access_token)
        response = self._send(request)
        return parse(request, response.status_code, response.content, response.headers)

    def _refresh_once(self, stale: str | None) -> None:
        with self._refreshing:
            if self._state.access_token == stale:
                self.refresh()

    # Accounts -------------------------------------------------------------------------------------

    def register(self, username: str, password: str, *, display_name: str | None = None) -> User:
        """Create an account (this does not log in)."""
        return self.request(RegisterRequest(username=username, password=password, display_name=display_name))

    def login(self, username: str, password: str, *, device: str = "default") -> Session:
        """Log this device in; later calls use its tokens."""
        session = self.request(LoginRequest(username=username, password=password, device=device))
        self._state.update(session)
        return session

    def login_bot(self, token: str, *, device: str = "bot") -> Session:
        """Log a bot device in with its token (``im admin bots create``); later calls use its session."""
        session = self.request(BotLoginRequest(token=token, device=device))
        self._state.update(session)
        return session

    def refresh(self) -> Session:
        """Renew the tokens with the refresh token."""
        token = self._state.refresh_token
        if token is None:
            raise AuthenticationError("unauthorized", "no refresh token; log in again")
        session = self.request(RefreshRequest(refresh_token=token))
        self._state.update(session)
        return session

    def logout(self) -> None:
        """End this device's session on the server and forget the tokens."""
        self.request(LogoutRequest())
        self._state.clear()

    def whoami(self) -> Me:
        """The logged-in account and device."""
        return self.request(WhoAmIRequest())

    def get_user(self, user: int | str) -> User:
        """A user's profile, by id or username."""
        return self.request(GetUserRequest(user=user))

    # Messages -------------------------------------------------------------------------------------

    def send_text(
        self,
        to: int | str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to: int | None = None,
        mentions: list[int] | None = None,
        mention_all: bool = False,
    ) -> Message:
        """Send text to a user (id or username) or into a conversation (``d:1:2``, ``g:7``).

        ``reply_to`` quotes a message of the conversation by seq; ``mentions`` names members to notify
        and ``mention_all`` notifies everyone (group owners and admins). The message is stored when this
        returns. On a transport error the same ``client_msg_id`` is sent again, so a retry never stores a
        message twice.
        """
        request = send_text_request(
            to, text, client_msg_id, reply_to=reply_to, mentions=mentions, mention_all=mention_all
        )
        return self._send_message(request)

    def recall(self, conversation: str, seq: int) -> Message:
        """Recall a message (mine within the recall window; any, as a group owner or admin)."""
        return self.request(RecallRequest(conversation=conversation, seq=seq))

    def edit(self, conversation: str, seq: int, text: str) -> Message:
        """Replace the text of my message (within the edit window)."""
        return self.request(EditRequest(conversation=conversation, seq=seq, text=text))

    def receipts(self, conversation: str, seq: int) -> Receipts:
        """Who has read a message, and who has not."""
        return self.request(ReceiptsRequest(conversation=conversation, seq=seq))

    def typing(self, conversation: str, active: bool = True) -> None:
        """Tell the others I am typing (or stopped)."""
        self.request(TypingRequest(conversation=conversation, active=active))

    def presence(self, user: int | str) -> Presence:
        """A friend's or fellow member's presence: online, or when last seen."""
        return self.request(PresenceRequest(user=user))

    def _send_message(self, request: SendMessageRequest) -> Message:
        # Retried with the same client_msg_id (stored once), and announced to the sync engine so that
        # events() never hands this client its own message.
        engine = self._engine
        if engine is not None:
            engine.expect_own(request.client_msg_id)
        try:
            for attempt in range(3):
                try:
                    message = self.request(request)
                    break
                except TransportError:
                    if attempt == 2:
                        raise
                    time.sleep(0.2 * (attempt + 1))
        except BaseException:
            if engine is not None:
                engine.forget_own(request.client_msg_id)
            raise
        if engine is not None:
            engine.mark_own(message)
        return message

    def conversations_page(self, *, since: str | None = None, limit: int = 200) -> ConversationPage:
        """One page of conversations changed after ``since``."""
        return self.request(ConversationsRequest(since=since, limit=limit))

    def conversations(self) -> list[ConversationSummary]:
        """All my conversations, most recently active first."""
        found: dict[str, ConversationSummary] = {}
        since: str | None = None
        while True:
            page = self.conversations_page(since=since, limit=500)
            found.update((summary.id, summary) for summary in page.conversations)
            since = page.cursor
            if not page.has_more:
                break
        return sorted(found.values(), key=lambda summary: summary.updated_at, reverse=True)

    def history(
        self, conversation: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> MessagePage:
        """Messages of a conversation: after ``after``, or the latest before ``before`` (exclusive)."""
        return self.request(HistoryRequest(conversation=conversation, after=after, before=before, limit=limit))

    def mark_read(self, conversation: str, seq: int) -> ReadState:
        """Mark the conversation read up to ``seq`` on all my devices."""
        return self.request(MarkReadRequest(conversation=conversation, seq=seq))

    # Files ----------------------------------------------------------------------------------------

    def file_limits(self) -> FileLimits:
        """What the server accepts: the largest upload of each kind and the refused types."""
        return self.request(FileLimitsRequest())

    def upload(
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

        Identical bytes are stored once, so uploading again is harmless: a transport error is retried
        (if the source can seek back) and so is an expired token, once.
        """
        spool = open_source(source, name)
        try:
            request = UploadRequest(kind=kind, name=spool.name)
            refreshed = False
            failures = 0
            while True:
                token = self._state.access_token
                headers = {**self._state.headers(), "Content-Type": "application/octet-stream"}
                if spool.size is not None:
                    headers["Content-Length"] = str(spool.size)
                try:
                    response = self._http.post(
                        FILES_PATH,
                        params=request.payload(),
                        content=spool.chunks(progress),
                        headers=headers,
                        timeout=transfer_timeout(self._http.timeout),
                    )
                except httpx.HTTPError as exc:
                    failures += 1
                    if failures == 3 or not spool.rewind():
                        raise TransportError(f"POST {FILES_PATH}: {exc!r}") from exc
                    time.sleep(0.2 * failures)
                    continue
                try:
                    return parse(request, response.status_code, response.content, response.headers)
                except TokenExpiredError:
                    if refreshed or not self._state.refresh_token or not spool.rewind():
                        raise
                    refreshed = True
                    self._refresh_once(token)
        finally:
            spool.close()

    def send_media(
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
        upload = source if isinstance(source, Upload) else self.upload(source, kind=kind, name=name, progress=progress)
        still = poster if isinstance(poster, Upload) or poster is None else self.upload(poster, kind="image")
        return self._send_message(
            media_request(to, upload, kind=kind, caption=caption, name=name, poster=still, client_msg_id=client_msg_id)
        )

    def send_image(
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
        return self.send_media(
            to, source, kind="image", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    def send_file(
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
        return self.send_media(
            to, source, kind="file", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    def send_voice(
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
        return self.send_media(
            to, source, kind="voice", caption=caption, name=name, progress=progress, client_msg_id=client_msg_id
        )

    def send_video(
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
        return self.send_media(
            to,
            source,
            kind="video",
            caption=caption,
            name=name,
            poster=poster,
            progress=progress,
            client_msg_id=client_msg_id,
        )

    def download(
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
        refreshed = False
        failures = 0
        while True:
            headers = plan.resume()
            token = self._state.access_token
            try:
                if not plan.complete:
                    self._fetch(plan, headers, progress)
                return plan.finish()  # a corrupt result is removed: start over
            except TokenExpiredError:
                if refreshed or not self._state.refresh_token:
                    raise
                refreshed = True
                self._refresh_once(token)
                continue
            except TransportError:
                failures += 1
                if failures == 3:
                    raise
                time.sleep(0.2 * failures)

    def _fetch(self, plan: DownloadPlan, headers: dict[str, str], progress: Progress | None) -> None:
        request = DownloadRequest(blob=plan.blob, name=plan.name)
        try:
            with self._http.stream(
                "GET", request.path(), params=request.params(), headers={**self._state.headers(), **headers}
            ) as response:
                if response.status_code not in (200, 206):
                    raise error_from(response.status_code, response.read(), response.headers)
                with plan.part.open(plan.accept(response.status_code, response.headers)) as file:
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        file.write(chunk)
                        plan.add(chunk, progress)
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {request.path()}: {exc!r}") from exc

    # Real time ------------------------------------------------------------------------------------

    def messages(self, *, start: StartFrom = "unread") -> Iterator[MessageEvent[Message]]:
        """Only the messages of :meth:`events` (what bots and scripts usually want)."""
        for event in self.events(start=start):
            if isinstance(event, MessageEvent):
                yield event

    def events(self, *, start: StartFrom = "unread") -> Iterator[Event[Message]]:
        """Messages and notices for this device as they arrive, forever; see :meth:`AsyncClient.events`."""
        if self._engine is None:
            self._engine = SyncEngine(start=start)
        elif not self._events_started:
            self._engine.start = start  # only conversations seen from now on depend on it
        self._events_started = True
        engine = self._engine
        delays = self._backoff.delays()
        while True:
            try:
                for item in self._connected(engine):
                    delays = self._backoff.delays()
                    with self._cursors.yielding(item):
                        yield to_event(item if isinstance(item, Message) else item.notice, self)
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
            time.sleep(delay)

    def _connected(self, engine: SyncEngine) -> Iterator[Message | NoticeFrame]:
        assignment = self.request(GatewayRequest())
        try:
            connection = connect(assignment.url, compression=None, open_timeout=10, max_size=2**22)
        except InvalidURI as exc:
            raise ProtocolError(f"bad gateway URL {assignment.url!r}") from exc
        with connection:
            ready = self._authenticate(connection)
            self._cursors.ready(engine, ready.user_id, ready.device_id)
            pending: list[Deliver | Fetch] = []
            since = engine.since
            while True:
                page = self.conversations_page(since=since, limit=500)
                pending.extend(engine.on_conversations(page))
                since = page.cursor
                if not page.has_more:
                    break
            yield from self._run(engine, pending)
            try:
                for data in _received(connection):
                    frame = _decode(data)
                    if isinstance(frame, MessageFrame):
                        yield from self._run(engine, engine.on_push(frame.message))
                    elif isinstance(frame, NoticeFrame):
                        yield frame
                    elif isinstance(frame, ErrorFrame):
                        log.warning("gateway error: %s: %s", frame.code, frame.message)
            except ConnectionClosed:
                pass
        raise classify_close(connection.close_code, connection.close_reason)

    def _authenticate(self, connection: ClientConnection) -> ReadyFrame:
        for attempt in range(2):
            token = self._state.access_token
            if token is None:
                raise AuthenticationError("unauthorized", "log in first")
            connection.send(AuthFrame(token=token).model_dump_json())
            try:
                frame = _decode(connection.recv(timeout=15))
            except ConnectionClosed:
                frame = None
            if isinstance(frame, ReadyFrame):
                return frame
            if isinstance(frame, ErrorFrame) and frame.code == "token_expired" and attempt == 0:
                self._refresh_once(token)
                raise TransportError("token refreshed; reconnecting")
            if isinstance(frame, ErrorFrame):
                raise classify_close(connection.close_code, frame.message, frame.code)
            raise classify_close(connection.close_code, connection.close_reason)
        raise ProtocolError("no ready frame")

    def _run(self, engine: SyncEngine, actions: list[Deliver | Fetch]) -> Iterator[Message]:
        """Carry out fetches, yielding each message as soon as it may be delivered (see the async twin)."""
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
                page = self.history(action.conversation, after=action.after, before=action.before, limit=500)
            except APIError as exc:
                engine.on_fetch_failed(action, gone=exc.status == 404)
                if exc.status == 404:
                    continue
                raise
            released = engine.on_history(action, page)
            self._cursors.handed(step.message for step in released if isinstance(step, Deliver))
            queue[0:0] = released


def _received(connection: ClientConnection) -> Iterator[str | bytes]:
    """The frames of a connection, like iterating over it, but waking up every second.

    The connection's own thread may be the one the kernel hands SIGINT to; a main thread blocked on a
    lock without a timeout would then not see Ctrl-C until the next frame arrived.
    """
    while True:
        try:
            yield connection.recv(timeout=1.0)
        except TimeoutError:
            continue


def _decode(data: str | bytes) -> Any:
    try:
        return server_frames.validate_json(data)
    except ValueError:
        return None
