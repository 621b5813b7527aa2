"""Quick-reply button presses and declared commands.

A press is stored for the message's sender before it is acknowledged to the presser, then pushed to
the sender's online devices as a ``button_press`` notice. The push is only a notification: the sender
lists what it has not acknowledged (``GET /v1/presses``) after every (re)connect, so a press the
server accepted is never lost while the sender is away (within ``IM_PRESS_TTL``).

Rules: only a member of the conversation may press, on a message it can see, that is not recalled and
carries that button, and not on its own message; in a direct conversation, not when the sender blocked
the presser (answered like a missing conversation, so a block cannot be told). Presses are rate
limited per user, and an account holds at most ``IM_PRESS_MAX_PENDING`` unacknowledged presses.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from im_schema.errors import ErrorCode
from im_schema.events import ButtonPressNotice
from im_schema.ids import direct_users
from im_schema.presses import BotCommand, CommandList, Press, PressList

from ..errors import Forbidden, NotFound, RateLimited
from ..settings import Settings
from ..storage._util import now_ms
from ..storage.presses import PressStore
from .delivery import Deliverer
from .messaging import UserDirectory
from .ratelimit import RateLimiter
from .social import SocialService

__all__ = ["PressService"]

log = logging.getLogger(__name__)


class PressService:
    """Press buttons, list and acknowledge presses, declare and list commands."""

    def __init__(
        self,
        settings: Settings,
        store: PressStore,
        social: SocialService,
        directory: UserDirectory,
        deliverer: Deliverer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._social = social
        self._directory = directory
        self._deliverer = deliverer
        self._presses: RateLimiter[int] = RateLimiter(settings.press_rate, settings.press_burst)
        self._declarations: RateLimiter[int] = RateLimiter(settings.commands_rate, settings.commands_burst)

    async def press(self, user_id: int, conversation: str, seq: int, button: str) -> Press:
        """Press ``button`` of a message; the sender's devices are told once the press is stored."""
        wait = self._presses.acquire(user_id)
        if wait:
            raise RateLimited("too many button presses; slow down", retry_after=round(wait, 3))
        if conversation.startswith("d:") and user_id in direct_users(conversation):
            sender = await self._store.sender(conversation, seq)
            if sender is not None and sender != user_id and user_id in (await self._social.graph(sender)).blocked:
                raise NotFound("the conversation does not exist", code=ErrorCode.CONVERSATION_NOT_FOUND)
        ttl_ms = int(self._settings.press_ttl * 1000)
        for attempt in (1, 2):
            try:
                pressed = await self._store.press(
                    conversation,
                    seq,
                    user_id,
                    button,
                    now=now_ms(),
                    ttl_ms=ttl_ms,
                    max_pending=self._settings.press_max_pending,
                )
                break
            except IntegrityError:
                # The same press, stored at once by a concurrent request: the second try finds it.
                if attempt == 2:
                    raise
        if pressed.created:
            try:
                await self._deliverer.notice([pressed.recipient], ButtonPressNotice(press=pressed.press))
            except Exception as exc:  # stored: the recipient lists it after its next connect
                log.warning("press %d stored but not pushed: %s", pressed.press.id, exc)
        return pressed.press

    async def pending(self, user_id: int, *, after: int, limit: int) -> PressList:
        """My unacknowledged presses, oldest first."""
        ttl_ms = int(self._settings.press_ttl * 1000)
        presses, more = await self._store.pending(user_id, after=after, limit=limit, now=now_ms(), ttl_ms=ttl_ms)
        return PressList(presses=presses, has_more=more)

    async def acknowledge(self, user_id: int, press: int) -> None:
        """Mark a press of mine handled (harmless if it is not pending)."""
        await self._store.acknowledge(user_id, press)

    async def set_commands(self, user_id: int, commands: list[BotCommand]) -> CommandList:
        """Replace the commands ``user_id`` declares."""
        wait = self._declarations.acquire(user_id)
        if wait:
            raise RateLimited("too many command declarations; slow down", retry_after=round(wait, 3))
        await self._store.set_commands(user_id, commands, now=now_ms())
        return CommandList(user_id=user_id, commands=commands)

    async def commands(self, user: int | str) -> CommandList:
        """The commands a user declared (an empty list if none)."""
        user_id = await self._directory.resolve(user)
        return CommandList(user_id=user_id, commands=await self._store.commands(user_id))

    @staticmethod
    def require_bot(is_bot: bool) -> None:
        """Admins declare commands for bot accounts only."""
        if not is_bot:
            raise Forbidden("only bot accounts have commands an admin may set")
