"""Saving sync cursors: the pure Checkpoint, the SQLite CursorStore, the CursorKeeper that joins them to a
SyncEngine, and the engine's cursor rules (``since`` only after a complete pass; ``resume``)."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
from datetime import UTC, datetime

import pytest

from im_schema.models import ConversationSummary, Message
from im_schema.rest import ConversationPage, MessagePage
from im_sdk.realtime.checkpoint import Checkpoint, Cursors
from im_sdk.realtime.protocol import Deliver, Fetch, SyncEngine
from im_sdk.realtime.store import CursorKeeper, CursorStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)
C, G = "d:1:2", "g:7"


def msg(seq, conversation=C, client_msg_id=None):
    return Message(
        conversation=conversation,
        seq=seq,
        sender=2,
        client_msg_id=client_msg_id,
        sent_at=T0,
        content={"kind": "text", "text": f"{conversation}#{seq}"},
    )


def summary(conversation=C, *, max_seq):
    return ConversationSummary(
        id=conversation,
        kind="direct" if conversation.startswith("d:") else "group",
        max_seq=max_seq,
        read_seq=0,
        joined_seq=0,
        unread=max_seq,
        updated_at=T0,
    )


def conversations(*summaries, cursor="c1", has_more=False):
    return ConversationPage(conversations=list(summaries), cursor=cursor, has_more=has_more)


def history(conversation, seqs, max_seq=None):
    seqs = list(seqs)
    return MessagePage(
        conversation=conversation,
        messages=[msg(s, conversation) for s in seqs],
        has_more=False,
        max_seq=max_seq if max_seq is not None else max(seqs, default=0),
    )


def delivered(actions):
    return [action.message for action in actions if isinstance(action, Deliver)]


# SyncEngine: since and resume ---------------------------------------------------------------------


def test_since_waits_for_the_fetches_of_its_pass():
    engine = SyncEngine(start="all", since="old")
    fetches = engine.on_conversations(conversations(summary(C, max_seq=3), summary(G, max_seq=1), cursor="new"))
    assert fetches == [Fetch(C, 0), Fetch(G, 0)]
    assert engine.since == "old"
    engine.on_history(fetches[0], history(C, [1, 2, 3]))
    assert engine.since == "old"  # G is not delivered yet
    engine.on_history(fetches[1], history(G, [1]))
    assert engine.since == "new"


def test_a_failed_fetch_keeps_the_old_cursor_for_the_next_resync():
    engine = SyncEngine(start="all", since="old")
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=2), cursor="new"))
    engine.on_fetch_failed(fetch)
    engine.reset_fetching()  # the shell reconnects
    assert engine.since == "old"
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=2), cursor="newer"))
    engine.on_history(fetch, history(C, [1, 2]))
    assert engine.since == "newer"


def test_a_conversation_gone_does_not_hold_the_cursor_back():
    engine = SyncEngine(start="all", since="old")
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=2), cursor="new"))
    engine.on_fetch_failed(fetch, gone=True)
    assert engine.since == "new"


def test_pushes_can_complete_a_pass():
    engine = SyncEngine(start="all", watermarks={C: 1}, since="old")
    engine.on_push(msg(2))  # a fetch for the gap is not needed: 2 follows 1
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=3), cursor="new"))
    assert engine.since == "old"
    assert [m.seq for m in delivered(engine.on_push(msg(3)))] == [3]
    assert engine.since == "new"
    assert delivered(engine.on_history(fetch, history(C, [3]))) == []


def test_resume_adopts_saved_cursors_without_going_back():
    engine = SyncEngine(start="all")
    engine.expect_own("own-key-1")
    engine.mark_own(msg(9, client_msg_id="own-key-1"))  # sent before the first connection
    engine.resume({C: 8, G: 4}, "saved")
    assert engine.watermarks() == {C: 9, G: 4}  # 8, then over its own 9
    assert engine.since == "saved"
    engine.resume({C: 3}, "older")
    assert engine.watermarks()[C] == 9
    assert engine.since == "saved"


# Checkpoint ---------------------------------------------------------------------------------------


def test_nothing_waiting_means_the_engine_state_is_safe():
    engine = SyncEngine(start="all")
    checkpoint = Checkpoint(engine)
    (fetch,) = engine.on_conversations(conversations(summary(max_seq=2), cursor="k1"))
    out = delivered(engine.on_history(fetch, history(C, [1, 2])))
    checkpoint.handed(out)
    assert checkpoint.waiting == 2 and not checkpoint.due
    assert checkpoint.changes() == Cursors(None, {C: 0})  # neither given yet, the cursor not safe
    checkpoint.yielded(out[0])
    assert checkpoint.changes() == Cursors(None, {C: 1})
    checkpoint.yielded(out[1])
    assert checkpoint.due
    changes = checkpoint.changes()
    assert changes == Cursors("k1", {C: 2})
    checkpoint.saved(changes)
    assert not checkpoint.due
    assert checkpoint.changes() is None


def test_a_long_burst_is_saved_every_so_often():
    engine = SyncEngine(start="all", watermarks={C: 0})
    checkpoint = Checkpoint(engine, every=2)
    out = [message for seq in (1, 2, 3) for message in delivered(engine.on_push(msg(seq)))]
    checkpoint.handed(out)
    checkpoint.yielded(out[0])
    assert not checkpoint.due
    checkpoint.yielded(out[1])
    assert checkpoint.due and checkpoint.waiting == 1
    changes = checkpoint.changes()
    assert changes.watermarks == {C: 2}
    checkpoint.saved(changes)
    checkpoint.yielded(out[2])
    assert checkpoint.due  # the burst ended


def test_changes_include_watermarks_moved_without_a_delivery():
    engine = SyncEngine(start="all", watermarks={C: 4})
    checkpoint = Checkpoint(engine, Cursors(None, {C: 4}))
    engine.expect_own("own-key-1")
    engine.mark_own(msg(5, client_msg_id="own-key-1"))
    assert checkpoint.changes() == Cursors(None, {C: 5})


def test_the_cursor_saved_is_the_last_one_with_nothing_waiting():
    engine = SyncEngine(start="all", watermarks={C: 0, G: 0}, since="k0")
    checkpoint = Checkpoint(engine, Cursors("k0", {C: 0, G: 0}))
    (fetch,) = engine.on_conversations(conversations(summary(C, max_seq=1), cursor="k1"))
    checkpoint.handed(out := delivered(engine.on_history(fetch, history(C, [1]))))
    checkpoint.yielded(out[0])
    assert checkpoint.changes().since == "k1"
    pushed = delivered(engine.on_push(msg(1, G)))
    checkpoint.handed(pushed)
    engine.reset_fetching()
    (fetch,) = engine.on_conversations(conversations(summary(C, max_seq=2), cursor="k2"))
    checkpoint.handed(out := delivered(engine.on_history(fetch, history(C, [2]))))
    assert engine.since == "k2"
    assert checkpoint.changes().since == "k1"  # G#1 and C#2 were not given to the application yet
    checkpoint.yielded(pushed[0])
    checkpoint.yielded(out[0])
    assert checkpoint.changes() == Cursors("k2", {C: 2, G: 1})


def test_abandoned_messages_stop_holding_the_state_back():
    engine = SyncEngine(start="all", watermarks={C: 0})
    checkpoint = Checkpoint(engine)
    checkpoint.handed(delivered(engine.on_push(msg(1))))
    assert checkpoint.changes().watermarks == {C: 0}
    checkpoint.abandon()
    assert checkpoint.changes().watermarks == {C: 1}


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        Checkpoint(SyncEngine(), every=0)


# CursorStore --------------------------------------------------------------------------------------


def test_store_round_trip_per_account(tmp_path):
    path = tmp_path / "deep" / "state.sqlite3"
    store = CursorStore(path)
    assert store.load("a") == Cursors()
    store.save("a", Cursors("k1", {C: 3, G: 1}))
    store.save("a", Cursors("k2", {C: 5}))  # only what changed
    store.save("b", Cursors(None, {C: 1}))
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = CursorStore(path)
    assert again.load("a") == Cursors("k2", {C: 5, G: 1})
    assert again.load("b") == Cursors(None, {C: 1})
    assert again.accounts() == ["a", "b"]
    again.forget("a")
    assert again.load("a") == Cursors()
    again.forget()
    assert again.accounts() == []
    again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_save_is_one_transaction(tmp_path):
    store = CursorStore(tmp_path / "state.sqlite3")
    store.save("a", Cursors("k1", {C: 1}))
    with pytest.raises(sqlite3.Error):
        store.save("a", Cursors("k2", {G: 2, C: None}))  # NOT NULL fails after the cursor was written
    assert store.load("a") == Cursors("k1", {C: 1})
    store.close()


# CursorKeeper -------------------------------------------------------------------------------------


def _yield_all(keeper, items):
    """The shells' loop: each item yielded inside ``keeper.yielding``."""
    for item in items:
        with keeper.yielding(item):
            yield item


def test_keeper_restores_on_the_first_ready_and_saves_when_a_burst_ends(tmp_path):
    path = tmp_path / "state.sqlite3"
    CursorStore(path).save("http://x 1 phone", Cursors("k1", {C: 2}))
    keeper = CursorKeeper(path, "http://x")
    engine = SyncEngine(start="all")
    keeper.ready(engine, 1, "phone")
    assert engine.watermarks() == {C: 2} and engine.since == "k1"
    out = delivered(engine.on_push(msg(3))) + delivered(engine.on_push(msg(4)))
    keeper.handed(out)
    gen = _yield_all(keeper, out)
    next(gen)
    assert keeper.saves == 0
    next(gen)
    with pytest.raises(StopIteration):
        next(gen)  # the application came back after the last one: the burst is saved
    assert keeper.saves == 1
    assert CursorStore(path).load("http://x 1 phone").watermarks == {C: 4}
    keeper.ready(engine, 1, "phone")  # a reconnect does not restore again
    assert engine.watermarks() == {C: 4}
    keeper.close()


def test_keeper_saves_when_the_application_stops_mid_burst(tmp_path):
    path = tmp_path / "state.sqlite3"
    keeper = CursorKeeper(path, "http://x")
    engine = SyncEngine(start="all", watermarks={C: 0})
    keeper.ready(engine, 1, "phone")
    out = delivered(engine.on_push(msg(1))) + delivered(engine.on_push(msg(2))) + delivered(engine.on_push(msg(3)))
    keeper.handed(out)
    gen = _yield_all(keeper, out)
    next(gen)
    next(gen)
    gen.close()  # GeneratorExit at the second yield
    assert CursorStore(path).load("http://x 1 phone").watermarks == {C: 2}
    keeper.close()
    keeper.flush()  # closed: nothing more is written
    assert CursorStore(path).load("http://x 1 phone").watermarks == {C: 2}


def test_keeper_without_a_store_only_keeps_books():
    keeper = CursorKeeper(None, "http://x")
    engine = SyncEngine(start="all", watermarks={C: 0})
    keeper.ready(engine, 1, "phone")
    out = delivered(engine.on_push(msg(1)))
    keeper.handed(out)
    assert list(_yield_all(keeper, out)) == out
    keeper.close()
    assert keeper.saves == 0


def test_keeper_logs_and_carries_on_when_the_file_is_unusable(tmp_path, caplog):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    keeper = CursorKeeper(directory, "http://x")  # a directory is not a database
    engine = SyncEngine(start="all", watermarks={C: 0})
    keeper.ready(engine, 1, "phone")
    out = delivered(engine.on_push(msg(1)))
    keeper.handed(out)
    assert list(_yield_all(keeper, out)) == out
    assert keeper.saves == 0


# Crashes at random moments ------------------------------------------------------------------------


class _Server:
    """Messages in three conversations; a cursor is a position in the log of all of them."""

    def __init__(self, rng):
        self.rng = rng
        self.log: list[Message] = []
        self.seqs = dict.fromkeys((C, G, "g:8"), 0)

    def store(self):
        conversation = self.rng.choice(list(self.seqs))
        self.seqs[conversation] += 1
        message = msg(self.seqs[conversation], conversation)
        self.log.append(message)
        return message

    def since(self, cursor):
        start = int(cursor or 0)
        changed = {m.conversation for m in self.log[start:]}
        summaries = [summary(c, max_seq=self.seqs[c]) for c in sorted(changed)]
        return conversations(*summaries, cursor=str(len(self.log)))

    def history(self, fetch):
        seqs = [
            m.seq
            for m in self.log
            if m.conversation == fetch.conversation
            and m.seq > fetch.after
            and (fetch.before is None or m.seq < fetch.before)
        ]
        return history(fetch.conversation, seqs, max_seq=self.seqs[fetch.conversation])


@pytest.mark.parametrize("seed", range(100))
def test_a_crash_never_skips_and_repeats_at_most_a_batch(tmp_path, seed):
    rng = random.Random(seed)
    every = rng.choice([1, 3, 8])
    path = tmp_path / "state.sqlite3"
    server = _Server(rng)
    given: list[tuple[str, int]] = []
    crashes = 0

    def run(engine, keeper, actions):
        queue, out = list(actions), []
        while queue:
            action = queue.pop(0)
            if isinstance(action, Deliver):
                out.append(action.message)
            else:
                queue[0:0] = engine.on_history(action, server.history(action))
        keeper.handed(out)
        return out

    zombies = []  # processes "killed": their generators are never closed, so nothing runs after the kill

    def client(new_messages=True):
        """One process of the device: yields until it is killed (True) or has nothing more (False)."""
        keeper = CursorKeeper(path, "http://x", every=every)
        engine = SyncEngine(start="all")
        keeper.ready(engine, 1, "phone")
        batches = [run(engine, keeper, engine.on_conversations(server.since(engine.since)))]
        for _ in range(rng.randint(0, 30) if new_messages else 0):
            if rng.random() < 0.7:
                message = server.store()
                if rng.random() < 0.8:  # some pushes are lost
                    batches.append(run(engine, keeper, engine.on_push(message)))
        stream = _yield_all(keeper, [message for batch in batches for message in batch])
        for message in stream:
            given.append((message.conversation, message.seq))
            if rng.random() < 0.05:
                zombies.append(stream)
                return True
        keeper.close()
        return False

    while crashes < 10 and client():
        crashes += 1
    while client(new_messages=False):  # until a run ends cleanly with nothing new stored
        crashes += 1

    expected = {(m.conversation, m.seq) for m in server.log}
    assert set(given) == expected, "a message was skipped"
    repeats = len(given) - len(set(given))
    assert repeats <= crashes * every


def test_manual_keeper_saves_only_what_was_acknowledged(tmp_path):
    engine = SyncEngine(start="all")
    keeper = CursorKeeper(tmp_path / "state.sqlite3", "http://server", manual=True)
    keeper.ready(engine, 1, "bot")
    actions = engine.on_push(msg(1)) + engine.on_push(msg(2))
    keeper.handed(delivered_messages := [action.message for action in actions if isinstance(action, Deliver)])
    saved = lambda: CursorStore(tmp_path / "state.sqlite3").load("http://server 1 bot").watermarks  # noqa: E731
    assert saved() == {C: 0}  # a new conversation is saved at once, below what was handed
    for message in delivered_messages:
        with keeper.yielding(message):
            pass
    assert saved() == {C: 0}  # yielded is not handled
    keeper.acknowledge(delivered_messages[0])
    assert saved() == {C: 1}
    keeper.ready(engine, 1, "bot")  # a reconnect abandons nothing that may still be acknowledged
    keeper.acknowledge(delivered_messages[1])
    assert saved() == {C: 2}
    keeper.close()
