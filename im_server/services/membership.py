"""Who receives a group's messages, cached per API node.

Each entry is a group's roster (active members and recent leavers, with the seqs they joined and left
at) and the conversation's ``members_version`` it was read at. A commit reports the version it saw, so
a message committed after a membership change always meets a roster at least that new: the cache is
reloaded first. Recipients are filtered by seq, so a message committed before a kick still reaches the
kicked member and one committed after does not, whatever the order in which they are delivered. Other
nodes' changes also arrive as NATS events that drop the entry early.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from ..storage._util import now_ms
from ..storage.groups import GroupStore, Roster

__all__ = ["MembershipCache"]

RECENT_LEAVERS_MS = 120_000
"""Leavers stay in a loaded roster this long, for messages committed just before they left."""


@dataclass(slots=True)
class _Entry:
    roster: Roster
    active: list[int] = field(default_factory=list)
    newest_join: int = 0
    leavers: dict[int, tuple[int, int]] = field(default_factory=dict)


class MembershipCache:
    """Group rosters by conversation id, bounded in size."""

    def __init__(self, store: GroupStore, *, size: int = 10_000) -> None:
        self._store = store
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_Entry | None]] = {}

    def invalidate(self, conversation: str) -> None:
        """Forget a group's roster (it changed)."""
        self._entries.pop(conversation, None)

    async def _entry(self, conversation: str, version: int) -> _Entry | None:
        entry = self._entries.get(conversation)
        if entry is not None and entry.roster.version >= version:
            self._entries.move_to_end(conversation)
            return entry
        pending = self._loading.get(conversation)
        if pending is not None:
            loaded = await asyncio.shield(pending)
            if loaded is None or loaded.roster.version >= version:
                return loaded
        future: asyncio.Future[_Entry | None] = asyncio.get_running_loop().create_future()
        self._loading[conversation] = future
        try:
            roster = await self._store.roster(conversation, recent_since=now_ms() - RECENT_LEAVERS_MS)
            loaded = None if roster is None else _index(roster)
            future.set_result(loaded)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(conversation, None)
        if loaded is not None:
            self._entries[conversation] = loaded
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return loaded

    async def recipients(self, conversation: str, seq: int, version: int) -> list[int]:
        """The users who should receive message ``seq`` of a group committed at membership ``version``."""
        entry = await self._entry(conversation, version)
        if entry is None:
            return []
        if seq > entry.newest_join:
            users = list(entry.active)
        else:
            users = [user for user in entry.active if entry.roster.members[user][0] < seq]
        users.extend(user for user, (joined, left) in entry.leavers.items() if joined < seq <= left)
        return users


def _index(roster: Roster) -> _Entry:
    entry = _Entry(roster)
    for user, (joined, left) in roster.members.items():
        if left is None:
            entry.active.append(user)
            entry.newest_join = max(entry.newest_join, joined)
        else:
            entry.leavers[user] = (joined, left)
    return entry
