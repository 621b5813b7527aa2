"""Reading: conversations since a cursor, history by seq, read state."""

from __future__ import annotations

import orjson

from im_schema.errors import ErrorCode
from im_schema.models import ReadState
from im_schema.rest import ConversationPage, MessagePage

from ..errors import BadRequest, NotFound
from ..storage import MemberState, MessageStore
from ..storage._util import now_ms

__all__ = ["SyncService"]

CURSOR_MARGIN_MS = 5_000
"""A final cursor lies this far in the past, so that a change committed by a node whose clock runs a
little behind is still seen next time. Seeing a conversation twice is harmless; missing one is not."""


def _parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    ms, _, after_id = cursor.partition(":")
    # ASCII digits only, and few enough to fit storage's 64-bit integers (a time in milliseconds).
    if not (ms.isascii() and ms.isdigit() and len(ms) <= 15):
        raise BadRequest("malformed cursor")
    return int(ms), after_id


class SyncService:
    """What a device needs to catch up."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store

    async def _member(self, conversation: str, user_id: int) -> MemberState:
        member = await self._store.member(conversation, user_id)
        if member is None:
            raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
        return member

    async def conversations(self, user_id: int, since: str | None, limit: int, recent: int = 0) -> ConversationPage:
        """The user's conversations that changed after ``since``, oldest change first, each with its newest
        messages up to ``recent`` seqs back (see :attr:`ConversationSummary.recent`)."""
        started = now_ms()
        rows, has_more = await self._store.conversations_since(
            user_id, since=_parse_cursor(since), limit=limit, recent=recent
        )
        if has_more:
            changed, last = rows[-1]
            cursor = f"{changed}:{last.id}"
        else:
            previous = _parse_cursor(since)
            floor = previous[0] if previous else 0
            cursor = str(max(floor, started - CURSOR_MARGIN_MS))
        return ConversationPage(conversations=[summary for _, summary in rows], cursor=cursor, has_more=has_more)

    async def history(
        self, user_id: int, conversation: str, *, after: int | None, before: int | None, limit: int
    ) -> MessagePage:
        """Messages the user may see, by seq range."""
        member = await self._member(conversation, user_id)
        messages, has_more, max_seq = await self._store.history(
            conversation, floor=member.joined_seq, ceiling=member.left_seq, after=after, before=before, limit=limit
        )
        return MessagePage(conversation=conversation, messages=messages, has_more=has_more, max_seq=max_seq)

    async def history_json(
        self, user_id: int, conversation: str, *, after: int | None, before: int | None, limit: int
    ) -> bytes:
        """:meth:`history` as the JSON of its :class:`MessagePage`, built from the stored messages' JSON
        (no model per message: a catch-up reads thousands), the membership and the messages read at once."""
        page = await self._store.member_history_json(conversation, user_id, after=after, before=before, limit=limit)
        if page is None:
            raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
        messages, has_more, max_seq = page
        return b'{"conversation":%b,"messages":[%b],"has_more":%b,"max_seq":%d}' % (
            orjson.dumps(conversation),
            b",".join(messages),
            b"true" if has_more else b"false",
            max_seq,
        )

    async def mark_read(self, user_id: int, conversation: str, seq: int) -> ReadState:
        """Move the user's read position forward."""
        state = await self._store.mark_read(conversation, user_id, seq, now=now_ms())
        if state is None:
            raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
        return state
