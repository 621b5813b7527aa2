"""The typed events nodes publish to each other: round trips, the old wire shape, and hostile payloads."""

from __future__ import annotations

import orjson
import pytest

from im_server.bus.codec import (
    MembersChanged,
    PresenceChanged,
    SocialChanged,
    TypingChanged,
    TypingState,
    decode_ephemeral,
    decode_event,
    encode_event,
)


def test_round_trips_keep_the_wire_shape() -> None:
    social = SocialChanged(node="api-1", users=[1, 2])
    assert orjson.loads(encode_event(social)) == {"node": "api-1", "users": [1, 2]}
    assert decode_event(SocialChanged, encode_event(social)) == social
    members = MembersChanged(node="api-1", conversation="g:7")
    assert orjson.loads(encode_event(members)) == {"node": "api-1", "conversation": "g:7"}
    assert decode_event(MembersChanged, encode_event(members)) == members
    typing = TypingChanged(t="tok", typing=TypingState(conversation="d:1:2", active=False))
    assert orjson.loads(encode_event(typing)) == {"t": "tok", "typing": {"conversation": "d:1:2", "active": False}}
    assert decode_ephemeral(encode_event(typing)) == typing
    online = PresenceChanged(t="tok", online=True)
    assert orjson.loads(encode_event(online)) == {"t": "tok", "online": True}
    assert decode_ephemeral(encode_event(online)) == online


def test_what_earlier_nodes_published_still_reads() -> None:
    # Before the models, the gateway dumped the typing frame without its type, by hand.
    assert decode_ephemeral(b'{"typing": {"conversation": "g:3", "active": true}, "t": "x"}') == TypingChanged(
        t="x", typing=TypingState(conversation="g:3")
    )
    assert decode_event(SocialChanged, b'{"node": "n", "users": [3], "later": 1}').users == [3]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b"{}",
        b'{"t": "x"}',
        b'{"t": 1, "online": true}',
        b'{"t": "x", "online": "yes"}',
        b'{"t": "x", "typing": {"conversation": "not a conversation"}}',
        b'{"t": "x", "typing": {"conversation": "g:1", "active": "no"}}',
        b'{"t": "x", "typing": "g:1"}',
        b"{" * 10_000,
    ],
)
def test_hostile_ephemeral_events_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError, or a JSON error: any ValueError
        decode_ephemeral(data)


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (SocialChanged, b'{"node": "n"}'),
        (SocialChanged, b'{"node": "n", "users": ["x"]}'),
        (SocialChanged, b'{"node": "n", "users": 5}'),
        (MembersChanged, b'{"node": "n", "conversation": null}'),
        (MembersChanged, b"null"),
    ],
)
def test_hostile_cache_events_are_refused(model: type, data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - as above
        decode_event(model, data)
