"""im_schema.ids: conversation ids, their helpers, and the string id patterns."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from im_schema.ids import (
    ClientMsgId,
    ConversationId,
    DeviceId,
    GroupId,
    Seq,
    UserId,
    Username,
    conversation_kind,
    direct_conversation,
    direct_peer,
    direct_users,
    group_conversation,
    group_of,
    is_conversation_id,
)

conversation_ids = TypeAdapter(ConversationId)
usernames = TypeAdapter(Username)
device_ids = TypeAdapter(DeviceId)
client_msg_ids = TypeAdapter(ClientMsgId)

MAX_ID = 2**63 - 1


# Conversation ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "d:1:2",
        "d:1:10",
        "d:9:10",  # numeric order, not string order
        "d:123:456789",
        "d:1:1234567890123456789",  # 19 digits
        "g:1",
        "g:7",
        "g:1234567890123456789",
    ],
)
def test_valid_conversation_ids(value):
    assert is_conversation_id(value)
    assert conversation_ids.validate_python(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "d:2:1",  # the smaller id goes first
        "d:10:9",
        "d:5:5",  # two different users
        "d:0:1",
        "d:01:2",  # no leading zeros
        "d:1:02",
        "d:-1:2",
        "d:1",
        "d:1:",
        "d::2",
        "d:1:2:3",
        "d:a:b",
        "d:1.0:2",
        "g:0",
        "g:07",
        "g:",
        "g:-1",
        "g:1:2",
        "g:x",
        "G:1",
        "D:1:2",
        "x:1",
        "1:2",
        " g:1",
        "g:1 ",
        "g: 1",
        "g:\u0661",  # Arabic-Indic digit one
        "d:1:12345678901234567890",  # 20 digits
        "g:12345678901234567890",
    ],
)
def test_malformed_conversation_ids_are_rejected(value):
    assert not is_conversation_id(value)
    with pytest.raises(ValidationError):
        conversation_ids.validate_python(value)


def test_conversation_id_must_be_a_string():
    with pytest.raises(ValidationError):
        conversation_ids.validate_python(7)


def test_conversation_id_max_length_is_48():
    too_long = "g:" + "1" * 47
    assert len(too_long) == 49
    with pytest.raises(ValidationError) as info:
        conversation_ids.validate_python(too_long)
    assert info.value.errors()[0]["type"] == "string_too_long"


@pytest.mark.parametrize("value", ["d:1:2\n", "g:7\n"])
def test_trailing_newline_is_rejected(value):
    assert not is_conversation_id(value)
    with pytest.raises(ValidationError):
        conversation_ids.validate_python(value)


@pytest.mark.parametrize("value", [f"d:1:{MAX_ID + 1}", f"g:{MAX_ID + 1}"])
def test_ids_beyond_the_user_id_range_are_rejected(value):
    assert not is_conversation_id(value)


# Helpers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 1), (9, 10), (10, 9), (1, MAX_ID)])
def test_direct_conversation_puts_the_smaller_id_first(a, b):
    conversation = direct_conversation(a, b)
    assert conversation == f"d:{min(a, b)}:{max(a, b)}"
    assert is_conversation_id(conversation)
    assert direct_conversation(b, a) == conversation


def test_direct_conversation_needs_two_users():
    with pytest.raises(ValueError, match="two different users"):
        direct_conversation(3, 3)


def test_direct_users_and_peer():
    assert direct_users("d:3:17") == (3, 17)
    assert direct_peer("d:3:17", 3) == 17
    assert direct_peer("d:3:17", 17) == 3


def test_group_helpers_roundtrip():
    assert group_conversation(42) == "g:42"
    assert group_of("g:42") == 42
    assert group_of(group_conversation(MAX_ID)) == MAX_ID


@pytest.mark.parametrize(("conversation", "kind"), [("d:1:2", "direct"), ("g:1", "group")])
def test_conversation_kind(conversation, kind):
    assert conversation_kind(conversation) == kind


@pytest.mark.parametrize("id_type", [UserId, GroupId])
def test_numeric_ids_are_positive_and_fit_in_64_bits(id_type):
    adapter = TypeAdapter(id_type)
    assert adapter.validate_python(1) == 1
    assert adapter.validate_python(MAX_ID) == MAX_ID
    for bad in (0, -1, MAX_ID + 1):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_seq_starts_at_zero():
    adapter = TypeAdapter(Seq)
    assert adapter.validate_python(0) == 0
    with pytest.raises(ValidationError):
        adapter.validate_python(-1)


# Usernames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("BOB_99", "bob_99"),
        ("a.b-c", "a.b-c"),
        ("0day", "0day"),
        ("abc", "abc"),  # 3 characters, the minimum
        ("a" * 32, "a" * 32),  # the maximum
    ],
)
def test_usernames_are_lower_cased(given, stored):
    assert usernames.validate_python(given) == stored


@pytest.mark.parametrize(
    "value",
    [
        "ab",  # too short
        "a" * 33,  # too long
        "_alice",  # must start with a letter or digit
        ".alice",
        "-alice",
        "al ice",
        "alice!",
        "al@ice",
        "élodie",
        "alice\n",
        "",
    ],
)
def test_bad_usernames_are_rejected(value):
    with pytest.raises(ValidationError):
        usernames.validate_python(value)


def test_username_must_be_a_string():
    with pytest.raises(ValidationError):
        usernames.validate_python(12345)


# Devices and client message ids -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["laptop", "bot-1", "Phone_2", "x", "A" * 64])
def test_valid_device_ids(value):
    assert device_ids.validate_python(value) == value


@pytest.mark.parametrize("value", ["", "-laptop", "_laptop", "lap top", "lap.top", "a" * 65, "laptop\n", "läptop"])
def test_bad_device_ids_are_rejected(value):
    with pytest.raises(ValidationError):
        device_ids.validate_python(value)


@pytest.mark.parametrize("value", ["abcdefgh", "0123456789abcdef0123456789abcdef", "a-b_c-d_", "Z" * 64, "--------"])
def test_valid_client_msg_ids(value):
    assert client_msg_ids.validate_python(value) == value


@pytest.mark.parametrize("value", ["", "abcdefg", "a" * 65, "abcd efgh", "abcd.efgh", "abcdefgh\n", "abcdéfgh"])
def test_bad_client_msg_ids_are_rejected(value):
    with pytest.raises(ValidationError):
        client_msg_ids.validate_python(value)
