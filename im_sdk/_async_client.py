"""The asynchronous client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import httpx
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from im_schema.frames import AuthFrame, ErrorFrame, MessageFrame, ReadyFrame, server_frames
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
    Session,
    WhoAmIRequest,
)

from ._base import parse, prepare, send_text_request
from ._session import SessionState
from .errors import (
    APIError,
    AuthenticationError,
    ProtocolError,
    TokenExpiredError,
    TransportError,
)
from .events import MessageEvent
from .realtime.backoff import Backoff
from .realtime.policy import classify_close, reconnect_delay
from .realtime.protocol import Deliver, Fetch, StartFrom, SyncEngine

__all__ = ["AsyncClient"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

AsyncMessageEvent = MessageEvent[Coroutine[Any, Any, Message]]


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
        on_session: Called with every new :class:`~im_schema.rest.Session` (login and refresh), e.g. to
            persist the rotated tokens.
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
        on_session: Callable[[Session], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.server_url, timeout=timeout, transport=transport)
        self._state = SessionState(access_token, refresh_token, on_session)
        self._backoff = backoff or Backoff()
        self._refreshing: asyncio.Lock | None = None
        self._engine: SyncEngine | None = None

    # Plumbing -------------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
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
        """Send any request model and return its response model; refreshes an expired token once."""
        response = await self._send(request)
        try:
            return parse(request, response.status_code, response.content, response.headers)
        except TokenExpiredError:
            if not (request.endpoint.auth and self._state.refresh_token):
                raise
        await self._refresh_once(self._state.access_token)
        response = await self._send(request)
        return parse(request, response.status_code, response.content, response.headers)

    async def _refresh_once(self, stale: str | None) -> None:
        # Concurrent calls that all saw the same expired token refresh it once.
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
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

    async def send_text(self, to: int | str, text: str, *, client_msg_id: str | None = None) -> Message:
        """Send text to a user (id or username) or into a conversation (``d:1:2``, ``g:7``).

        The message is stored when this returns. On a transport error the same ``client_msg_id`` is
        sent again, so a retry never stores a message twice.
        """
        request = send_text_request(to, text, client_msg_id)
        engine = self._engine
        if engine is not None:
            engine.expect_own(request.client_msg_id)
        try:
            for attempt in range(3):
                try:
                    message = await self.request(request)
                    break
                except TransportError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
        except BaseException:
            if engine is not None:
                engine.forget_own(request.client_msg_id)
            raise
        if engine is not None:
            engine.mark_own(message)
        return message

    async def conversations_page(self, *, since: str | None = None, limit: int = 200) -> ConversationPage:
        """One page of conversations changed after ``since``."""
        return await self.request(ConversationsRequest(since=since, limit=limit))

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

    # Real time ------------------------------------------------------------------------------------

    async def events(self, *, start: StartFrom = "unread") -> AsyncIterator[AsyncMessageEvent]:
        """Messages for this device as they arrive, forever.

        Connects to the gateway the API assigns, reconnects with jittered backoff when the connection
        drops, and after every (re)connect fetches whatever was missed, so each ``(conversation, seq)``
        is yielded exactly once and each conversation in seq order. ``start`` says where conversations
        seen for the first time begin: after what was read (``unread``), at the newest message
        (``latest``) or at the beginning (``all``). Messages this client sent are not yielded.
        """
        if self._engine is None:
            self._engine = SyncEngine(start=start)
        engine = self._engine
        delays = self._backoff.delays()
        while True:
            try:
                async for message in self._connected(engine):
                    delays = self._backoff.delays()  # a working connection resets the backoff
                    yield MessageEvent(message, self)
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
            await asyncio.sleep(delay)

    async def _connected(self, engine: SyncEngine) -> AsyncIterator[Message]:
        assignment = await self.request(GatewayRequest())
        try:
            connection = await websockets.connect(
                assignment.url, compression=None, open_timeout=10, max_size=2**22, ping_interval=20
            )
        except InvalidURI as exc:
            raise ProtocolError(f"bad gateway URL {assignment.url!r}") from exc
        async with connection:
            await self._authenticate(connection)
            pending: list[Deliver | Fetch] = []
            since = engine.since
            while True:  # every page of "conversations since"
                page = await self.conversations_page(since=since, limit=500)
                pending.extend(engine.on_conversations(page))
                since = page.cursor
                if not page.has_more:
                    break
            for message in await self._run(engine, pending):
                yield message
            try:
                async for data in connection:
                    frame = _decode(data)
                    if isinstance(frame, MessageFrame):
                        for message in await self._run(engine, engine.on_push(frame.message)):
                            yield message
                    elif isinstance(frame, ErrorFrame):
                        log.warning("gateway error: %s: %s", frame.code, frame.message)
            except ConnectionClosed:
                pass
        raise classify_close(connection.close_code, connection.close_reason)

    async def _authenticate(self, connection: ClientConnection) -> None:
        for attempt in range(2):
            token = self._state.access_token
            if token is None:
                raise AuthenticationError("unauthorized", "log in first")
            await connection.send(AuthFrame(token=token).model_dump_json())
            try:
                frame = _decode(await asyncio.wait_for(connection.recv(), 15))
            except ConnectionClosed:
                frame = None
            if isinstance(frame, ReadyFrame):
                return
            if isinstance(frame, ErrorFrame) and frame.code == "token_expired" and attempt == 0:
                await self._refresh_once(token)
                with contextlib.suppress(ConnectionClosed):
                    await connection.wait_closed()
                raise TransportError("token refreshed; reconnecting")
            if isinstance(frame, ErrorFrame):
                raise classify_close(connection.close_code, frame.message, frame.code)
            raise classify_close(connection.close_code, connection.close_reason)

    async def _run(self, engine: SyncEngine, actions: list[Deliver | Fetch]) -> list[Message]:
        """Carry out fetches until only deliveries remain; returns the messages in delivery order."""
        out: list[Message] = []
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Deliver):
                out.append(action.message)
                continue
            try:
                page = await self.history(action.conversation, after=action.after, before=action.before, limit=500)
            except APIError as exc:
                engine.on_fetch_failed(action)
                if exc.status == 404:
                    continue  # left the conversation meanwhile
                raise
            queue[0:0] = engine.on_history(action, page)
        return out


def _decode(data: str | bytes) -> Any:
    try:
        return server_frames.validate_json(data)
    except ValueError:
        return None  # a frame from a newer server: ignored, the loop keeps running
