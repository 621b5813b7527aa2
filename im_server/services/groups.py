"""Group operations: the rules live in the store's transactions; this layer resolves users, maps rule
violations to errors, and delivers each change's system message and invitation notices.

Consent (who may put whom into a group) is decided inside the transactions by
:mod:`im_server.storage.consent`; this layer hands them the server's :class:`ConsentLimits`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from im_schema.errors import ErrorCode
from im_schema.events import GroupInvitationNotice, JoinRequestNotice
from im_schema.groups import Group, GroupInvitation, GroupMember, JoinRequest, JoinResult
from im_schema.ids import group_conversation
from im_schema.social import GroupInvitePolicy, Privacy

from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..settings import Settings
from ..storage._util import ms_to_datetime, now_ms
from ..storage.consent import ConsentLimits
from ..storage.groups import Change, GroupStore
from .delivery import Deliverer
from .membership import MembershipCache
from .messaging import UserDirectory
from .social import SocialService

__all__ = ["GroupService", "consent_limits"]

log = logging.getLogger(__name__)


def consent_limits(settings: Settings) -> ConsentLimits:
    """The consent settings as the group transactions take them."""
    return ConsentLimits(
        default_policy=settings.group_invites_default,
        invitation_ttl=round(settings.group_invitation_ttl * 1000),
        decline_cooldown=round(settings.group_invitation_cooldown * 1000),
        invites_per_hour=settings.group_invites_per_hour,
        creates_per_day=settings.group_creates_per_day,
    )


class GroupService:
    """Every group operation of the API."""

    def __init__(
        self,
        settings: Settings,
        store: GroupStore,
        memberships: MembershipCache,
        directory: UserDirectory,
        deliverer: Deliverer,
        social: SocialService,
        *,
        announce: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._memberships = memberships
        self._directory = directory
        self._deliverer = deliverer
        self._social = social
        self._consent = consent_limits(settings)
        self.announce = announce
        """Tells the other API nodes that a group's membership changed (``None``: no other node to tell)."""

    async def _run(self, operation: Awaitable[Change]) -> Change:
        change = await operation
        written = change.written
        if written is not None:
            if change.recipients:  # the roster moved: no node may keep delivering from the old one
                self._memberships.invalidate(written.conversation)
                if self.announce is not None:
                    try:
                        await self.announce(written.conversation)
                    except Exception as exc:
                        log.warning("cannot announce a membership change: %s", exc)
            await self._deliverer.written(written)
        for invitation in change.invitations:
            await self._deliverer.notice([invitation.invitee.id], GroupInvitationNotice(invitation=invitation))
        return change

    async def _users(self, refs: list[int | str]) -> list[int]:
        unique = list(dict.fromkeys(refs))
        # A list longer than the hourly allowance can never go through: refuse it before resolving it.
        if len(unique) > self._settings.group_invites_per_hour:
            raise BadRequest(
                f"at most {self._settings.group_invites_per_hour} users an hour may be added or invited to groups"
            )
        return [await self._directory.resolve(ref) for ref in unique]

    async def _group(self, group_id: int, viewer: int) -> Group:
        group = await self._store.get(group_id, viewer)
        if group is None:
            raise NotFound("no such group", code=ErrorCode.GROUP_NOT_FOUND)
        return group

    async def create(
        self,
        owner: int,
        name: str,
        members: list[int | str],
        *,
        join_policy: str,
        allow_member_invite: bool,
        history_visible: bool,
    ) -> Group:
        """Create a group with me as owner."""
        change = await self._run(
            self._store.create(
                owner,
                name,
                await self._users(members),
                join_policy=join_policy,
                allow_member_invite=allow_member_invite,
                history_visible=history_visible,
                limit=self._settings.group_member_limit,
                now=now_ms(),
                consent=self._consent,
            )
        )
        assert change.group is not None
        return change.group

    async def info(self, group_id: int, viewer: int) -> Group:
        """A group's information: everything for members, the basics for others (to decide to join)."""
        group = await self._group(group_id, viewer)
        if group.my_role is None:
            return group.model_copy(update={"announcement": "", "announcement_at": None})
        return group

    async def mine(self, user_id: int) -> list[Group]:
        """My groups."""
        return await self._store.of_user(user_id)

    async def members(self, group_id: int, viewer: int, *, after: int, limit: int) -> tuple[list[GroupMember], bool]:
        """A page of members (members only)."""
        group = await self._group(group_id, viewer)
        if group.my_role is None:
            raise Forbidden("only members see the member list", code=ErrorCode.NOT_A_MEMBER)
        rows, has_more = await self._store.members(group_id, after=after, limit=limit)
        now = now_ms()
        page = [
            GroupMember(
                user=user,
                role=row.role,
                nickname=row.nickname,
                online=self._social.online(user.id),
                muted_until=ms_to_datetime(row.muted_until) if row.muted_until and row.muted_until > now else None,
                joined_at=ms_to_datetime(row.joined_at),
            )
            for user, row in rows
        ]
        return page, has_more

    async def join(self, group_id: int, user_id: int, message: str) -> JoinResult:
        """Join an open group, or ask to join one that needs approval."""
        group = await self._group(group_id, user_id)
        if group.my_role is not None:
            raise Conflict("you are a member already", code=ErrorCode.ALREADY_MEMBER)
        if group.dissolved:
            raise Forbidden("the group was dissolved", code=ErrorCode.GROUP_DISSOLVED)
        if group.join_policy == "invite_only":
            raise Forbidden("this group is by invitation only")
        if group.join_policy == "open":
            change = await self._run(
                self._store.add(
                    group_id, user_id, [user_id], via="join", limit=self._settings.group_member_limit, now=now_ms()
                )
            )
            return JoinResult(status="joined", group=await self._group(group_id, user_id) if change else None)
        request = await self._store.request_join(group_id, user_id, message, now=now_ms())
        await self._deliverer.notice(await self._store.managers(group_id), JoinRequestNotice(request=request))
        return JoinResult(status="requested", request=request)

    async def requests(self, group_id: int, actor: int) -> list[JoinRequest]:
        """Pending join requests (owner and admins)."""
        return await self._store.join_requests(group_id, actor)

    async def decide(self, group_id: int, request_id: int, actor: int, approve: bool) -> None:
        """Approve or reject a join request."""
        await self._run(
            self._store.decide_join(
                group_id, request_id, actor, approve, limit=self._settings.group_member_limit, now=now_ms()
            )
        )

    async def leave(self, group_id: int, user_id: int) -> None:
        """Leave the group."""
        await self._run(self._store.remove(group_id, user_id, user_id, now=now_ms()))

    async def kick(self, group_id: int, actor: int, target: int | str) -> None:
        """Remove a member."""
        user_id = await self._directory.resolve(target)
        if user_id == actor:
            raise BadRequest("to leave a group, use leave")
        await self._run(self._store.remove(group_id, actor, user_id, now=now_ms()))

    async def invite(self, group_id: int, actor: int, targets: list[int | str]) -> Group:
        """Add users to the group; those whose consent is needed get an invitation instead."""
        await self._run(
            self._store.add(
                group_id,
                actor,
                await self._users(targets),
                via="invite",
                limit=self._settings.group_member_limit,
                now=now_ms(),
                consent=self._consent,
            )
        )
        return await self._group(group_id, actor)

    # Invitations ---------------------------------------------------------------------------------

    async def my_invitations(self, user_id: int) -> list[GroupInvitation]:
        """The pending invitations sent to me."""
        return await self._store.invitations_for(user_id, now=now_ms())

    async def invitations(self, group_id: int, actor: int) -> list[GroupInvitation]:
        """A group's pending invitations (owner and admins: all; members: their own)."""
        return await self._store.invitations_of(group_id, actor, now=now_ms())

    async def accept_invitation(self, invitation_id: int, user_id: int) -> Group:
        """Join the group I was invited to."""
        change = await self._run(
            self._store.accept_invitation(invitation_id, user_id, limit=self._settings.group_member_limit, now=now_ms())
        )
        assert change.group is not None
        return change.group

    async def decline_invitation(self, invitation_id: int, user_id: int) -> None:
        """Say no to an invitation."""
        invitation = await self._store.decline_invitation(invitation_id, user_id, now=now_ms())
        await self._deliverer.notice([user_id], GroupInvitationNotice(invitation=invitation))

    async def withdraw_invitation(self, group_id: int, invitation_id: int, actor: int) -> None:
        """Take back an invitation (its inviter, or the owner and admins)."""
        invitation, told = await self._store.withdraw_invitation(group_id, invitation_id, actor, now=now_ms())
        if told:
            await self._deliverer.notice([invitation.invitee.id], GroupInvitationNotice(invitation=invitation))

    # Privacy -------------------------------------------------------------------------------------

    async def privacy(self, user_id: int) -> Privacy:
        """My privacy settings."""
        return Privacy(group_invites=await self._store.privacy(user_id, self._settings.group_invites_default))

    async def set_privacy(self, user_id: int, *, group_invites: GroupInvitePolicy | None) -> Privacy:
        """Change my privacy settings (``None`` leaves one as it is)."""
        if group_invites is not None:
            await self._store.set_privacy(user_id, group_invites, now=now_ms())
        return await self.privacy(user_id)

    async def dissolve(self, group_id: int, actor: int) -> None:
        """End the group (owner)."""
        await self._run(self._store.dissolve(group_id, actor, now=now_ms()))

    async def update(self, group_id: int, actor: int, changes: dict[str, Any]) -> Group:
        """Rename or change settings."""
        await self._run(self._store.update(group_id, actor, changes, now=now_ms()))
        return await self._group(group_id, actor)

    async def announce_text(self, group_id: int, actor: int, text: str) -> Group:
        """Set the announcement."""
        await self._run(self._store.announce(group_id, actor, text, now=now_ms()))
        return await self._group(group_id, actor)

    async def transfer(self, group_id: int, actor: int, target: int | str) -> Group:
        """Hand ownership to another member."""
        user_id = await self._directory.resolve(target)
        await self._run(self._store.transfer(group_id, actor, user_id, now=now_ms()))
        return await self._group(group_id, actor)

    async def set_admin(self, group_id: int, actor: int, target: int | str, admin: bool) -> None:
        """Grant or revoke admin."""
        user_id = await self._directory.resolve(target)
        await self._run(self._store.set_admin(group_id, actor, user_id, admin, now=now_ms()))

    async def mute(self, group_id: int, actor: int, target: int | str, until: datetime | None) -> None:
        """Mute a member until a time, or lift the mute."""
        user_id = await self._directory.resolve(target)
        until_ms = int(until.timestamp() * 1000) if until is not None else None
        await self._run(self._store.mute(group_id, actor, user_id, until_ms, now=now_ms()))

    async def set_mine(self, group_id: int, user_id: int, *, nickname: str | None, remark: str | None) -> Group:
        """My nickname and my private remark."""
        await self._run(self._store.set_mine(group_id, user_id, nickname=nickname, remark=remark, now=now_ms()))
        return await self._group(group_id, user_id)

    def conversation(self, group_id: int) -> str:
        """The group's conversation id."""
        return group_conversation(group_id)
