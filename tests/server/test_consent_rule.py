"""The consent rule of group admission, as pure functions."""

from __future__ import annotations

import itertools

import pytest

from im_server.storage.consent import Relation, admission, invitation_usable, quota_wait


@pytest.mark.parametrize(
    ("policy", "friends", "expected"),
    [
        ("everyone", False, "add"),
        ("everyone", True, "add"),
        ("friends", True, "add"),
        ("friends", False, "invite"),
        ("nobody", True, "invite"),
        ("nobody", False, "invite"),
    ],
)
def test_the_privacy_setting_decides_between_add_and_invite(policy, friends, expected):
    relation = Relation(actor_blocked_target=False, target_blocked_actor=False, friends=friends, policy=policy)
    assert admission(relation) == expected


@pytest.mark.parametrize(
    ("policy", "friends"), list(itertools.product(["everyone", "friends", "nobody"], [False, True]))
)
def test_blocks_win_over_any_setting(policy, friends):
    mine = Relation(actor_blocked_target=True, target_blocked_actor=False, friends=friends, policy=policy)
    theirs = Relation(actor_blocked_target=False, target_blocked_actor=True, friends=friends, policy=policy)
    both = Relation(actor_blocked_target=True, target_blocked_actor=True, friends=friends, policy=policy)
    assert admission(mine) == "refuse"  # the actor knows of their own block
    assert admission(theirs) == "hide"  # the actor must not learn of the target's
    assert admission(both) == "refuse"


def test_an_invitation_is_usable_only_without_a_block():
    assert invitation_usable(inviter_blocked_invitee=False, invitee_blocked_inviter=False)
    assert not invitation_usable(inviter_blocked_invitee=True, invitee_blocked_inviter=False)
    assert not invitation_usable(inviter_blocked_invitee=False, invitee_blocked_inviter=True)


def test_quota_wait_is_a_sliding_window():
    now = 10_000
    assert quota_wait([], limit=3, cost=3, window=1000, now=now) == 0
    assert quota_wait([9_500, 9_600], limit=3, cost=1, window=1000, now=now) == 0
    # Full: wait until the oldest leaves the window.
    assert quota_wait([9_600, 9_500, 9_700], limit=3, cost=1, window=1000, now=now) == 500
    # Two more need the two oldest gone.
    assert quota_wait([9_500, 9_600, 9_700], limit=3, cost=2, window=1000, now=now) == 600
    # Old actions no longer count.
    assert quota_wait([1_000, 2_000, 9_000], limit=2, cost=1, window=1000, now=now) == 0
    # More than the window ever allows: the whole window (it never fits).
    assert quota_wait([], limit=3, cost=4, window=1000, now=now) == 1000
    assert quota_wait([9_999], limit=1, cost=1, window=1, now=now) == 0


def test_quota_wait_is_at_least_one_millisecond_when_full():
    assert quota_wait([9_000], limit=1, cost=1, window=1000, now=10_000) == 0  # left exactly now
    assert quota_wait([9_001], limit=1, cost=1, window=1000, now=10_000) == 1
