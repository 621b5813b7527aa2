"""Client and AsyncClient are twins: the same public methods with the same parameters."""

from __future__ import annotations

import inspect

import pytest

from im_sdk import AsyncClient, AsyncMessageStream, Client, MessageStream

# Names that legitimately differ between the twins: sync name -> async name.
RENAMED = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}
FACTORIES = {"stream"}
"""Plain methods on both twins that return the twin's own context manager (checked below)."""


def public_members(cls):
    return {
        name
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") or name in RENAMED or name in RENAMED.values()
    } - set(dir(object))


def test_same_public_members():
    sync_names = {RENAMED.get(name, name) for name in public_members(Client)}
    assert sync_names == public_members(AsyncClient)


def _method_pairs():
    for name in sorted(public_members(Client)):
        yield pytest.param(name, RENAMED.get(name, name), id=name)


def _parameters(function):
    return [
        (parameter.name, parameter.kind, parameter.default)
        for parameter in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize(("sync_name", "async_name"), list(_method_pairs()))
def test_same_parameters(sync_name, async_name):
    sync_member = inspect.getattr_static(Client, sync_name)
    async_member = inspect.getattr_static(AsyncClient, async_name)
    if isinstance(sync_member, property):
        assert isinstance(async_member, property)
        return
    assert _parameters(sync_member) == _parameters(async_member)


@pytest.mark.parametrize(("sync_name", "async_name"), list(_method_pairs()))
def test_async_twin_is_a_coroutine_or_async_iterator(sync_name, async_name):
    sync_member = inspect.getattr_static(Client, sync_name)
    async_member = inspect.getattr_static(AsyncClient, async_name)
    if isinstance(sync_member, property):
        return
    if sync_name in FACTORIES:
        assert not inspect.iscoroutinefunction(async_member)
        return
    assert not inspect.iscoroutinefunction(sync_member)
    if inspect.isgeneratorfunction(sync_member):
        assert inspect.isasyncgenfunction(async_member)
    else:
        assert inspect.iscoroutinefunction(async_member)


def test_same_constructor_parameters():
    assert _parameters(Client.__init__) == _parameters(AsyncClient.__init__)


def test_docstrings_everywhere():
    for cls in (Client, AsyncClient):
        for name in public_members(cls):
            if name.startswith("__"):
                continue
            assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name} has no docstring"


def test_the_parity_check_covers_the_api():
    names = public_members(Client)
    assert {"login", "send_text", "history", "events", "close", "__enter__", "session"} <= names


# The blocking namespaces are generated (tools/unasync.py) into im_sdk._sync_<module>.
NAMESPACES = [
    ("friends", "_people", "Friends", "AsyncFriends"),
    ("groups", "_people", "Groups", "AsyncGroups"),
    ("devices", "_devices", "Devices", "AsyncDevices"),
]


@pytest.mark.parametrize(("attribute", "module", "sync_name", "async_name"), NAMESPACES)
def test_namespaces_are_twins_too(attribute, module, sync_name, async_name):
    import importlib

    async_module = importlib.import_module(f"im_sdk.{module}")
    sync_module = importlib.import_module(f"im_sdk._sync{module}")
    sync_cls, async_cls = getattr(sync_module, sync_name), getattr(async_module, async_name)
    assert public_members(sync_cls) == public_members(async_cls)
    for name in public_members(sync_cls):
        sync_member = inspect.getattr_static(sync_cls, name)
        async_member = inspect.getattr_static(async_cls, name)
        assert _parameters(sync_member) == _parameters(async_member), name
        assert inspect.iscoroutinefunction(async_member), name
        assert not inspect.iscoroutinefunction(sync_member), name
    client = Client("http://example.invalid")
    try:
        assert isinstance(getattr(client, attribute), sync_cls)
    finally:
        client.close()


def test_message_streams_are_twins():
    members = {name for name in dir(MessageStream) if not name.startswith("_")}
    assert members == {name for name in dir(AsyncMessageStream) if not name.startswith("_")}
    for name in members:
        sync_member = inspect.getattr_static(MessageStream, name)
        async_member = inspect.getattr_static(AsyncMessageStream, name)
        if callable(sync_member):
            assert _parameters(sync_member) == _parameters(async_member)
            assert inspect.iscoroutinefunction(async_member) and not inspect.iscoroutinefunction(sync_member)
    assert hasattr(AsyncMessageStream, "__aenter__") and hasattr(MessageStream, "__enter__")
