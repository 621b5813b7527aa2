"""Exactly-once, in-order delivery on top of pushes and pulls, without I/O.

The :class:`SyncEngine` keeps, for every conversation, a watermark: every seq at or below it was
delivered to the application (or does not exist for this user). It is fed three things, by whichever
shell does the I/O:

- pages of "conversations since" after every (re)connect (:meth:`SyncEngine.on_conversations`); a
  conversation whose ``recent`` messages reach down to its watermark is caught up from them, with no
  history request,
- pushed messages (:meth:`SyncEngine.on_push`),
- history pages it asked for (:meth:`SyncEngine.on_history`).

Each returns actions: :class:`Deliver` a message to the application, or :class:`Fetch` a seq range.
A pushed message beyond the watermark + 1 is held back while the gap is fetched, so the application
sees each conversation in seq order, and a ``(conversation, seq)`` is never delivered twice.

:attr:`SyncEngine.since` moves to a pass's cursor only once every conversation the pass reported is
delivered up to the ``max_seq`` it reported: a resync after a failed fetch asks from the old cursor
again, and watermarks plus ``since`` can be saved and restored (:meth:`SyncEngine.resume`) without
losing anything.

Which way each page of "conversations since" is asked for is decided by :class:`SyncRequests`: as a
``sync`` frame on the connection the client already has, or over HTTP when the gateway does not know
that frame (an older server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from im_schema.errors import ErrorCode, http_status
from im_schema.frames import ErrorFrame, SyncFrame, SyncPageFrame
from im_schema.models import ConversationSummary, Message
from im_schema.rest import ConversationPage, MessagePage

from ..errors import APIError, error_for

__all__ = ["Action", "AskOverHttp", "Deliver", "Fetch", "SendAgain", "StartFrom", "SyncEngine", "SyncRequests"]

StartFrom = Literal["unread", "latest", "all"]
"""Where a conversation seen for the first time starts: after what was read, after everything, or at the
beginning of what this user may see."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand this message to the application."""

    message: Message


@dataclass(frozen=True, slots=True)
class Fetch:
    """Get messages of ``conversation`` with ``after < seq < before`` (``before=None``: up to the newest)."""

    conversation: str
    after: int
    before: int | None = None


Action = Deliver | Fetch


@dataclass(slots=True)
class _Conversation:
    watermark: int
    held: dict[int, Message] = field(default_factory=dict)
    """Pushes beyond the watermark, waiting for the gap below them to be filled."""
    own: set[int] = field(default_factory=set)
    """Seqs this client sent itself: counted as delivered, never handed to the application."""
    fetching: bool = False


def _recent_covers(summary: ConversationSummary, watermark: int) -> bool:
    """Whether ``summary.recent`` holds every seq above ``watermark`` this user may see. Messages that do
    not fit what the summary says (another conversation, outside its window) make it not count."""
    start = summary.recent_after
    if start is None or start > watermark:
        return False
    return all(
        message.conversation == summary.id and start < message.seq <= summary.max_seq for message in summary.recent
    )


class SyncEngine:
    """Per-conversation watermarks; see the module docstring."""

    def __init__(
        self,
        *,
        start: StartFrom = "unread",
        watermarks: dict[str, int] | None = None,
        since: str | None = None,
    ) -> None:
        self.start: StartFrom = start
        self.since = since
        """The cursor of the last complete "conversations since" pass: every conversation it reported
        is delivered up to the ``max_seq`` it reported."""
        self._conversations: dict[str, _Conversation] = {
            conversation: _Conversation(seq) for conversation, seq in (watermarks or {}).items()
        }
        self._sending: set[str] = set()
        self._pass: dict[str, int] = {}
        """Conversations the current pass reported, not yet delivered up to the ``max_seq`` reported."""
        self._pass_cursor: str | None = None
        """The final cursor of the current pass, waiting for :attr:`_pass` to empty."""
        self._touched: set[str] = set(self._conversations)
        """Conversations whose watermark may have moved since :meth:`touched` was last called."""

    # Introspection --------------------------------------------------------------------------------

    def watermark(self, conversation: str) -> int | None:
        """The highest seq of ``conversation`` known to be delivered, if the conversation is known."""
        state = self._conversations.get(conversation)
        return None if state is None else state.watermark

    def watermarks(self) -> dict[str, int]:
        """Every conversation's watermark, e.g. to persist them."""
        return {conversation: state.watermark for conversation, state in self._conversations.items()}

    def touched(self) -> set[str]:
        """The conversations whose watermark may have moved since the last call (to save only those)."""
        touched, self._touched = self._touched, set()
        return touched

    # Inputs ---------------------------------------------------------------------------------------

    def resume(self, watermarks: dict[str, int], since: str | None) -> None:
        """Adopt cursors saved by an earlier run of this device, before the first sync.

        A watermark only moves forward (this run may have sent messages already), and ``since`` is
        taken only if this engine has none.
        """
        self._touched.update(watermarks)
        for conversation, seq in watermarks.items():
            state = self._conversations.get(conversation)
            if state is None:
                self._conversations[conversation] = _Conversation(seq)
            elif seq > state.watermark:
                state.watermark = seq
                state.held = {held: message for held, message in state.held.items() if held > seq}
                state.own = {own for own in state.own if own > seq}
                while state.watermark + 1 in state.own:
                    state.own.discard(state.watermark + 1)
                    state.watermark += 1
        if self.since is None:
            self.since = since

    def expect_own(self, client_msg_id: str) -> None:
        """This client is sending a message with ``client_msg_id``: never hand it to the application.

        Called before the send goes out, so that the message is recognized even if a sync fetches it
        before the send returns.
        """
        self._sending.add(client_msg_id)

    def mark_own(self, message: Message) -> None:
        """This client's send was stored as ``message``: count its seq as delivered."""
        if message.client_msg_id is not None:
            self._sending.discard(message.client_msg_id)
        self._touched.add(message.conversation)
        state = self._state_for_push(message.conversation)
        if message.seq <= state.watermark:
            return
        state.held.pop(message.seq, None)
        state.own.add(message.seq)
        # Move over own seqs only; a held message further up is released by the fetch under way for it.
        while state.watermark + 1 in state.own:
            state.own.discard(state.watermark + 1)
            state.watermark += 1
        if self._pass:
            self._finish_pass()

    def forget_own(self, client_msg_id: str) -> None:
        """A send announced by :meth:`expect_own` failed for good."""
        self._sending.discard(client_msg_id)

    def _is_own(self, message: Message) -> bool:
        return message.client_msg_id is not None and message.client_msg_id in self._sending

    def on_conversations(self, page: ConversationPage) -> list[Action]:
        """A page of "conversations since"; delivers what each conversation's ``recent`` messages cover and
        fetches whatever else it is missing."""
        actions: list[Action] = []
        for summary in page.conversations:
            self._touched.add(summary.id)
            state = self._conversations.get(summary.id)
            if state is None:
                state = self._conversations[summary.id] = _Conversation(self._initial(summary))
            if summary.max_seq > state.watermark:
                self._pass[summary.id] = max(summary.max_seq, self._pass.get(summary.id, 0))
                if not state.fetching:
                    state.fetching = True
                    fetch = Fetch(summary.id, state.watermark)
                    if _recent_covers(summary, state.watermark):
                        # Every seq above the watermark that this user may see came with the summary: the
                        # answer the fetch would get, without asking.
                        covered = [message for message in summary.recent if message.seq > state.watermark]
                        answer = MessagePage(
                            conversation=summary.id, messages=covered, has_more=False, max_seq=summary.max_seq
                        )
                        actions.extend(self.on_history(fetch, answer))
                    else:
                        actions.append(fetch)
        if not page.has_more:
            self._pass_cursor = page.cursor
            self._finish_pass()
        return actions

    def on_push(self, message: Message) -> list[Action]:
        """A message pushed by the gateway."""
        self._touched.add(message.conversation)
        state = self._state_for_push(message.conversation)
        seq = message.seq
        if seq <= state.watermark or seq in state.held or seq in state.own:
            return []
        if self._is_own(message):
            state.own.add(seq)
            advanced = self._advance(message.conversation, state)
            if self._pass:
                self._finish_pass()
            return advanced
        if seq == state.watermark + 1:
            state.watermark = seq
            actions: list[Action] = [Deliver(message), *self._advance(message.conversation, state)]
            if self._pass:
                self._finish_pass()
            return actions
        state.held[seq] = message
        if state.fetching:
            return []
        state.fetching = True
        return [Fetch(message.conversation, state.watermark, seq)]

    def on_history(self, fetch: Fetch, page: MessagePage) -> list[Action]:
        """The answer to a :class:`Fetch`."""
        self._touched.add(fetch.conversation)
        state = self._conversations.setdefault(fetch.conversation, _Conversation(fetch.after))
        actions: list[Action] = []
        last = fetch.after
        for message in page.messages:
            last = max(last, message.seq)
            if message.seq <= state.watermark or message.seq in state.own:
                continue
            if self._is_own(message):
                state.own.add(message.seq)
                continue
            state.held[message.seq] = message
        if page.has_more:
            # Deliver what is contiguous now, then ask for the rest.
            actions.extend(self._advance(fetch.conversation, state))
            actions.append(Fetch(fetch.conversation, last, fetch.before))
            return actions
        # The range is complete: seqs in it that did not come back are not visible to this user.
        end = page.max_seq if fetch.before is None else fetch.before - 1
        floor = max(end, last)
        if floor > state.watermark:
            state.watermark = max(state.watermark, self._contiguous_floor(state, floor))
        state.fetching = False
        actions.extend(self._advance(fetch.conversation, state))
        if state.held:
            # Pushes beyond the fetched range arrived meanwhile and a gap remains below them.
            state.fetching = True
            actions.append(Fetch(fetch.conversation, state.watermark, min(state.held)))
        if self._pass:
            self._finish_pass()
        return actions

    def on_fetch_failed(self, fetch: Fetch, *, gone: bool = False) -> None:
        """A fetch could not be done; the next resync asks again (and from the same cursor).

        ``gone``: the conversation is not mine any more (the server answered 404); the current pass
        does not wait for it.
        """
        state = self._conversations.get(fetch.conversation)
        if state is not None:
            state.fetching = False
        if gone and self._pass.pop(fetch.conversation, None) is not None:
            self._finish_pass()

    def reset_fetching(self) -> None:
        """Forget fetches in flight (the connection that would have served them is gone)."""
        for state in self._conversations.values():
            state.fetching = False
        self._pass.clear()
        self._pass_cursor = None

    # Internals ------------------------------------------------------------------------------------

    def _finish_pass(self) -> None:
        for conversation, target in list(self._pass.items()):
            state = self._conversations.get(conversation)
            if state is None or state.watermark >= target:
                del self._pass[conversation]
        if not self._pass and self._pass_cursor is not None:
            self.since, self._pass_cursor = self._pass_cursor, None

    def _initial(self, summary: ConversationSummary) -> int:
        if self.start == "latest":
            return summary.max_seq
        if self.start == "all":
            return summary.joined_seq
        return max(summary.read_seq, summary.joined_seq)

    def _state_for_push(self, conversation: str) -> _Conversation:
        state = self._conversations.get(conversation)
        if state is None:
            # A conversation that began after the last resync: everything in it is new to us.
            state = self._conversations[conversation] = _Conversation(0)
        return state

    def _contiguous_floor(self, state: _Conversation, floor: int) -> int:
        # Held messages at or below the floor are delivered by _advance; seqs the server did not return
        # below the floor do not exist for us, so the watermark may jump over them.
        if not state.held:
            return floor
        lowest_held = min(state.held)
        return min(floor, lowest_held - 1)

    def _advance(self, conversation: str, state: _Conversation) -> list[Action]:
        actions: list[Action] = []
        while True:
            following = state.watermark + 1
            if following in state.own:
                state.own.discard(following)
                state.watermark = following
            elif following in state.held:
                actions.append(Deliver(state.held.pop(following)))
                state.watermark = following
            else:
                break
        return actions


# Which way a catch-up goes ------------------------------------------------------------------------

SYNC_RETRIES = 5
"""``sync`` frames the server may refuse in a row as busy (``rate_limited``, ``unavailable``) before the
refusal is raised (and the client reconnects after its ``retry_after``)."""


@dataclass(frozen=True, slots=True)
class AskOverHttp:
    """The gateway does not know the ``sync`` frame: ask ``GET /v1/conversations`` instead."""


@dataclass(frozen=True, slots=True)
class SendAgain:
    """The server was busy: send the ``sync`` frame again after ``delay`` seconds."""

    delay: float


class SyncRequests:
    """How one connection asks for pages of "conversations since", and what the answers mean (no I/O).

    :meth:`request` gives the ``sync`` frame to send (``None``: use HTTP), and :meth:`answer` reads
    each frame that arrives until it returns something other than ``None``: the page, :class:`SendAgain`,
    :class:`AskOverHttp` (an ``unknown_frame`` error without an id: an older gateway; this connection
    uses HTTP from then on) or the :class:`~im_sdk.errors.APIError` to raise. Other frames (pushes
    arriving meanwhile) are not answers; the shell keeps them for after the page.
    """

    def __init__(self) -> None:
        self.over_socket = True
        """Whether pages are asked for with ``sync`` frames on this connection."""
        self.pending: str | None = None
        """The id of the ``sync`` frame waiting for its answer."""
        self._sent = 0
        self._refused = 0

    def request(self, since: str | None, limit: int, recent: int) -> SyncFrame | None:
        """The frame asking for one page, or ``None`` when the page is to be asked for over HTTP."""
        if not self.over_socket:
            return None
        self._sent += 1
        self.pending = f"sync-{self._sent}"
        return SyncFrame(id=self.pending, since=since, limit=limit, recent=recent)

    def answer(self, frame: object) -> ConversationPage | SendAgain | AskOverHttp | APIError | None:
        """What ``frame`` means for the pending request (``None``: it is not its answer)."""
        if self.pending is None:
            return None
        if isinstance(frame, SyncPageFrame) and frame.id == self.pending:
            self.pending = None
            self._refused = 0
            return frame.page
        if not isinstance(frame, ErrorFrame):
            return None
        if frame.id is None and frame.client_msg_id is None and frame.code == ErrorCode.UNKNOWN_FRAME:
            # Only the sync frame can be unknown to a gateway (this client sends nothing else it may lack).
            self.pending = None
            self.over_socket = False
            return AskOverHttp()
        if frame.id != self.pending:
            return None
        self.pending = None
        busy = frame.code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE)
        if busy and self._refused < SYNC_RETRIES:
            self._refused += 1
            return SendAgain(frame.retry_after if frame.retry_after is not None else 1.0)
        self._refused = 0
        return error_for(frame.code, frame.message, status=http_status(frame.code), retry_after=frame.retry_after)
