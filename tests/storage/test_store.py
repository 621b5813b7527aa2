"""The storage contract, run on SQLite and on PostgreSQL (skipped when PostgreSQL is unreachable)."""

from __future__ import annotations

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from im_schema.content import TextContent
from im_schema.ids import direct_conversation
from im_schema.limits import RECENT_MAX
from im_server.storage import MemberState, MessageStore, NewMessage, UsernameTaken, UserStore
from im_server.storage import conversations as conversations_module
from im_server.storage.tables import members, metadata

T0 = 1_700_000_000_000  # ms


@pytest.fixture
def users(db):
    return UserStore(db)


@pytest.fixture
def store(db):
    return MessageStore(db)


async def make_users(users, count):
    return [(await users.create_user(f"user{i}", "hash", f"User {i}", now=T0)).id for i in range(1, count + 1)]


def text(value):
    return TextContent(text=value)


def new(conversation, sender, key, value="hi"):
    return NewMessage(conversation, sender, key, text(value))


@pytest.fixture
async def pair(users, store):
    """Two users and their direct conversation."""
    a, b = await make_users(users, 2)
    conversation = direct_conversation(a, b)
    await store.ensure_direct(conversation, a, b, now=T0)
    return a, b, conversation


# Users and sessions -------------------------------------------------------------------------------


async def test_create_user_and_read_it_back(users):
    user = await users.create_user("alice", "argon2-hash", "Alice", now=T0, is_bot=True)
    assert (user.username, user.display_name, user.is_bot) == ("alice", "Alice", True)
    assert int(user.created_at.timestamp() * 1000) == T0
    assert await users.get(user.id) == user
    assert await users.get_by_username("alice") == user
    credentials = await users.credentials("alice")
    assert credentials is not None
    assert (credentials.user, credentials.password_hash) == (user, "argon2-hash")
    assert await users.get(user.id + 1000) is None
    assert await users.get_by_username("nobody") is None
    assert await users.credentials("nobody") is None


async def test_username_taken(users):
    first = await users.create_user("alice", "h", "Alice", now=T0)
    with pytest.raises(UsernameTaken):
        await users.create_user("alice", "h2", "Other", now=T0)
    # The failed insert left nothing behind and the store still works.
    second = await users.create_user("bob", "h", "Bob", now=T0)
    assert second.id != first.id
    assert await users.get_many([first.id, second.id, 999_999]) == {first.id: first, second.id: second}
    assert await users.get_many([]) == {}


async def test_sessions_start_rotate_end(db, users):
    from im_server.storage.devices import DeviceStore

    devices = DeviceStore(db)
    (uid,) = await make_users(users, 1)
    started, replaced = await devices.start_session(
        uid,
        "laptop",
        session_id="s1",
        refresh_hash="h1",
        refresh_expires_at=T0 + 1000,
        now=T0,
        max_devices=10,
        revoke_until=T0 + 1000,
    )
    assert replaced is None
    assert (started.user_id, started.device_id, started.session_id) == (uid, "laptop", "s1")
    assert started.refresh_expires_at == T0 + 1000

    rotated = await users.rotate_refresh("h1", new_hash="h2", new_expires_at=T0 + 2000, now=T0 + 10)
    assert rotated is not None
    assert (rotated.session_id, rotated.refresh_expires_at, rotated.last_seen_at) == ("s1", T0 + 2000, T0 + 10)
    # The old refresh token is spent.
    assert await users.rotate_refresh("h1", new_hash="h3", new_expires_at=T0 + 3000, now=T0 + 20) is None

    await devices.end_session(uid, "laptop", "s1", now=T0 + 30, revoke_until=T0 + 1000)
    assert await users.rotate_refresh("h2", new_hash="h4", new_expires_at=T0 + 3000, now=T0 + 30) is None


async def _login(db, uid, device, session, refresh_hash, now):
    from im_server.storage.devices import DeviceStore

    started, replaced = await DeviceStore(db).start_session(
        uid,
        device,
        session_id=session,
        refresh_hash=refresh_hash,
        refresh_expires_at=T0 + 100,
        now=now,
        max_devices=10,
        revoke_until=T0 + 1000,
    )
    return started, replaced


async def test_expired_refresh_token_does_not_rotate(db, users):
    (uid,) = await make_users(users, 1)
    await _login(db, uid, "d", "s1", "h1", T0)
    assert await users.rotate_refresh("h1", new_hash="h2", new_expires_at=T0 + 999, now=T0 + 100) is None


async def test_a_new_login_replaces_the_device_session(db, users):
    (uid,) = await make_users(users, 1)
    await _login(db, uid, "d", "s1", "h1", T0)
    again, replaced = await _login(db, uid, "d", "s2", "h2", T0 + 1)
    assert again.session_id == "s2"
    assert replaced is not None  # the earlier session of that device is revoked
    assert await users.rotate_refresh("h1", new_hash="x", new_expires_at=T0 + 100, now=T0 + 2) is None
    # Another device of the same user is separate.
    other, replaced_other = await _login(db, uid, "e", "s3", "h3", T0)
    assert replaced_other is None
    assert other.session_id == "s3"
    assert await users.rotate_refresh("h3", new_hash="y", new_expires_at=T0 + 100, now=T0 + 2) is not None


# Conversations and messages -----------------------------------------------------------------------


async def test_ensure_direct_is_idempotent(users, store):
    a, b, c = await make_users(users, 3)
    conversation = direct_conversation(a, b)
    await store.ensure_direct(conversation, a, b, now=T0)
    await store.ensure_direct(conversation, a, b, now=T0 + 5)
    await store.ensure_direct(conversation, b, a, now=T0 + 6)
    assert await store.member(conversation, a) == MemberState(read_seq=0, joined_seq=0, max_seq=0)
    assert await store.member(conversation, b) == MemberState(read_seq=0, joined_seq=0, max_seq=0)
    assert await store.member(conversation, c) is None
    page, _ = await store.conversations_since(a, since=None, limit=10)
    assert [summary.id for _, summary in page] == [conversation]


async def test_write_batch_assigns_gap_free_seqs_per_conversation(users, store):
    a, b, c = await make_users(users, 3)
    ab, ac = direct_conversation(a, b), direct_conversation(a, c)
    await store.ensure_direct(ab, a, b, now=T0)
    await store.ensure_direct(ac, a, c, now=T0)
    batch = [
        new(ab, a, "key-ab-01", "ab1"),
        new(ac, a, "key-ac-01", "ac1"),
        new(ab, b, "key-ab-02", "ab2"),
        new(ab, a, None, "ab3"),
        new(ac, c, "key-ac-02", "ac2"),
    ]
    written = await store.write_batch(batch, now=T0 + 1)
    assert [(w.message.conversation, w.message.seq, w.duplicate) for w in written] == [
        (ab, 1, False),
        (ac, 1, False),
        (ab, 2, False),
        (ab, 3, False),
        (ac, 2, False),
    ]
    assert [w.message.content.text for w in written] == ["ab1", "ac1", "ab2", "ab3", "ac2"]
    assert [w.message.sender for w in written] == [a, a, b, a, c]

    more = await store.write_batch([new(ac, a, "key-ac-03"), new(ab, b, "key-ab-04")], now=T0 + 2)
    assert [(w.message.conversation, w.message.seq) for w in more] == [(ac, 3), (ab, 4)]

    messages, has_more, max_seq = await store.history(ab, floor=0, after=0, before=None, limit=100)
    assert [m.seq for m in messages] == [1, 2, 3, 4]
    assert [m.content.text for m in messages] == ["ab1", "ab2", "ab3", "hi"]
    assert (has_more, max_seq) == (False, 4)
    # What write_batch returned is what history reads back.
    assert messages[0] == written[0].message
    # The page the API writes from the stored JSON is the page of the models.
    from im_schema.rest import MessagePage
    from im_server.services.sync import SyncService

    for after, before, limit in ((0, None, 100), (1, None, 2), (None, 4, 2), (None, None, 1)):
        kwargs = {"after": after, "before": before, "limit": limit}
        raw = await SyncService(store).history_json(a, ab, **kwargs)
        assert MessagePage.model_validate_json(raw) == await SyncService(store).history(a, ab, **kwargs)


async def test_duplicate_in_the_same_batch_is_stored_once(pair, store):
    a, _, conversation = pair
    written = await store.write_batch(
        [new(conversation, a, "same-key-1", "first"), new(conversation, a, "same-key-1", "again")], now=T0
    )
    assert written[0].duplicate is False
    assert written[1].duplicate is True
    assert written[1].message == written[0].message
    assert written[1].message.content.text == "first"
    assert (await store.member(conversation, a)).max_seq == 1


async def test_duplicate_across_batches_returns_the_stored_message(pair, store):
    a, _, conversation = pair
    (first,) = await store.write_batch([new(conversation, a, "retry-key-1", "hello")], now=T0)
    written = await store.write_batch(
        [new(conversation, a, "other-key-1"), new(conversation, a, "retry-key-1", "hello")], now=T0 + 50
    )
    assert written[1].duplicate is True
    assert written[1].message.seq == first.message.seq == 1
    assert written[1].message.sent_at == first.message.sent_at
    assert written[0].message.seq == 2
    messages, _, max_seq = await store.history(conversation, floor=0, after=0, before=None, limit=10)
    assert ([m.seq for m in messages], max_seq) == ([1, 2], 2)


async def test_same_key_from_two_senders_is_two_messages(pair, store):
    a, b, conversation = pair
    written = await store.write_batch([new(conversation, a, "shared-key"), new(conversation, b, "shared-key")], now=T0)
    assert [(w.message.seq, w.duplicate) for w in written] == [(1, False), (2, False)]


async def test_messages_without_a_key_are_never_deduplicated(pair, store):
    a, _, conversation = pair
    written = await store.write_batch([new(conversation, a, None), new(conversation, a, None)], now=T0)
    assert [(w.message.seq, w.duplicate) for w in written] == [(1, False), (2, False)]


async def test_missing_conversation_yields_none_without_affecting_others(pair, store):
    a, _, conversation = pair
    written = await store.write_batch(
        [
            new(conversation, a, "key-ok-0001"),
            new("g:999", a, "key-missing"),
            new(direct_conversation(a, 12345), a, "key-missing-2"),
            new(conversation, a, "key-ok-0002"),
        ],
        now=T0,
    )
    assert written[1] is None
    assert written[2] is None
    assert [(w.message.seq, w.duplicate) for w in (written[0], written[3])] == [(1, False), (2, False)]
    messages, _, max_seq = await store.history("g:999", floor=0, after=0, before=None, limit=10)
    assert (messages, max_seq) == ([], 0)


async def test_sender_has_read_their_own_message(pair, store):
    a, b, conversation = pair
    await store.write_batch([new(conversation, b, "b-key-0001"), new(conversation, a, "a-key-0001")], now=T0)
    assert await store.member(conversation, a) == MemberState(read_seq=2, joined_seq=0, max_seq=2)
    assert await store.member(conversation, b) == MemberState(read_seq=1, joined_seq=0, max_seq=2)
    await store.write_batch([new(conversation, b, "b-key-0002")], now=T0 + 1)
    assert (await store.member(conversation, a)).read_seq == 2
    assert (await store.member(conversation, b)).read_seq == 3


# History ------------------------------------------------------------------------------------------


@pytest.fixture
async def ten(pair, store):
    a, b, conversation = pair
    await store.write_batch([new(conversation, a if i % 2 else b, f"msg-key-{i:03d}") for i in range(1, 11)], now=T0)
    return conversation


async def seqs(store, conversation, *, floor=0, after=None, before=None, limit=100):
    messages, has_more, max_seq = await store.history(
        conversation, floor=floor, after=after, before=before, limit=limit
    )
    assert max_seq == 10
    return [m.seq for m in messages], has_more


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"after": 0}, (list(range(1, 11)), False)),
        ({"after": 3, "limit": 4}, ([4, 5, 6, 7], True)),
        ({"after": 6, "limit": 4}, ([7, 8, 9, 10], False)),
        ({"after": 10}, ([], False)),
        ({"limit": 3}, ([8, 9, 10], True)),
        ({"before": 5, "limit": 2}, ([3, 4], True)),
        ({"before": 3, "limit": 5}, ([1, 2], False)),
        ({"after": 2, "before": 6}, ([3, 4, 5], False)),
        ({"after": 2, "before": 9, "limit": 3}, ([3, 4, 5], True)),
        ({"after": 4, "before": 5}, ([], False)),
        ({"floor": 6}, ([7, 8, 9, 10], False)),
        ({"floor": 6, "after": 2, "limit": 2}, ([7, 8], True)),
        ({"floor": 6, "before": 9, "limit": 5}, ([7, 8], False)),
        ({"floor": 10}, ([], False)),
    ],
)
async def test_history(ten, store, bounds, expected):
    assert await seqs(store, ten, **bounds) == expected


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"after": 0}, (list(range(1, 11)), False)),
        ({"after": 3, "limit": 4}, ([4, 5, 6, 7], True)),
        ({"limit": 3}, ([8, 9, 10], True)),
        ({"before": 3, "limit": 5}, ([1, 2], False)),
        ({"after": 2, "before": 9, "limit": 3}, ([3, 4, 5], True)),
        ({"joined": 6, "after": 2, "limit": 2}, ([7, 8], True)),
        ({"joined": 6, "before": 9, "limit": 5}, ([7, 8], False)),
        ({"left": 4, "after": 0}, ([1, 2, 3, 4], False)),
        ({"left": 4}, ([1, 2, 3, 4], False)),
        ({"joined": 2, "left": 7, "after": 3, "limit": 2}, ([4, 5], True)),
        ({"joined": 2, "left": 7, "before": 9, "limit": 9}, ([3, 4, 5, 6, 7], False)),
    ],
)
async def test_member_history_reads_within_the_members_own_floor_and_ceiling(db, pair, ten, store, bounds, expected):
    # The catch-up read (membership and messages in one transaction) answers as history does with the
    # member's floor and ceiling, and max_seq is capped at the ceiling.
    a, _, conversation = pair
    joined, left = bounds.get("joined", 0), bounds.get("left")

    def place(conn):
        conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation, members.c.user_id == a)
            .values(joined_seq=joined, left_seq=left)
        )

    await db.write(place)
    page = await store.member_history_json(
        conversation, a, after=bounds.get("after"), before=bounds.get("before"), limit=bounds.get("limit", 100)
    )
    assert page is not None
    texts, has_more, max_seq = page
    assert ([orjson.loads(text)["seq"] for text in texts], has_more) == expected
    assert max_seq == (10 if left is None else left)
    assert page == await store.history_json(
        conversation,
        floor=joined,
        ceiling=left,
        after=bounds.get("after"),
        before=bounds.get("before"),
        limit=bounds.get("limit", 100),
    )


async def test_member_history_is_none_for_a_non_member(users, pair, ten, store):
    _, _, conversation = pair
    stranger = (await users.create_user("stranger", "hash", "Stranger", now=T0)).id
    assert await store.member_history_json(conversation, stranger, after=0, before=None, limit=10) is None
    assert await store.member_history_json("d:999998:999999", stranger, after=0, before=None, limit=10) is None


# Conversations since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("joined", "left", "recent", "after", "seqs"),
    [
        (0, None, 3, 7, [8, 9, 10]),
        (0, None, 50, 0, list(range(1, 11))),
        (8, None, 5, 8, [9, 10]),  # nothing from before joining
        (0, 6, 4, 2, [3, 4, 5, 6]),  # nothing from after leaving
        (5, 6, 50, 5, [6]),
    ],
)
async def test_conversations_since_carries_the_recent_messages_a_member_may_see(
    db, pair, ten, store, joined, left, recent, after, seqs
):
    a, _, conversation = pair

    def place(conn):
        conn.execute(
            update(members)
            .where(members.c.conversation_id == conversation, members.c.user_id == a)
            .values(joined_seq=joined, left_seq=left)
        )

    await db.write(place)
    (summary,) = [
        summary for _, summary in (await store.conversations_since(a, since=None, limit=10, recent=recent))[0]
    ]
    assert summary.recent_after == after
    assert [message.seq for message in summary.recent] == seqs
    assert all(message.conversation == conversation for message in summary.recent)
    assert summary.max_seq == (10 if left is None else left)
    (plain,) = [summary for _, summary in (await store.conversations_since(a, since=None, limit=10))[0]]
    assert (plain.recent, plain.recent_after) == ([], None)


async def test_recent_messages_stop_at_the_pages_budget(users, store, monkeypatch):
    me, *others = await make_users(users, 4)
    for other in others:
        conversation = direct_conversation(me, other)
        await store.ensure_direct(conversation, me, other, now=T0)
        await store.write_batch([new(conversation, other, f"recent-key-{other}-{i:03d}") for i in range(3)], now=T0)
    monkeypatch.setattr(conversations_module, "RECENT_PAGE_BUDGET", 2 * RECENT_MAX)
    rows, _ = await store.conversations_since(me, since=None, limit=10, recent=RECENT_MAX)
    carried = [summary.recent_after is not None for _, summary in rows]
    assert carried == [True, True, False]
    assert [len(summary.recent) for _, summary in rows] == [3, 3, 0]


async def test_conversations_since_pages_by_keyset(users, store):
    me, *others = await make_users(users, 6)
    # Five conversations; two of them changed in the same millisecond.
    changed_at = [T0 + 100, T0 + 200, T0 + 200, T0 + 300, T0 + 400]
    conversations = []
    for other, at in zip(others, changed_at, strict=True):
        conversation = direct_conversation(me, other)
        await store.ensure_direct(conversation, me, other, now=at)
        conversations.append(conversation)
    expected = sorted(zip(changed_at, conversations, strict=True))

    seen = []
    since = None
    pages = 0
    while True:
        page, has_more = await store.conversations_since(me, since=since, limit=2)
        pages += 1
        assert len(page) <= 2
        seen.extend((changed, summary.id) for changed, summary in page)
        if not has_more:
            break
        since = (page[-1][0], page[-1][1].id)
    assert seen == expected
    assert pages == 3

    # A new message moves its conversation past the cursor; nothing else comes back.
    oldest = expected[0][1]
    await store.write_batch([new(oldest, others[0], "late-key-01", "late")], now=T0 + 500)
    page, has_more = await store.conversations_since(me, since=seen[-1], limit=2)
    assert [(changed, summary.id) for changed, summary in page] == [(T0 + 500, oldest)]
    assert has_more is False
    summary = page[0][1]
    assert (summary.kind, summary.peer, summary.max_seq, summary.read_seq, summary.unread) == (
        "direct",
        others[0],
        1,
        0,
        1,
    )
    assert summary.last_message is not None
    assert summary.last_message.content.text == "late"


async def test_conversations_since_is_per_user(users, store):
    a, b, c = await make_users(users, 3)
    await store.ensure_direct(direct_conversation(a, b), a, b, now=T0)
    page, has_more = await store.conversations_since(c, since=None, limit=10)
    assert (page, has_more) == ([], False)
    page, _ = await store.conversations_since(b, since=None, limit=10)
    assert [summary.peer for _, summary in page] == [a]


# Read state ---------------------------------------------------------------------------------------


async def test_mark_read_is_monotonic_and_capped(pair, store):
    a, b, conversation = pair
    await store.write_batch([new(conversation, a, f"key-read-{i}") for i in range(5)], now=T0)
    state = await store.mark_read(conversation, b, 3, now=T0 + 1)
    assert (state.conversation, state.read_seq, state.unread) == (conversation, 3, 2)
    state = await store.mark_read(conversation, b, 1, now=T0 + 2)
    assert (state.read_seq, state.unread) == (3, 2)
    state = await store.mark_read(conversation, b, 10**6, now=T0 + 3)
    assert (state.read_seq, state.unread) == (5, 0)
    assert (await store.member(conversation, b)).read_seq == 5


async def test_mark_read_unknown_conversation_or_non_member(users, pair, store):
    a, _, conversation = pair
    stranger = (await users.create_user("stranger", "h", "S", now=T0)).id
    assert await store.mark_read("g:424242", a, 1, now=T0) is None
    assert await store.mark_read(conversation, stranger, 1, now=T0) is None


# Migrations ---------------------------------------------------------------------------------------


async def test_migrations_produce_exactly_the_tables(db):
    def compare(connection):
        return compare_metadata(MigrationContext.configure(connection), metadata)

    assert await db.read(compare) == []
