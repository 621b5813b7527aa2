"""im_sdk.realtime.protocol.SyncEngine: exactly-once, in-order delivery without I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from im_schema.models import ConversationSummary, Message
from im_schema.rest import ConversationPage, MessagePage
from im_sdk.realtime.protocol import Deliver, Fetch, SyncEngine

T0 = datetime(2024, 5, 1, tzinfo=UTC)
C = "d:1:2"
ME = 1


def msg(seq, conversation=C, sender=2):
    return Message(
        conversation=conversation,
        seq=seq,
        sender=sender,
        sent_at=T0,
        content={"kind": "text", "text": f"{conversation}#{seq}"},
    )


def page(seqs, *, has_more=False, max_seq=None, conversation=C):
    seqs = list(seqs)
    if max_seq is None:
        max_seq = max(seqs, default=0)
    return MessagePage(
        conversation=conversation,
        messages=[msg(s, conversation) for s in seqs],
        has_more=has_more,
        max_seq=max_seq,
    )


def summary(conversation=C, *, max_seq, read_seq=0, joined_seq=0, recent=None, recent_after=None):
    return ConversationSummary(
        id=conversation,
        kind="direct" if conversation.startswith("d:") else "group",
        max_seq=max_seq,
        read_seq=read_seq,
        joined_seq=joined_seq,
        unread=max(0, max_seq - max(read_seq, joined_seq)),
        updated_at=T0,
        recent=recent or [],
        recent_after=recent_after,
    )


def conversations(*summaries, has_more=False, cursor="cursor"):
    return ConversationPage(conversations=list(summaries), cursor=cursor, has_more=has_more)


def delivered(actions):
    """The seqs of the Deliver actions, asserting nothing else is there."""
    assert all(isinstance(action, Deliver) for action in actions), actions
    return [action.message.seq for action in actions]


# Pushes -------------------------------------------------------------------------------------------


def test_in_order_pushes_are_delivered():
    engine = SyncEngine(watermarks={C: 0})
    for seq in (1, 2, 3):
        assert engine.on_push(msg(seq)) == [Deliver(msg(seq))]
    assert engine.watermark(C) == 3


def test_a_push_in_an_unknown_conversation_starts_at_zero():
    engine = SyncEngine()
    assert engine.watermark(C) is None
    assert delivered(engine.on_push(msg(1))) == [1]
    assert engine.watermarks() == {C: 1}


def test_duplicate_pushes_are_ignored():
    engine = SyncEngine(watermarks={C: 0})
    assert delivered(engine.on_push(msg(1))) == [1]
    assert engine.on_push(msg(1)) == []
    assert engine.on_push(msg(1)) == []


def test_pushes_at_or_below_the_watermark_are_ignored():
    engine = SyncEngine(watermarks={C: 10})
    assert engine.on_push(msg(3)) == []
    assert engine.on_push(msg(10)) == []
    assert delivered(engine.on_push(msg(11))) == [11]


def test_a_gap_triggers_exactly_one_fetch_and_holds_later_pushes():
    engine = SyncEngine(watermarks={C: 0})
    assert delivered(engine.on_push(msg(1))) == [1]
    assert engine.on_push(msg(4)) == [Fetch(C, after=1, before=4)]
    assert engine.on_push(msg(6)) == []
    assert engine.on_push(msg(5)) == []
    assert engine.on_push(msg(4)) == []  # a duplicate of a held push
    assert engine.watermark(C) == 1


def test_history_fills_the_gap_and_releases_held_pushes_in_order():
    engine = SyncEngine(watermarks={C: 1})
    (fetch,) = engine.on_push(msg(4))
    engine.on_push(msg(6))
    engine.on_push(msg(5))
    assert delivered(engine.on_history(fetch, page([2, 3], max_seq=6))) == [2, 3, 4, 5, 6]
    assert engine.watermark(C) == 6
    # The gap is closed: the next push goes straight through.
    assert delivered(engine.on_push(msg(7))) == [7]


def test_a_push_filling_the_gap_while_fetching_is_delivered_with_what_it_unblocks():
    engine = SyncEngine(watermarks={C: 0})
    (fetch,) = engine.on_push(msg(3))
    assert delivered(engine.on_push(msg(1))) == [1]
    assert delivered(engine.on_push(msg(2))) == [2, 3]
    # The late answer to the fetch delivers nothing twice.
    assert engine.on_history(fetch, page([1, 2], max_seq=3)) == []
    assert engine.watermark(C) == 3


def test_history_with_has_more_continues_the_fetch():
    engine = SyncEngine(watermarks={C: 0})
    (fetch,) = engine.on_push(msg(10))
    assert fetch == Fetch(C, after=0, before=10)
    actions = engine.on_history(fetch, page([1, 2, 3], has_more=True, max_seq=10))
    assert actions[:-1] == [Deliver(msg(1)), Deliver(msg(2)), Deliver(msg(3))]
    assert actions[-1] == Fetch(C, after=3, before=10)
    actions = engine.on_history(actions[-1], page([4, 5, 6], has_more=True, max_seq=10))
    assert delivered(actions[:-1]) == [4, 5, 6]
    assert actions[-1] == Fetch(C, after=6, before=10)
    assert delivered(engine.on_history(actions[-1], page([7, 8, 9], max_seq=10))) == [7, 8, 9, 10]


def test_open_ended_fetch_pages_until_the_newest():
    engine = SyncEngine(watermarks={C: 2})
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=9)))
    assert fetch == Fetch(C, after=2, before=None)
    actions = engine.on_history(fetch, page([3, 4, 5], has_more=True, max_seq=9))
    assert delivered(actions[:-1]) == [3, 4, 5]
    assert actions[-1] == Fetch(C, after=5, before=None)
    assert delivered(engine.on_history(actions[-1], page([6, 7, 8, 9], max_seq=9))) == [6, 7, 8, 9]
    assert engine.watermark(C) == 9


def test_invisible_seqs_let_the_watermark_jump():
    # Seqs 1..9 predate this user joining: history returns nothing for them.
    engine = SyncEngine()
    (fetch,) = engine.on_push(msg(10))
    assert fetch == Fetch(C, after=0, before=10)
    assert delivered(engine.on_history(fetch, page([], max_seq=10))) == [10]
    assert engine.watermark(C) == 10


def test_invisible_seqs_below_visible_history_are_skipped():
    engine = SyncEngine()
    (fetch,) = engine.on_push(msg(10))
    assert delivered(engine.on_history(fetch, page([7, 8, 9], max_seq=10))) == [7, 8, 9, 10]


def test_an_open_ended_fetch_with_nothing_visible_moves_to_max_seq():
    engine = SyncEngine(watermarks={C: 0})
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=4)))
    assert engine.on_history(fetch, page([], max_seq=4)) == []
    assert engine.watermark(C) == 4


def test_pushes_beyond_the_fetched_range_trigger_a_follow_up_fetch():
    engine = SyncEngine(watermarks={C: 0})
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=3)))
    assert engine.on_push(msg(6)) == []  # held; a fetch is in flight
    actions = engine.on_history(fetch, page([1, 2, 3], max_seq=3))
    assert actions == [Deliver(msg(1)), Deliver(msg(2)), Deliver(msg(3)), Fetch(C, after=3, before=6)]
    assert delivered(engine.on_history(actions[-1], page([4, 5], max_seq=6))) == [4, 5, 6]


def test_conversations_are_independent():
    engine = SyncEngine(watermarks={C: 0, "g:7": 0})
    assert engine.on_push(msg(2)) == [Fetch(C, after=0, before=2)]
    assert delivered(engine.on_push(msg(1, "g:7"))) == [1]
    assert engine.on_push(msg(3, "g:7")) == [Fetch("g:7", after=1, before=3)]


def test_a_failed_fetch_can_be_asked_again():
    engine = SyncEngine(watermarks={C: 0})
    (fetch,) = engine.on_push(msg(3))
    engine.on_fetch_failed(fetch)
    assert engine.on_conversations(conversations(summary(max_seq=3))) == [Fetch(C, after=0)]


def test_reset_fetching_allows_a_resync_to_fetch_again():
    engine = SyncEngine(watermarks={C: 0})
    engine.on_push(msg(3))
    assert engine.on_conversations(conversations(summary(max_seq=3))) == []  # already fetching
    engine.reset_fetching()
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=3)))
    assert fetch == Fetch(C, after=0)
    assert delivered(engine.on_history(fetch, page([1, 2, 3]))) == [1, 2, 3]


# Own messages -------------------------------------------------------------------------------------


def test_own_messages_are_never_delivered_but_fill_their_seq():
    engine = SyncEngine(watermarks={C: 3})
    engine.mark_own(msg(4, sender=ME))
    assert engine.watermark(C) == 4
    assert engine.on_push(msg(4, sender=ME)) == []
    assert delivered(engine.on_push(msg(5))) == [5]


def test_own_message_beyond_a_gap_is_skipped_when_the_gap_fills():
    engine = SyncEngine(watermarks={C: 3})
    engine.mark_own(msg(5, sender=ME))
    assert engine.watermark(C) == 3
    (fetch,) = engine.on_push(msg(6))
    assert fetch == Fetch(C, after=3, before=6)
    # History includes the own message; it is not handed out.
    assert delivered(engine.on_history(fetch, page([4, 5], max_seq=6))) == [4, 6]
    assert engine.watermark(C) == 6


def test_own_messages_are_skipped_in_open_ended_history():
    engine = SyncEngine(watermarks={C: 0})
    engine.mark_own(msg(2, sender=ME))
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=3)))
    assert delivered(engine.on_history(fetch, page([1, 2, 3]))) == [1, 3]


def test_mark_own_below_the_watermark_changes_nothing():
    engine = SyncEngine(watermarks={C: 5})
    engine.mark_own(msg(2, sender=ME))
    assert engine.watermark(C) == 5


def test_own_message_already_held_leaves_no_stale_hold():
    # A group joined at seq 5, first seen through a push; our own send (seq 12) is committed and shows
    # up in a history page before send_text returns, behind the invisible seqs 1..5.
    group = "g:7"
    engine = SyncEngine()
    (fetch,) = engine.on_push(msg(20, group))
    actions = engine.on_history(fetch, page(range(6, 13), has_more=True, max_seq=20, conversation=group))
    assert actions == [Fetch(group, after=12, before=20)]
    engine.mark_own(msg(12, group, sender=ME))
    actions = engine.on_history(actions[0], page(range(13, 20), max_seq=20, conversation=group))
    assert delivered(actions) == [6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20]
    assert engine.watermark(group) == 20


def test_own_send_fetched_before_send_text_returns_is_not_delivered():
    engine = SyncEngine(watermarks={C: 0})
    engine.expect_own("own-key-1")
    own = msg(1, sender=ME).model_copy(update={"client_msg_id": "own-key-1"})
    (fetch,) = engine.on_push(msg(2))
    answer = MessagePage(conversation=C, messages=[own], has_more=False, max_seq=2)
    assert delivered(engine.on_history(fetch, answer)) == [2]
    engine.mark_own(own)
    assert engine.watermark(C) == 2


def test_a_failed_send_is_forgotten():
    engine = SyncEngine(watermarks={C: 0})
    engine.expect_own("lost-key-1")
    engine.forget_own("lost-key-1")
    same_key = msg(1).model_copy(update={"client_msg_id": "lost-key-1"})
    assert delivered(engine.on_push(same_key)) == [1]


# Start modes and the conversations cursor ----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "watermark"),
    [("unread", 4), ("latest", 10), ("all", 2)],
)
def test_start_mode_sets_the_initial_watermark(start, watermark):
    engine = SyncEngine(start=start)
    actions = engine.on_conversations(conversations(summary(max_seq=10, read_seq=4, joined_seq=2)))
    assert engine.watermark(C) == watermark
    expected = [] if watermark == 10 else [Fetch(C, after=watermark)]
    assert actions == expected


@pytest.mark.parametrize("start", ["unread", "all"])
def test_history_before_joining_is_never_fetched(start):
    engine = SyncEngine(start=start)
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=10, read_seq=1, joined_seq=6)))
    assert fetch == Fetch(C, after=6)


def test_known_conversations_keep_their_watermark_on_resync():
    engine = SyncEngine(start="latest", watermarks={C: 3})
    assert engine.on_conversations(conversations(summary(max_seq=10, read_seq=9))) == [Fetch(C, after=3)]


def test_nothing_is_fetched_for_a_conversation_that_is_up_to_date():
    engine = SyncEngine(watermarks={C: 10})
    assert engine.on_conversations(conversations(summary(max_seq=10))) == []


def test_since_is_set_only_by_the_last_page():
    engine = SyncEngine(since="old")
    engine.on_conversations(conversations(summary(C, max_seq=0), has_more=True, cursor="page-1"))
    assert engine.since == "old"
    engine.on_conversations(conversations(summary("g:7", max_seq=0), has_more=True, cursor="page-2"))
    assert engine.since == "old"
    engine.on_conversations(conversations(has_more=False, cursor="page-3"))
    assert engine.since == "page-3"


def test_recent_messages_reaching_the_watermark_are_delivered_without_a_fetch():
    engine = SyncEngine(watermarks={C: 4})
    recent = [msg(seq) for seq in (3, 4, 5, 6)]
    actions = engine.on_conversations(conversations(summary(max_seq=6, recent=recent, recent_after=2)))
    assert delivered(actions) == [5, 6]
    assert engine.watermark(C) == 6
    assert engine.since == "cursor"


def test_recent_messages_above_the_watermark_leave_a_fetch_for_the_gap():
    engine = SyncEngine(watermarks={C: 1})
    recent = [msg(seq) for seq in (5, 6)]
    actions = engine.on_conversations(conversations(summary(max_seq=6, recent=recent, recent_after=4)))
    assert actions == [Fetch(C, 1)]
    assert engine.since is None  # not until the fetch is done


def test_seqs_missing_from_recent_messages_are_not_visible():
    # A window with nothing visible in it (before joining, or the page's budget gave it none: no
    # recent_after) moves the watermark only when recent_after says the window is complete.
    engine = SyncEngine(watermarks={C: 4})
    assert delivered(engine.on_conversations(conversations(summary(max_seq=6, recent=[], recent_after=4)))) == []
    assert engine.watermark(C) == 6
    engine = SyncEngine(watermarks={C: 4})
    assert engine.on_conversations(conversations(summary(max_seq=6))) == [Fetch(C, 4)]


def test_recent_messages_skip_own_sends_and_release_held_pushes():
    engine = SyncEngine(watermarks={C: 2})
    assert engine.on_push(msg(6)) == [Fetch(C, 2, 6)]
    engine.reset_fetching()  # reconnected
    own = msg(4, sender=ME).model_copy(update={"client_msg_id": "mine"})
    engine.expect_own("mine")
    recent = [msg(3), own, msg(5), msg(6)]
    actions = engine.on_conversations(conversations(summary(max_seq=6, recent=recent, recent_after=2)))
    assert delivered(actions) == [3, 5, 6]
    assert engine.watermark(C) == 6


@pytest.mark.parametrize(
    "recent",
    [[msg(5, "d:1:3"), msg(6)], [msg(4), msg(5), msg(6)], [msg(5), msg(6), msg(7)]],
    ids=["another conversation", "below the window", "above max_seq"],
)
def test_recent_messages_that_do_not_fit_the_summary_are_not_trusted(recent):
    engine = SyncEngine(watermarks={C: 4})
    actions = engine.on_conversations(conversations(summary(max_seq=6, recent=recent, recent_after=4)))
    assert actions == [Fetch(C, 4)]


def test_a_conversation_being_fetched_ignores_recent_messages():
    engine = SyncEngine(watermarks={C: 2})
    assert engine.on_push(msg(5)) == [Fetch(C, 2, 5)]
    recent = [msg(seq) for seq in (3, 4, 5, 6)]
    assert engine.on_conversations(conversations(summary(max_seq=6, recent=recent, recent_after=2))) == []


def test_watermarks_can_be_persisted_and_restored():
    engine = SyncEngine(watermarks={C: 0})
    engine.on_push(msg(1))
    engine.on_push(msg(1, "g:7"))
    restored = SyncEngine(watermarks=engine.watermarks())
    assert restored.watermarks() == {C: 1, "g:7": 1}
    assert restored.on_push(msg(1)) == []


# Randomized: a simulated server ------------------------------------------------------------------

CONVERSATIONS = ("d:1:2", "g:7", "g:8")
JOINED = {"d:1:2": 0, "g:7": 0, "g:8": 3}
"""This user joined g:8 after its third message: seqs 1..3 are invisible to them."""
PAGE_LIMIT = 7


class Server:
    """The conversation store and the push stream, as one device sees them."""

    def __init__(self, rng, count):
        self.rng = rng
        self.remaining = count
        """Messages still to be stored."""
        self.stored = {conversation: [] for conversation in CONVERSATIONS}
        self.own = set()
        self.sending = []
        """This client's sends that are stored but whose send_text has not returned yet."""
        self.in_flight = []
        self.history_calls = 0
        self.recent = rng.choice([0, 0, 1, 3, 10])
        """How many seqs of newest messages each summary carries (0: none, as without ``recent``)."""

    def store(self, engine):
        if not self.remaining:
            return []
        self.remaining -= 1
        conversation = self.rng.choice(CONVERSATIONS)
        seq = len(self.stored[conversation]) + 1
        visible = seq > JOINED[conversation]
        own = visible and self.rng.random() < 0.15
        message = msg(seq, conversation, sender=ME if own else self.rng.choice([2, 3]))
        self.stored[conversation].append(message)
        if own:
            # send_text announced its key before sending; the sender's device gets no push, and the
            # send returns (mark_own) at some later step, possibly after a sync fetched the message.
            message = message.model_copy(update={"client_msg_id": f"own-{conversation}-{seq}"})
            engine.expect_own(message.client_msg_id)
            self.stored[conversation][-1] = message
            self.own.add((conversation, seq))
            self.sending.append(message)
            return []
        if visible and self.rng.random() > 0.2:  # 20% of pushes are lost
            self.in_flight.append(message)
            if self.rng.random() < 0.15:
                self.in_flight.append(message)
        return []

    def complete_send(self, engine):
        """One of this client's pending sends returns."""
        if self.sending:
            engine.mark_own(self.sending.pop(self.rng.randrange(len(self.sending))))
        return []

    def history(self, fetch):
        self.history_calls += 1
        assert fetch.before is None or fetch.after < fetch.before - 1, fetch
        matching = [
            message
            for message in self.stored[fetch.conversation]
            if message.seq > JOINED[fetch.conversation]
            and message.seq > fetch.after
            and (fetch.before is None or message.seq < fetch.before)
        ]
        return MessagePage(
            conversation=fetch.conversation,
            messages=matching[:PAGE_LIMIT],
            has_more=len(matching) > PAGE_LIMIT,
            max_seq=len(self.stored[fetch.conversation]),
        )

    def conversation_pages(self):
        summaries = []
        for conversation in CONVERSATIONS:
            max_seq, joined = len(self.stored[conversation]), JOINED[conversation]
            after = max(joined, max_seq - self.recent) if self.recent else None
            recent = [message for message in self.stored[conversation] if after is not None and message.seq > after]
            summaries.append(
                summary(conversation, max_seq=max_seq, joined_seq=joined, recent=recent, recent_after=after)
            )
        return [
            conversations(*summaries[:2], has_more=True, cursor="c1"),
            conversations(*summaries[2:], has_more=False, cursor="c2"),
        ]

    def visible_from_others(self):
        return {
            (message.conversation, message.seq): message
            for messages in self.stored.values()
            for message in messages
            if message.seq > JOINED[message.conversation] and (message.conversation, message.seq) not in self.own
        }


def _simulate_sequential(seed):
    """Fetches are carried out as the clients' ``_run`` does: one after the other, depth first, before
    the next push is read. The server keeps storing (and this client's sends complete) meanwhile."""
    rng = random.Random(seed)
    server = Server(rng, rng.randint(1, 80))
    engine = SyncEngine(start="all")
    out = []

    def run(actions):
        queue = list(actions)
        while queue:
            assert server.history_calls < 10_000, "fetch loop"
            action = queue.pop(0)
            if isinstance(action, Deliver):
                out.append(action.message)
                continue
            while rng.random() < 0.3:
                out.extend(a.message for a in server.store(engine))
            queue[0:0] = engine.on_history(action, server.history(action))

    def resync():
        engine.reset_fetching()
        for conversation_page in server.conversation_pages():
            run(engine.on_conversations(conversation_page))

    while server.remaining or server.in_flight or server.sending:
        roll = rng.random()
        if server.remaining and roll < 0.45:
            run(server.store(engine))
        elif server.sending and roll < 0.55:
            server.complete_send(engine)
        elif server.in_flight and roll < 0.97:
            # Pushes arrive in any order.
            run(engine.on_push(server.in_flight.pop(rng.randrange(len(server.in_flight)))))
        elif roll >= 0.97:
            resync()
    resync()  # nothing is stored any more: a final reconnect picks up the lost pushes
    return server, out


def _simulate_concurrent(seed):
    """Fetches are answered late and in any order, interleaved with pushes, sends and reconnects
    (answers to fetches of an earlier connection may still arrive after a reconnect)."""
    rng = random.Random(seed)
    server = Server(rng, rng.randint(1, 80))
    engine = SyncEngine(start="all")
    out = []
    fetches = []

    def take(actions):
        for action in actions:
            if isinstance(action, Deliver):
                out.append(action.message)
            else:
                fetches.append(action)

    def resync():
        engine.reset_fetching()
        for conversation_page in server.conversation_pages():
            take(engine.on_conversations(conversation_page))

    while server.remaining or server.in_flight or fetches or server.sending:
        assert server.history_calls < 10_000, "fetch loop"
        roll = rng.random()
        if server.remaining and roll < 0.3:
            take(server.store(engine))
        elif server.sending and roll < 0.35:
            server.complete_send(engine)
        elif server.in_flight and roll < 0.6:
            take(engine.on_push(server.in_flight.pop(rng.randrange(len(server.in_flight)))))
        elif fetches and roll < 0.97:
            fetch = fetches.pop(rng.randrange(len(fetches)))
            take(engine.on_history(fetch, server.history(fetch)))
        elif roll >= 0.97:
            resync()
    resync()
    while fetches:
        assert server.history_calls < 10_000, "fetch loop"
        fetch = fetches.pop(0)
        take(engine.on_history(fetch, server.history(fetch)))
    return server, out


@pytest.mark.parametrize("simulate", [_simulate_sequential, _simulate_concurrent], ids=["sequential", "concurrent"])
@pytest.mark.parametrize("seed", range(300))
def test_random_pushes_and_fetches_deliver_everything_once_in_order(simulate, seed):
    server, out = simulate(seed)
    keys = [(message.conversation, message.seq) for message in out]
    assert len(keys) == len(set(keys)), "a message was delivered twice"
    expected = server.visible_from_others()
    assert set(keys) == set(expected), "missing or unexpected messages"
    for message in out:
        assert message == expected[(message.conversation, message.seq)]
    for conversation in CONVERSATIONS:
        seqs = [seq for c, seq in keys if c == conversation]
        assert seqs == sorted(seqs), f"{conversation} out of order"


# Which way a catch-up goes (SyncRequests) ---------------------------------------------------------


def test_a_catch_up_page_is_asked_for_with_a_sync_frame_and_matched_by_id():
    from im_schema.frames import ErrorFrame, MessageFrame, SyncFrame, SyncPageFrame
    from im_sdk.realtime.protocol import SyncRequests

    syncs = SyncRequests()
    assert syncs.answer(SyncPageFrame(id="sync-1", page=conversations())) is None  # nothing asked yet
    frame = syncs.request("k1", 500, 20)
    assert frame == SyncFrame(id="sync-1", since="k1", limit=500, recent=20)
    # Pushes, answers to other frames and stale answers are not its answer.
    assert syncs.answer(MessageFrame(message=msg(1))) is None
    assert syncs.answer(ErrorFrame(code="rate_limited", message="x", client_msg_id="abc")) is None
    assert syncs.answer(SyncPageFrame(id="sync-0", page=conversations())) is None
    assert syncs.answer(ErrorFrame(code="bad_request", message="x", id="other")) is None
    expected = conversations(summary(max_seq=3), cursor="k2")
    assert syncs.answer(SyncPageFrame(id="sync-1", page=expected)) == expected
    assert syncs.pending is None and syncs.answer(SyncPageFrame(id="sync-1", page=expected)) is None
    assert syncs.request("k2", 500, 20).id == "sync-2"  # a fresh id for each request


def test_a_busy_server_is_asked_again_then_the_refusal_is_raised():
    from im_schema.frames import ErrorFrame
    from im_sdk import RateLimitedError
    from im_sdk.errors import APIError
    from im_sdk.realtime.protocol import SYNC_RETRIES, SendAgain, SyncRequests

    syncs = SyncRequests()
    for _ in range(SYNC_RETRIES):
        frame = syncs.request(None, 500, 20)
        outcome = syncs.answer(ErrorFrame(code="unavailable", message="busy", id=frame.id, retry_after=0.3))
        assert outcome == SendAgain(0.3)
    frame = syncs.request(None, 500, 20)
    outcome = syncs.answer(ErrorFrame(code="rate_limited", message="slow down", id=frame.id, retry_after=2.0))
    assert isinstance(outcome, RateLimitedError) and outcome.retry_after == 2.0
    # Anything else is raised at once, as its HTTP twin would be.
    frame = syncs.request("bad", 500, 20)
    outcome = syncs.answer(ErrorFrame(code="bad_request", message="malformed cursor", id=frame.id))
    assert isinstance(outcome, APIError) and outcome.status == 400 and syncs.over_socket


def test_an_older_gateway_makes_the_connection_catch_up_over_http():
    from im_schema.frames import ErrorFrame
    from im_sdk.realtime.protocol import AskOverHttp, SyncRequests

    syncs = SyncRequests()
    syncs.request(None, 500, 20)
    # What a gateway that does not know the frame answers: unknown_frame, without the id.
    assert syncs.answer(ErrorFrame(code="unknown_frame", message="unknown or missing frame type")) == AskOverHttp()
    assert not syncs.over_socket and syncs.request(None, 500, 20) is None
