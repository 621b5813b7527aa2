"""Consent in groups: who may put whom into a group, as pure functions the group transactions call.

The transactions in :mod:`im_server.storage.groups` read the facts (blocks both ways, friendship, the
target's privacy setting, recent activity) with the rows they depend on locked, then ask these functions;
nothing here does I/O, so the rule is tested on its own.

The rule, for an ``actor`` putting a ``target`` into a group (``actor != target``):

1. The actor blocked the target: **refused** (``user_blocked``). The actor knows of their own block, so
   saying so leaks nothing; they unblock first.
2. The target blocked the actor: a **hidden** invitation. It is stored like any other and the actor sees it
   pending, but the target is never told, never sees it listed and cannot accept it, so the actor learns
   nothing of the block and can never reach the target.
3. Otherwise the target's privacy setting decides: ``everyone`` and, for friends of the target,
   ``friends`` **add** the target at once; anyone else gets an **invitation** the target accepts or
   declines.

Approving a join request is the target's own wish: only rule 1 applies to the approving admin. Joining an
open group involves no second person. An invitation is usable (listed, accepted) only while neither side
blocks the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from im_schema.social import GroupInvitePolicy

__all__ = ["Admission", "ConsentLimits", "Relation", "admission", "invitation_usable", "quota_wait"]

Admission = Literal["add", "invite", "hide", "refuse"]
"""What to do with one target: add now, invite (and tell them), invite without telling them, refuse."""


@dataclass(frozen=True, slots=True)
class Relation:
    """The facts that decide one admission."""

    actor_blocked_target: bool
    target_blocked_actor: bool
    friends: bool
    policy: GroupInvitePolicy
    """The target's "who can add me to groups" setting."""


@dataclass(frozen=True, slots=True)
class ConsentLimits:
    """The server's consent settings, in milliseconds where they are durations."""

    default_policy: GroupInvitePolicy = "friends"
    """For users who never chose."""
    invitation_ttl: int = 7 * 24 * 3600 * 1000
    """A pending invitation lapses after this."""
    decline_cooldown: int = 24 * 3600 * 1000
    """After a decline the same group cannot invite the same user again for this long."""
    invites_per_hour: int = 500
    """Users one account may add or invite to groups in any hour (creation included)."""
    creates_per_day: int = 50
    """Groups one account may create in any 24 hours."""


def admission(relation: Relation) -> Admission:
    """What happens when someone puts a user into a group; see the module docstring for the rule."""
    if relation.actor_blocked_target:
        return "refuse"
    if relation.target_blocked_actor:
        return "hide"
    if relation.policy == "everyone" or (relation.policy == "friends" and relation.friends):
        return "add"
    return "invite"


def invitation_usable(*, inviter_blocked_invitee: bool, invitee_blocked_inviter: bool) -> bool:
    """Whether an invitee may see and accept an invitation: only while neither side blocks the other."""
    return not (inviter_blocked_invitee or invitee_blocked_inviter)


def quota_wait(recent: Sequence[int], *, limit: int, cost: int, window: int, now: int) -> int:
    """Milliseconds until ``cost`` more actions fit in a sliding ``window`` that allows ``limit``.

    Args:
        recent: When the actions still inside the window happened (ms), in any order.
        limit: How many actions the window allows.
        cost: How many actions are asked for now.
        window: The window's length (ms).
        now: The current time (ms).

    Returns:
        0 if they fit now; else how long until enough of the recent ones have left the window (the whole
        window when ``cost`` alone is over the limit, which never fits).
    """
    inside = sorted(t for t in recent if t > now - window)
    excess = len(inside) + cost - limit
    if excess <= 0:
        return 0
    if cost > limit:
        return window
    return max(1, inside[excess - 1] + window - now)
