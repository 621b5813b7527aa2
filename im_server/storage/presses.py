"""Button presses kept for the senders of the messages, and the commands accounts declare.

A press is checked and stored in one transaction (membership, the message, its button), so that a
kick, a recall or a leave cannot slip in between. Presses stay until their recipient acknowledges them
(the row is deleted) or they lapse (rows past the TTL are removed by the recipient's next press).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select

from im_schema.errors import ErrorCode
from im_schema.presses import BotCommand, Press

from ..errors import Refusal
from ._util import insert_ignore, ms_to_datetime
from .engine import Database
from .tables import button_presses, members, messages, user_commands

__all__ = ["PressStore", "Pressed"]


@dataclass(frozen=True, slots=True)
class Pressed:
    """A stored press, and whether this call stored it (``False``: the same press was pending)."""

    press: Press
    recipient: int
    created: bool


def _press_model(row: Any) -> Press:
    return Press(
        id=row.id,
        conversation=row.conversation_id,
        seq=row.seq,
        button=row.button,
        user_id=row.user_id,
        pressed_at=ms_to_datetime(row.created_at),
    )


class PressStore:
    """Named transactions on button presses and declared commands."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sender(self, conversation: str, seq: int) -> int | None:
        """The sender of a message (``None`` if there is no such message)."""
        return await self._db.read(_sender, conversation, seq)

    async def press(
        self, conversation: str, seq: int, user_id: int, button: str, *, now: int, ttl_ms: int, max_pending: int
    ) -> Pressed:
        """Store a press of ``button`` on a message by a member; raises :class:`~im_server.errors.Refusal`."""
        return await self._db.write(_press, conversation, seq, user_id, button, now, ttl_ms, max_pending)

    async def pending(
        self, recipient: int, *, after: int, limit: int, now: int, ttl_ms: int
    ) -> tuple[list[Press], bool]:
        """Unacknowledged presses for ``recipient`` above ``after``, oldest first, and whether more remain."""
        return await self._db.read(_pending, recipient, after, limit, now - ttl_ms)

    async def acknowledge(self, recipient: int, press: int) -> bool:
        """Forget a press of the recipient's; ``False`` if it was not pending."""
        return await self._db.write(_acknowledge, recipient, press)

    async def set_commands(self, user_id: int, commands: list[BotCommand], *, now: int) -> None:
        """Replace an account's declared commands."""
        body = orjson.dumps([command.model_dump(exclude_none=True) for command in commands]).decode()
        await self._db.write(_set_commands, self._db.dialect, user_id, body, now)

    async def commands(self, user_id: int) -> list[BotCommand]:
        """An account's declared commands (none if it never declared any)."""
        raw = await self._db.read(_commands, user_id)
        return [BotCommand.model_validate(item) for item in orjson.loads(raw)] if raw else []


def _sender(conn: Connection, conversation: str, seq: int) -> int | None:
    return conn.execute(
        select(messages.c.sender_id).where(messages.c.conversation_id == conversation, messages.c.seq == seq)
    ).scalar_one_or_none()


def _press(
    conn: Connection,
    conversation: str,
    seq: int,
    user_id: int,
    button: str,
    now: int,
    ttl_ms: int,
    max_pending: int,
) -> Pressed:
    member = conn.execute(
        select(members.c.joined_seq, members.c.left_seq).where(
            members.c.conversation_id == conversation, members.c.user_id == user_id
        )
    ).one_or_none()
    if member is None or member.left_seq is not None:
        raise Refusal(ErrorCode.CONVERSATION_NOT_FOUND, "the conversation does not exist")
    row = conn.execute(
        select(messages.c.sender_id, messages.c.kind, messages.c.body).where(
            messages.c.conversation_id == conversation, messages.c.seq == seq
        )
    ).one_or_none()
    if row is None or seq <= member.joined_seq:
        raise Refusal(ErrorCode.NOT_FOUND, "no such message")
    if row.kind == "recalled":
        raise Refusal(ErrorCode.NOT_FOUND, "the message was recalled")
    buttons = orjson.loads(row.body).get("buttons") if row.kind == "text" else None
    if not buttons or button not in {item.get("id") for item in buttons}:
        raise Refusal(ErrorCode.NOT_FOUND, "the message has no such button")
    if row.sender_id == user_id:
        raise Refusal(ErrorCode.BAD_REQUEST, "you cannot press the buttons of your own message")
    lapsed = now - ttl_ms
    existing = conn.execute(
        select(button_presses).where(
            button_presses.c.user_id == user_id,
            button_presses.c.conversation_id == conversation,
            button_presses.c.seq == seq,
            button_presses.c.button == button,
        )
    ).one_or_none()
    if existing is not None and existing.created_at > lapsed:
        return Pressed(_press_model(existing), row.sender_id, created=False)
    recipient = row.sender_id
    conn.execute(
        delete(button_presses).where(button_presses.c.recipient_id == recipient, button_presses.c.created_at <= lapsed)
    )
    if existing is not None:
        conn.execute(delete(button_presses).where(button_presses.c.id == existing.id))
    waiting = conn.execute(
        select(func.count()).select_from(button_presses).where(button_presses.c.recipient_id == recipient)
    ).scalar_one()
    if waiting >= max_pending:
        raise Refusal(
            ErrorCode.RATE_LIMITED, "the sender has too many unhandled presses; try again later", retry_after=60.0
        )
    press_id = conn.execute(
        insert(button_presses)
        .values(
            recipient_id=recipient,
            user_id=user_id,
            conversation_id=conversation,
            seq=seq,
            button=button,
            created_at=now,
        )
        .returning(button_presses.c.id)
    ).scalar_one()
    press = Press(
        id=press_id,
        conversation=conversation,
        seq=seq,
        button=button,
        user_id=user_id,
        pressed_at=ms_to_datetime(now),
    )
    return Pressed(press, recipient, created=True)


def _pending(conn: Connection, recipient: int, after: int, limit: int, lapsed: int) -> tuple[list[Press], bool]:
    rows = conn.execute(
        select(button_presses)
        .where(
            button_presses.c.recipient_id == recipient,
            button_presses.c.id > after,
            button_presses.c.created_at > lapsed,
        )
        .order_by(button_presses.c.id)
        .limit(limit + 1)
    ).all()
    return [_press_model(row) for row in rows[:limit]], len(rows) > limit


def _acknowledge(conn: Connection, recipient: int, press: int) -> bool:
    result = conn.execute(
        delete(button_presses).where(button_presses.c.id == press, button_presses.c.recipient_id == recipient)
    )
    return bool(result.rowcount)


def _set_commands(conn: Connection, dialect: str, user_id: int, body: str, now: int) -> None:
    updated = conn.execute(
        user_commands.update().where(user_commands.c.user_id == user_id).values(commands=body, updated_at=now)
    )
    if not updated.rowcount:
        conn.execute(insert_ignore(dialect, user_commands).values(user_id=user_id, commands=body, updated_at=now))


def _commands(conn: Connection, user_id: int) -> str | None:
    return conn.execute(select(user_commands.c.commands).where(user_commands.c.user_id == user_id)).scalar_one_or_none()
