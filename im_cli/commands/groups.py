"""`im groups ...`: every group operation. Send to a group with `im send g:<id> TEXT`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from im_schema.groups import Group, GroupInvitation, GroupMember
from im_schema.social import GroupInvitePolicy
from im_sdk import Client

from ..context import Context, fail, user_ref
from ..errors import ExitCode
from ..output import out, print_json, when
from ..render import plural

__all__ = ["app"]

app = typer.Typer(help="Groups: create, join, manage members and settings.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
GroupArg = Annotated[str, typer.Argument(metavar="GROUP", help="The group: g:N, N, or the name of one of my groups.")]
UserArg = Annotated[str, typer.Argument(metavar="USER", help="A username or a user id.")]
_DURATION = re.compile(r"^(\d+)([smhd])$")


def _ref(user: str) -> int | str:
    return user_ref(user)


def _waiting(client: Client, group_id: int, users: list[str]) -> list[str]:
    """Who of ``users`` got an invitation to answer rather than being added (their privacy setting)."""
    named = set(users)
    return [
        invitation.invitee.username
        for invitation in client.groups.invitations(group_id)
        if invitation.invitee.username in named or str(invitation.invitee.id) in named
    ]


def _say_waiting(waiting: list[str]) -> None:
    if waiting:
        out.print(f"invited (they accept or decline): {', '.join(waiting)}")


def _show(group: Group, owner: str) -> None:
    out.print(
        f"[bold]{escape(group.name)}[/bold] ({group.conversation}) · {plural(group.member_count, 'member')}"
        f" · owner {escape(owner)}"
    )
    settings = [f"join: {group.join_policy}", f"members invite: {'yes' if group.allow_member_invite else 'no'}"]
    settings.append(f"history for new members: {'yes' if group.history_visible else 'no'}")
    if group.muted_all:
        settings.append("muted: all")
    out.print(" · ".join(settings))
    if group.my_role:
        mine = f"you: {group.my_role}"
        if group.my_nickname:
            mine += f", nickname {group.my_nickname!r}"
        if group.my_remark:
            mine += f", remark {group.my_remark!r}"
        out.print(mine)
    if group.announcement:
        out.print(
            f"[yellow]notice[/yellow] ({when(group.announcement_at) if group.announcement_at else ''}): "
            f"{group.announcement}"
        )
    if group.dissolved:
        out.print("[red]dissolved[/red]")


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group's name.")],
    members: Annotated[list[str] | None, typer.Argument(metavar="[USER]...", help="First members.")] = None,
    policy: Annotated[str, typer.Option("--join", help="open, approval or invite_only.")] = "approval",
    no_member_invite: Annotated[bool, typer.Option("--no-member-invite", help="Only admins invite.")] = False,
    history_visible: Annotated[
        bool, typer.Option("--history-visible", help="New members see earlier messages.")
    ] = False,
    json_output: Json = False,
) -> None:
    """Create a group; you are its owner."""
    context: Context = ctx.obj
    if policy not in ("open", "approval", "invite_only"):
        fail("--join is one of open, approval, invite_only", ExitCode.USAGE)
    with context.session() as client:
        group = client.groups.create(
            name,
            [_ref(user) for user in members or []],
            join_policy=policy,  # type: ignore[arg-type]  # checked above
            allow_member_invite=not no_member_invite,
            history_visible=history_visible,
        )
        waiting = _waiting(client, group.id, members or []) if members and not json_output else []
    if json_output:
        print_json(group)
    else:
        out.print(escape(f"created {group.name!r} as {group.conversation} with {plural(group.member_count, 'member')}"))
        _say_waiting(waiting)


@app.command("list")
def list_(ctx: typer.Context, json_output: Json = False) -> None:
    """My groups."""
    context: Context = ctx.obj
    with context.session() as client:
        groups = client.groups.list()
    if json_output:
        print_json(groups)
        return
    if not groups:
        out.print("no groups yet; create one with: im groups create NAME [USER]...")
        return
    table = Table("group", "name", "members", "my role", "remark", box=None, pad_edge=False)
    for group in groups:
        table.add_row(
            group.conversation,
            escape(group.name),
            str(group.member_count),
            group.my_role or "",
            escape(group.my_remark or ""),
        )
    out.print(table)


@app.command()
def info(ctx: typer.Context, group: GroupArg, json_output: Json = False) -> None:
    """A group's information and announcement."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        found = client.groups.info(gid)
        owner = context.name_of(client, found.owner)
    if json_output:
        print_json(found)
    else:
        _show(found, owner)


@app.command()
def members(
    ctx: typer.Context,
    group: GroupArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 200,
    json_output: Json = False,
) -> None:
    """The members, with role, nickname and online state."""
    context: Context = ctx.obj
    found: list[GroupMember] = []
    with context.session() as client:
        gid = context.group_id(client, group)
        after = 0
        while len(found) < limit:
            page = client.groups.members(gid, after=after, limit=min(1000, limit - len(found)))
            found.extend(page.members)
            if not page.has_more or not page.members:
                break
            after = page.members[-1].user.id
    if json_output:
        print_json(found)
        return
    table = Table("user", "role", "nickname", "state", "muted until", box=None, pad_edge=False)
    for member in found:
        state = "[green]online[/green]" if member.online else "offline"
        muted = when(member.muted_until) if member.muted_until else ""
        table.add_row(member.user.username, member.role, escape(member.nickname or ""), state, muted)
    out.print(table)


@app.command()
def join(
    ctx: typer.Context,
    group: GroupArg,
    message: Annotated[str, typer.Option("--message", "-m", help="A note for the admins.")] = "",
) -> None:
    """Join an open group, or ask to join one that needs approval."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        result = client.groups.join(gid, message)
    if result.status == "joined":
        out.print(f"joined g:{gid}")
    else:
        out.print(f"asked to join g:{gid}; an admin will decide")


@app.command()
def requests(ctx: typer.Context, group: GroupArg, json_output: Json = False) -> None:
    """Pending join requests (owner and admins)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        found = client.groups.requests(gid)
    if json_output:
        print_json(found)
        return
    if not found:
        out.print("no pending requests")
        return
    table = Table("id", "user", "message", "when", box=None, pad_edge=False)
    for request in found:
        table.add_row(str(request.id), request.user.username, escape(request.message), when(request.created_at))
    out.print(table)


@app.command()
def approve(ctx: typer.Context, group: GroupArg, request_id: Annotated[int, typer.Argument()]) -> None:
    """Let a requester in."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.approve(gid, request_id)
    out.print(f"request #{request_id} approved")


@app.command()
def reject(ctx: typer.Context, group: GroupArg, request_id: Annotated[int, typer.Argument()]) -> None:
    """Turn a requester away."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.reject(gid, request_id)
    out.print(f"request #{request_id} rejected")


@app.command()
def leave(ctx: typer.Context, group: GroupArg) -> None:
    """Leave a group."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.leave(gid)
    out.print(f"you left g:{gid}")


@app.command()
def nickname(ctx: typer.Context, group: GroupArg, name: Annotated[str, typer.Argument(help="'' clears it.")]) -> None:
    """Set my nickname in the group (everyone sees it)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.nickname(gid, name)
    out.print("nickname set" if name else "nickname cleared")


@app.command()
def remark(ctx: typer.Context, group: GroupArg, text: Annotated[str, typer.Argument(help="'' clears it.")]) -> None:
    """Set my private remark on the group (only I see it)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.remark(gid, text)
    out.print("remark set" if text else "remark cleared")


@app.command()
def invite(ctx: typer.Context, group: GroupArg, users: Annotated[list[str], typer.Argument(metavar="USER...")]) -> None:
    """Add users to the group; those whose privacy setting asks for it get an invitation to accept."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        updated = client.groups.invite(gid, [_ref(user) for user in users])
        waiting = _waiting(client, gid, users)
    out.print(escape(f"{updated.name} (g:{gid}) has {plural(updated.member_count, 'member')}"))
    _say_waiting(waiting)


@app.command()
def invitations(
    ctx: typer.Context,
    group: Annotated[
        str | None,
        typer.Argument(metavar="[GROUP]", help="A group's pending invitations instead of mine (g:N, N or its name)."),
    ] = None,
    json_output: Json = False,
) -> None:
    """Pending invitations to groups sent to me (or, given GROUP, the ones of that group)."""
    context: Context = ctx.obj
    with context.session() as client:
        group_id = context.group_id(client, group) if group is not None else None
        found: list[GroupInvitation] = client.groups.invitations(group_id)
    if json_output:
        print_json(found)
        return
    if not found:
        out.print("no pending invitations")
        return
    table = Table("id", "group", "name", "from", "to", "expires", box=None, pad_edge=False)
    for invitation in found:
        table.add_row(
            str(invitation.id),
            f"g:{invitation.group_id}",
            escape(invitation.group_name),
            invitation.inviter.username,
            invitation.invitee.username,
            when(invitation.expires_at),
        )
    out.print(table)
    if group_id is None:
        out.print("answer with: im groups accept ID, or im groups decline ID")


_POLICIES: dict[str, GroupInvitePolicy] = {"everyone": "everyone", "friends": "friends", "nobody": "nobody"}
InvitationArg = Annotated[int, typer.Argument(metavar="INVITATION", help="The invitation's id.")]


@app.command()
def accept(ctx: typer.Context, invitation_id: InvitationArg) -> None:
    """Accept an invitation: join the group."""
    context: Context = ctx.obj
    with context.session() as client:
        group = client.groups.accept(invitation_id)
    out.print(escape(f"joined {group.name!r} ({group.conversation})"))


@app.command()
def decline(ctx: typer.Context, invitation_id: InvitationArg) -> None:
    """Decline an invitation."""
    context: Context = ctx.obj
    with context.session() as client:
        client.groups.decline(invitation_id)
    out.print(f"invitation #{invitation_id} declined")


@app.command()
def withdraw(ctx: typer.Context, group: GroupArg, invitation_id: InvitationArg) -> None:
    """Take back a pending invitation (its inviter, or the owner and admins)."""
    context: Context = ctx.obj
    with context.session() as client:
        client.groups.withdraw(context.group_id(client, group), invitation_id)
    out.print(f"invitation #{invitation_id} withdrawn")


@app.command()
def privacy(
    ctx: typer.Context,
    who: Annotated[
        str | None,
        typer.Argument(metavar="[everyone|friends|nobody]", help="Who may add me to groups directly."),
    ] = None,
    json_output: Json = False,
) -> None:
    """Show or set who may add me to groups directly; anyone else's invitation waits for my answer."""
    context: Context = ctx.obj
    policy = _POLICIES.get(who) if who is not None else None
    if who is not None and policy is None:
        fail("say everyone, friends or nobody", ExitCode.USAGE)
    with context.session() as client:
        settings = client.friends.privacy() if policy is None else client.friends.set_privacy(group_invites=policy)
    if json_output:
        print_json(settings)
        return
    meaning = {
        "everyone": "anyone (but users you blocked) may add you to groups",
        "friends": "your friends may add you to groups; others' invitations wait for your answer",
        "nobody": "every invitation to a group waits for your answer",
    }
    out.print(meaning[settings.group_invites])


@app.command()
def kick(ctx: typer.Context, group: GroupArg, user: UserArg) -> None:
    """Remove a member (owner and admins)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.kick(gid, _ref(user))
    out.print(f"{user} removed from g:{gid}")


@app.command()
def dissolve(
    ctx: typer.Context,
    group: GroupArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Dissolve the group for everyone (owner)."""
    context: Context = ctx.obj
    if not yes:
        typer.confirm(f"Dissolve {group} for every member?", abort=True)
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.dissolve(gid)
    out.print(f"g:{gid} dissolved")


@app.command()
def notice(ctx: typer.Context, group: GroupArg, text: Annotated[str, typer.Argument(help="'' clears it.")]) -> None:
    """Set the group's announcement (owner and admins)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.notice(gid, text)
    out.print("announcement set" if text else "announcement cleared")


@app.command()
def transfer(ctx: typer.Context, group: GroupArg, user: UserArg) -> None:
    """Make another member the owner (you become an admin)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        client.groups.transfer(gid, _ref(user))
    out.print(f"{user} owns g:{gid} now")


@app.command()
def admin(
    ctx: typer.Context,
    group: GroupArg,
    user: UserArg,
    remove: Annotated[bool, typer.Option("--remove", help="Revoke instead of grant.")] = False,
) -> None:
    """Grant (or revoke) admin (owner)."""
    context: Context = ctx.obj
    with context.session() as client:
        gid = context.group_id(client, group)
        if remove:
            client.groups.remove_admin(gid, _ref(user))
        else:
            client.groups.add_admin(gid, _ref(user))
    out.print(f"{user} is {'no longer ' if remove else ''}an admin of g:{gid}")


def _until(duration: str | None, until: str | None) -> datetime | None:
    if until is not None:
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            fail("--until takes an ISO time, e.g. 2026-12-01T18:00", ExitCode.USAGE)
        return moment if moment.tzinfo else moment.astimezone()
    if duration is None:
        fail("give --for DURATION (30m, 2h, 1d), --until TIME, or --off", ExitCode.USAGE)
    match = _DURATION.match(duration)
    if match is None:
        fail("--for takes a duration like 30s, 10m, 2h or 1d", ExitCode.USAGE)
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) + timedelta(**{unit: int(match.group(1))})


@app.command()
def mute(
    ctx: typer.Context,
    group: GroupArg,
    user: Annotated[str | None, typer.Argument(metavar="[USER]", help="Omit with --all.")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Mute the whole group (admins may still speak).")] = False,
    duration: Annotated[str | None, typer.Option("--for", help="How long: 30s, 10m, 2h, 1d.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Until an ISO time.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Lift the mute.")] = False,
) -> None:
    """Mute a member for a while, or the whole group (owner and admins)."""
    context: Context = ctx.obj
    if everyone == (user is not None):
        fail("name one USER, or use --all", ExitCode.USAGE)
    with context.session() as client:
        gid = context.group_id(client, group)
        if everyone:
            client.groups.mute_all(gid, not off)
            out.print(f"g:{gid} {'unmuted' if off else 'muted; only the owner and admins may speak'}")
            return
        assert user is not None
        client.groups.mute(gid, _ref(user), None if off else _until(duration, until))
    out.print(f"{user} {'unmuted' if off else 'muted'} in g:{gid}")
