"""`im chat`, driven with Textual's pilot against a real cluster."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from textual.widgets import Input, Static

from im_cli.tui.app import ChatApp
from im_cli.tui.events import ConnectionChanged
from im_cli.tui.widgets import ChatView, ConversationItem
from im_schema.content import TextContent
from im_schema.ids import direct_conversation
from im_sdk import AsyncClient
from tests.support import media
from tests.support.cluster import TestCluster


@pytest.fixture
def sqlite_cluster(shared_sqlite_cluster: TestCluster) -> TestCluster:
    """The tests of this module make users of their own: they share a cluster (one that a test restarts
    gateways of starts afresh for the next)."""
    return shared_sqlite_cluster


async def _until(pilot, predicate: Callable[[], object], timeout: float = 15) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await pilot.pause(0.02)
    except TimeoutError:
        app = pilot.app
        said = [n.message for n in app._notifications]
        raise AssertionError(f"not so after {timeout}s; title {app.sub_title!r}; notifications {said}") from None


def _shown(app: ChatApp) -> list[str]:
    return [str(item.content) for item in app.query_one(ChatView).items()]


def _last(app: ChatApp) -> str:
    """The last line shown, or "" before the first page has loaded."""
    shown = _shown(app)
    return shown[-1] if shown else ""


def _app(client: AsyncClient, url: str, **kwargs) -> ChatApp:
    assert client.session is not None
    user = client.session.user
    app = ChatApp(client, me=user.id, username=user.username, server=url, **kwargs)
    app.PAGE = 10
    return app


async def _type(pilot, app: ChatApp, text: str) -> None:
    field = app.query_one("#input", Input)
    field.focus()
    field.value = text
    await pilot.press("enter")


async def test_chat_pages_sends_replies_mentions_edits_recalls_receipts_and_typing(sqlite_cluster):
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    assert alice.session and bob.session
    a, b = alice.session.user, bob.session.user
    conversation = direct_conversation(a.id, b.id)
    for number in range(1, 16):
        await alice.send_text(b.username, f"message {number}")
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(100, 16)) as pilot:
        # The newest page is shown in the only conversation, which opens by itself; the title says connected.
        await _until(pilot, lambda: app.current == conversation and len(_shown(app)) == 10)
        await _until(pilot, lambda: "connected to" in app.sub_title)
        assert _last(app).endswith("message 15") and a.username in _last(app)
        # Scrolled to the top, the pane loads the older page and keeps the place.
        app.query_one(ChatView).scroll_home(animate=False)
        await _until(pilot, lambda: len(_shown(app)) == 15)
        assert _shown(app)[0].endswith("message 1")

        # Send, reply and mention.
        await _type(pilot, app, f"hello @{a.username}")
        await _until(pilot, lambda: any("hello" in line for line in _shown(app)))
        await _type(pilot, app, "/reply 2 about that one")
        await _until(pilot, lambda: any("about that one" in line for line in _shown(app)))
        page = await alice.history(conversation, after=15)
        hello, reply = page.messages
        assert hello.mentions == [a.id]
        assert reply.reply_to is not None and reply.reply_to.seq == 2
        assert f'↪ {a.username} #2: "message 2"' in _last(app)

        # Edit and recall change the message in place; the peer sees both.
        await _type(pilot, app, f"/edit {hello.seq} hello again")
        await _until(pilot, lambda: any("hello again" in line and "(edited)" in line for line in _shown(app)))
        await _type(pilot, app, f"/recall {reply.seq}")
        await _until(pilot, lambda: any("(recalled)" in line for line in _shown(app)))
        edited = (await alice.history(conversation, after=hello.seq - 1, limit=1)).messages[0]
        assert isinstance(edited.content, TextContent) and edited.content.text == "hello again"

        # Live: a message arrives, alice's typing shows, her read receipt turns ✓ into ✓✓.
        await alice.send_text(b.username, "live one")
        await _until(pilot, lambda: _last(app).endswith("live one"))
        await alice.typing(conversation)
        typing = app.query_one("#typing", Static)
        await _until(pilot, lambda: "is typing" in str(typing.content))
        assert _shown(app)[-3].endswith("✓")
        await alice.mark_read(conversation, hello.seq)
        await _until(pilot, lambda: "✓✓" in _shown(app)[-3])

        # A bad command is refused in words, and nothing is sent.
        await _type(pilot, app, "/frobnicate")
        await pilot.pause()
        assert (await alice.history(conversation, after=17)).messages[-1].content == TextContent(text="live one")
    await alice.aclose()
    await bob.aclose()


async def test_chat_unread_mentions_groups_members_and_friend_requests(sqlite_cluster):
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    carol = await sqlite_cluster.user("carol")
    assert alice.session and bob.session and carol.session
    a, b, c = alice.session.user, bob.session.user, carol.session.user
    await alice.send_text(b.username, "first")
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: app.current == direct_conversation(a.id, b.id))
        await _until(pilot, lambda: "connected to" in app.sub_title)
        group = await alice.groups.create("book club", [b.id])
        await alice.send_text(group.conversation, f"@{b.username} look", mentions=[b.id])

        # The new group shows up with its name, an unread badge and the mention.
        def row():
            return app.rows.get(group.conversation)

        await _until(pilot, lambda: row() is not None and row().unread >= 1 and row().mentioned)
        assert row().title == "book club"
        item = next(i for i in app.query(ConversationItem) if i.row.id == group.conversation)
        assert "@" in str(item.row.label())

        # Opened: read, and the member panel lists everyone with their state.
        await _type(pilot, app, "/open book club")
        await _until(pilot, lambda: app.current == group.conversation)
        members = app.query_one("#members", Static)
        await _until(pilot, lambda: a.username in str(members.content) and b.username in str(members.content))
        assert row().unread == 0 and not row().mentioned
        assert any("look" in line for line in _shown(app))
        # @all is for owners and admins: refused, and the text stays in the input to fix.
        await _type(pilot, app, "hi @all")
        await _until(pilot, lambda: app.query_one("#input", Input).value == "hi @all")
        await _type(pilot, app, f"hi @{a.username}")
        await _until(pilot, lambda: any("hi @" in line for line in _shown(app)))
        latest = (await alice.history(group.conversation)).messages[-1]
        assert latest.sender == b.id and latest.mentions == [a.id]

        # A friend request appears among the requests; /accept NAME answers it.
        await carol.friends.request(b.username, "hi bob")
        requests = app.query_one("#requests")
        await _until(pilot, lambda: c.username in " ".join(str(label.content) for label in requests.query("Label")))
        await _type(pilot, app, f"/accept {c.username}")
        await _until(pilot, lambda: not app.requests)
        friends = await carol.friends.list()
        assert [friend.user.id for friend in friends] == [b.id]

        # Bob asks to be invited rather than added: alice's group becomes an invitation to accept.
        await bob.friends.set_privacy(group_invites="nobody")
        chess = await alice.groups.create("chess club", [b.id])
        await _until(pilot, lambda: any(invite.group_name == "chess club" for invite in app.invites))
        await _type(pilot, app, "/accept chess club")
        await _until(pilot, lambda: chess.conversation in app.rows and not app.invites)
        assert app.rows[chess.conversation].title == "chess club"
        # The list reloads (the join's notice) while the group's messages arrive: one row per conversation.
        app.load_conversations()
        await alice.send_text(chess.conversation, "welcome")
        await _until(pilot, lambda: app.rows[chess.conversation].max_seq >= 2)
        # (Not `wait_for_complete`: given no workers, it waits for all of them, the connection's among them.)
        await _until(pilot, lambda: not any(w.group == "conversations" and not w.is_finished for w in app.workers))
        listed = [item.row.id for item in app.query(ConversationItem)]
        assert sorted(listed) == sorted(set(listed)) == sorted(app.rows)
    for client in (alice, bob, carol):
        await client.aclose()


async def test_chat_files_with_progress_and_a_restart_of_the_gateways(sqlite_cluster, tmp_path):
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    assert alice.session and bob.session
    a, b = alice.session.user, bob.session.user
    conversation = direct_conversation(a.id, b.id)
    picture = tmp_path / "cat.png"
    picture.write_bytes(media.png(64, 48))
    await alice.send_text(b.username, "a picture follows")
    app = _app(bob, sqlite_cluster.url, downloads=tmp_path / "downloads")
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: app.current == conversation)
        await _until(pilot, lambda: "connected to" in app.sub_title)
        await _type(pilot, app, f"/file {picture} the cat")
        await _until(pilot, lambda: any("[image] cat.png" in line for line in _shown(app)))
        sent = (await alice.history(conversation)).messages[-1]
        assert sent.content.kind == "image" and sent.content.caption == "the cat"  # type: ignore[union-attr]

        await _type(pilot, app, f"/download {sent.seq} {tmp_path / 'saved'}/")
        await _until(pilot, lambda: (tmp_path / "saved" / "cat.png").exists())
        assert (tmp_path / "saved" / "cat.png").read_bytes() == picture.read_bytes()
        await _type(pilot, app, f"/download {sent.seq}")
        await _until(pilot, lambda: (tmp_path / "downloads" / "cat.png").exists())

        # The gateways go away: the title says so; they come back: it reconnects and catches up.
        for node in list(sqlite_cluster.gateways):
            sqlite_cluster.stop_gateway(node)
        await _until(pilot, lambda: "reconnecting" in app.sub_title)
        assert re.search(r"[A-Z][A-Za-z]+\(", app.sub_title) is None, app.sub_title  # words, not a repr
        await alice.send_text(b.username, "sent while you were away")
        sqlite_cluster.add_gateway()
        await _until(pilot, lambda: "connected to" in app.sub_title, timeout=30)
        await _until(pilot, lambda: _last(app).endswith("sent while you were away"), timeout=30)
        await _type(pilot, app, "back")
        await _until(pilot, lambda: _last(app).endswith("back ✓"))
    await alice.aclose()
    await bob.aclose()


async def test_a_streaming_message_grows_in_place(sqlite_cluster):
    bot = await sqlite_cluster.user("bot")
    bob = await sqlite_cluster.user("bob")
    assert bot.session and bob.session
    conversation = direct_conversation(bot.session.user.id, bob.session.user.id)
    await bot.send_text(bob.session.user.username, "hi")
    app = _app(bob, sqlite_cluster.url)
    try:
        async with app.run_test(size=(100, 16)) as pilot:
            await _until(pilot, lambda: app.current == conversation and "connected to" in app.sub_title)
            await _until(pilot, lambda: _last(app).endswith("hi"))
            opened = await bot.open_stream(conversation, "Once upon")
            await _until(pilot, lambda: _last(app).endswith("Once upon …"))
            await bot.append_stream(conversation, opened.seq, 9, " a time")
            await _until(pilot, lambda: _last(app).endswith("Once upon a time …"))
            await bot.finish_stream(conversation, opened.seq, offset=16, text=", the end.")
            await _until(pilot, lambda: _last(app).endswith("Once upon a time, the end."))
            assert len(_shown(app)) == 2  # grown in place, not added again

            # Shown as still open when the connection came back (its end came while away): read again.
            app.messages[opened.seq] = opened
            app.post_message(ConnectionChanged("reconnecting", "test"))
            app.post_message(ConnectionChanged("connected"))
            await _until(pilot, lambda: app.messages[opened.seq].stream == "finished")
    finally:
        await bot.aclose()


async def test_a_message_moves_its_conversation_to_the_top_again_and_again(sqlite_cluster):
    # A message in a conversation lower in the list moves its row to the top; the row used to be
    # removed and mounted again under the same id before the removal had happened (DuplicateIds,
    # and the client died with a traceback).
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    carol = await sqlite_cluster.user("carol")
    assert alice.session and bob.session and carol.session
    b = bob.session.user
    await alice.send_text(b.username, "from alice")
    await carol.send_text(b.username, "from carol")
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: len(app.rows) == 2 and "connected to" in app.sub_title)
        opened = app.current
        for number in range(3):
            for sender in (alice, carol):
                await sender.send_text(b.username, f"again {number}")
        # Looked up at each check: a reload of the list (after a reconnect, say) replaces the row objects.
        await _until(pilot, lambda: sum(row.unread for row in app.rows.values() if row.id != opened) >= 3)
        await pilot.pause(0.2)
        assert app.is_running
        rows = [item.row.id for item in app.query(ConversationItem)]
        assert sorted(rows) == sorted(app.rows) and len(rows) == len(set(rows))
    for client in (alice, bob, carol):
        await client.aclose()


async def test_hostile_text_neither_breaks_the_client_nor_reaches_the_terminal(sqlite_cluster):
    # A friend request's message is shown in a notification: "[/x]" in it used to be read as markup
    # and the client died (MarkupError). Escape sequences in a message or a group name are shown as
    # symbols instead of being written to the terminal (one retitled the window).
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    mallory = await sqlite_cluster.user("mallory")
    assert alice.session and bob.session and mallory.session
    b = bob.session.user
    await alice.send_text(b.username, "first")
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: app.current is not None and "connected to" in app.sub_title)
        await mallory.friends.request(b.username, "[/x] oops [link=file:///etc/passwd]x[/link] \x1b]0;pwned\x07")
        await _until(pilot, lambda: bool(app.requests))
        # Shown as it was written (notifications expire: looked at at once).
        await _until(pilot, lambda: any("[/x] oops" in note.message for note in app._notifications))
        assert not any("\x1b" in note.message for note in app._notifications)
        await alice.send_text(b.username, "a\x1b]0;pwned\x07b \x1b[2Jc")
        await _until(pilot, lambda: _last(app).endswith("c") and "b " in _last(app))
        group = await alice.groups.create("club\x1b[5m", [b.id])
        await _until(pilot, lambda: group.conversation in app.rows)
        await pilot.pause(0.2)
        assert app.is_running
        assert "a␛]0;pwned" in _last(app) and "b ␛[2Jc" in _last(app) and "\x1b" not in _last(app)
        labels = [str(item.row.label()) for item in app.query(ConversationItem)]
        assert any(label.startswith("club␛[5m") for label in labels) and not any("\x1b" in label for label in labels)
        requests = " ".join(str(label.content) for label in app.query_one("#requests").query("Label"))
        assert mallory.session.user.username in requests and "\x1b" not in requests
    for client in (alice, bob, mallory):
        await client.aclose()


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
    upstream_reader, upstream_writer = await asyncio.open_connection(host, port)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


async def test_started_while_the_server_is_away_the_list_loads_once_it_is_back(sqlite_cluster):
    # The API is reached through a port where nothing listens at first: the first listing fails
    # (once its retries are spent); when the server answers, the conversations appear. They used to
    # stay empty until the app was started again.
    from urllib.parse import urlsplit

    from im_sdk import Retry
    from im_server.cluster.natsbin import free_port

    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    assert alice.session and bob.session
    a, b = alice.session.user, bob.session.user
    await alice.send_text(b.username, "waiting for you")
    api = urlsplit(sqlite_cluster.url)
    assert api.hostname and api.port
    port = free_port()
    away = AsyncClient(
        f"http://127.0.0.1:{port}",
        access_token=bob.session.access_token,
        refresh_token=bob.session.refresh_token,
        retry=Retry(deadline=0.5),
    )
    app = ChatApp(away, me=b.id, username=b.username, server=away.server_url)
    server = None
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await _until(pilot, lambda: any("cannot list conversations" in n.message for n in app._notifications))
            assert not app.rows
            host, target = api.hostname, api.port
            server = await asyncio.start_server(lambda r, w: _forward(r, w, host, target), "127.0.0.1", port)
            await _until(pilot, lambda: direct_conversation(a.id, b.id) in app.rows, timeout=30)
            await _until(pilot, lambda: _last(app).endswith("waiting for you"))
    finally:
        if server is not None:
            server.close()
        await away.aclose()
        await alice.aclose()
        await bob.aclose()


async def test_lists_asked_for_again_and_again_or_cancelled_never_cut_off_a_mount(sqlite_cluster):
    """Each notice asks for the list again, and closing the app cancels its workers: neither cuts a mount or a
    removal of rows off halfway (that cancelled the rows' own tasks, and the app failed when it closed)."""
    alice = await sqlite_cluster.user("alice")
    bob = await sqlite_cluster.user("bob")
    assert alice.session and bob.session
    for name in ("one", "two", "three"):
        await alice.groups.create(name, [bob.session.user.id])
    app = _app(bob, sqlite_cluster.url)
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: len(app.rows) >= 3 and app.current is not None)
        for step in range(60):  # calls and cancels landing at every phase of a listing
            app.load_conversations()
            worker = app.load_requests()
            await pilot.pause(step % 12 * 0.003)
            if step % 3 == 0:
                for running in [w for w in app.workers if w.group in ("conversations", "requests")] + [worker]:
                    running.cancel()
        await _until(pilot, lambda: not any(w.group in ("conversations", "requests") for w in app.workers))
        app.load_conversations()
        await _until(pilot, lambda: not any(w.group == "conversations" for w in app.workers))
        listed = [item.row.id for item in app.query(ConversationItem)]
        assert sorted(listed) == sorted(set(listed)) == sorted(app.rows)
    for client in (alice, bob):
        await client.aclose()
