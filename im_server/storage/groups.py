"""Groups: :class:`GroupStore`, the facade over every group transaction.

The transactions live by concern: a group's life (create, read, settings, dissolve) in
:mod:`.group_lifecycle`, membership in :mod:`.group_members`, join requests and invitations in
:mod:`.group_requests`, and what they share (rows, locks, consent) in :mod:`.group_base`.

Every change is one transaction that also appends a system message to the group's conversation and,
when membership changes, bumps the conversation's ``members_version``. Role rules are checked in that
same transaction, so two admins acting at once cannot both win.
"""

from __future__ import annotations

from .engine import Database
from .group_base import Change, MemberRow, Roster, lock_user
from .group_lifecycle import LifecycleTransactions
from .group_members import MembershipTransactions
from .group_requests import RequestTransactions

# Change, MemberRow, Roster and lock_user are re-exported from .group_base, where they live.
__all__ = ["Change", "GroupStore", "MemberRow", "Roster", "lock_user"]


class GroupStore(LifecycleTransactions, MembershipTransactions, RequestTransactions):
    """Named transactions on groups: each method runs one transaction, and sits beside it in the module of
    its concern (:mod:`.group_lifecycle`, :mod:`.group_members`, :mod:`.group_requests`)."""

    def __init__(self, db: Database) -> None:
        self._db = db
