"""Sending messages: the rules every send passes, whether it came over HTTP or a WebSocket."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from im_schema.content import Content, OutgoingContent, TextContent
from im_schema.errors import ErrorCode
from im_schema.frames import SendFrame
from im_schema.ids import direct_conversation, direct_users

from ..errors import BadRequest, NotFound, RateLimited, ServerError
from ..settings import Settings
from ..storage import MessageStore, NewMessage, UserStore, Written
from ..storage._util import now_ms
from .commit import GroupCommitter
from .media import MediaService
from .ratelimit import RateLimiter

__all__ = ["MessagingService", "Send", "UserDirectory"]


@dataclass(frozen=True, slots=True)
class Send:
    """One send as the message service takes it: the fields of a valid :class:`SendFrame`."""

    to: int | str | None
    conversation: str | None
    client_msg_id: str
    content: OutgoingContent
    reply_to: int | None = None
    mentions: tuple[int, ...] = ()
    mention_all: bool = False

    @classmethod
    def of(cls, frame: SendFrame) -> Send:
        """The send a validated frame asks for."""
        return cls(
            frame.to,
            frame.conversation,
            frame.client_msg_id,
            frame.content,
            frame.reply_to,
            tuple(frame.mentions),
            frame.mention_all,
        )


class UserDirectory:
    """Which users exist, by id and by username, with a bounded cache (accounts are never renamed)."""

    def __init__(self, users: UserStore, *, size: int = 100_000) -> None:
        self._users = users
        self._size = size
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._names: OrderedDict[str, int] = OrderedDict()

    def _remember(self, user_id: int, username: str | None = None) -> None:
        self._ids[user_id] = None
        self._ids.move_to_end(user_id)
        if username is not None:
            self._names[username] = user_id
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        while len(self._names) > self._size:
            self._names.popitem(last=False)

    def known(self, user_id: int) -> bool:
        """Whether a user id is known to exist without asking the database."""
        return user_id in self._ids

    async def resolve(self, ref: int | str) -> int:
        """The id of a user given by id or username; raises ``user_not_found``."""
        if isinstance(ref, int):
            if ref in self._ids:
                return ref
            user = await self._users.get(ref)
        else:
            if ref in self._names:
                return self._names[ref]
            user = await self._users.get_by_username(ref)
        if user is None:
            raise NotFound(f"no user {ref!r}", code=ErrorCode.USER_NOT_FOUND)
        self._remember(user.id, user.username)
        return user.id


class MessagingService:
    """Validates a send, makes sure its conversation exists, and queues it for group commit."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        directory: UserDirectory,
        committer: GroupCommitter,
        media: MediaService | None = None,
        *,
        check_direct: Callable[[int, int], Awaitable[None]] | None = None,
        direct_allowed: Callable[[int, int], bool | None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._directory = directory
        self._committer = committer
        self._limiter: RateLimiter[int] = RateLimiter(settings.send_rate, settings.send_burst)
        self._known_direct: set[str] = set()
        self._media = media
        self.check_direct = check_direct
        """Friendship and block rules for direct messages (``None``: anyone may write to anyone)."""
        self.direct_allowed = direct_allowed
        """The same rules from cached state only: ``True`` allowed, anything else asks :attr:`check_direct`."""

    async def send(
        self,
        sender: int,
        device_id: str | None,
        *,
        to: int | str | None,
        conversation: str | None,
        client_msg_id: str,
        content: OutgoingContent,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
        mention_all: bool = False,
    ) -> Written:
        """Store a message and return it once committed; a repeated ``client_msg_id`` returns the original."""
        item = await self.prepare(
            sender,
            to=to,
            conversation=conversation,
            client_msg_id=client_msg_id,
            content=content,
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
        )
        return await self._committer.enqueue(item, device_id)

    async def send_in_order(
        self, sends: Sequence[tuple[int, str | None, Send | SendFrame]]
    ) -> list[Written | ServerError]:
        """Store sends of one or more devices in the order given; each gets its message or its error.

        Every send is checked and queued before the next one, so each device's messages keep the order
        in which it sent them; then all are awaited together (they usually share one commit). A send
        whose rules can be checked from what this node has cached (the usual case: known users, a
        conversation that exists) is prepared without waiting on anything.
        """
        futures: list[asyncio.Future[Written] | ServerError] = []
        enqueue = self._committer.enqueue
        # Devices told to retry later (rate limited, node busy): their later sends of the batch are refused
        # too, so that the retried send never lands behind one made after it.
        held: dict[tuple[int, str | None], ServerError] = {}
        for sender, device_id, send in sends:
            if held and (refusal := held.get((sender, device_id))) is not None:
                futures.append(refusal)
                continue
            try:
                self._check(sender, send.content)
                target = self._target_now(sender, send.to, send.conversation)
                content: Content
                if target is not None and isinstance(send.content, TextContent):
                    content = send.content
                else:
                    content = await self._stored_content(sender, send.content)
                    target = await self._target(sender, send.to, send.conversation)
                item = NewMessage(
                    target,
                    sender,
                    send.client_msg_id,
                    content,
                    send.reply_to,
                    tuple(send.mentions),
                    send.mention_all,
                )
                futures.append(enqueue(item, device_id))
            except ServerError as exc:
                futures.append(exc)
                if exc.retry_after is not None:
                    held[(sender, device_id)] = exc
        results: list[Written | ServerError] = []
        for future in futures:
            if isinstance(future, ServerError):
                results.append(future)
                continue
            try:
                results.append(future.result() if future.done() else await future)
            except ServerError as exc:
                results.append(exc)
        return results

    async def prepare(
        self,
        sender: int,
        *,
        to: int | str | None,
        conversation: str | None,
        client_msg_id: str,
        content: OutgoingContent,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
        mention_all: bool = False,
    ) -> NewMessage:
        """Check every rule for a send and make sure its conversation exists.

        Replies and mentions are checked in the commit, with the membership they depend on.
        """
        self._check(sender, content)
        stored = await self._stored_content(sender, content)
        target = await self._target(sender, to, conversation)
        return NewMessage(target, sender, client_msg_id, stored, reply_to, tuple(mentions), mention_all)

    def _check(self, sender: int, content: OutgoingContent) -> None:
        """The sender's rate and the text's length (raises)."""
        wait = self._limiter.acquire(sender)
        if wait:
            raise RateLimited("too many messages; slow down", retry_after=round(wait, 3))
        if isinstance(content, TextContent) and len(content.text) > self._settings.max_text_len:
            raise BadRequest(
                f"text is longer than {self._settings.max_text_len} characters", code=ErrorCode.TEXT_TOO_LONG
            )

    def _target_now(self, sender: int, to: int | str | None, conversation: str | None) -> str | None:
        """The conversation of a send when cached state alone shows that it may go there, else ``None``
        (then :meth:`_target` decides, and says why not)."""
        if conversation is not None:
            if conversation.startswith("g:"):
                return conversation
            users = direct_users(conversation)
            if sender not in users:
                return None
            peer = users[0] if users[1] == sender else users[1]
        elif type(to) is int and to != sender:
            peer = to
            conversation = direct_conversation(sender, peer)
        else:
            return None
        if conversation not in self._known_direct or not self._directory.known(peer):
            return None
        if self.check_direct is not None and (
            self.direct_allowed is None or self.direct_allowed(sender, peer) is not True
        ):
            return None
        return conversation

    async def _stored_content(self, sender: int, content: OutgoingContent) -> Content:
        """Text as sent; for media, what the server read from the blob (see :mod:`.media`)."""
        if isinstance(content, TextContent):
            return content
        if self._media is None:
            raise BadRequest("this server does not take media messages")
        return await self._media.resolve(sender, content)

    async def _target(self, sender: int, to: int | str | None, conversation: str | None) -> str:
        if conversation is not None and conversation.startswith("g:"):
            # Membership, mutes and dissolution are checked inside the commit, where no kick can race them.
            return conversation
        if conversation is None:
            assert to is not None
            peer = await self._directory.resolve(to)
            if peer == sender:
                raise BadRequest("you cannot send a direct message to yourself")
            conversation = direct_conversation(sender, peer)
        else:
            users = direct_users(conversation)
            if sender not in users:
                raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
            peer = users[0] if users[1] == sender else users[1]
            await self._directory.resolve(peer)
        if self.check_direct is not None:
            await self.check_direct(sender, peer)
        if conversation not in self._known_direct:
            await self._store.ensure_direct(conversation, sender, peer, now=now_ms())
            if len(self._known_direct) > 200_000:
                self._known_direct.clear()
            self._known_direct.add(conversation)
        return conversation
