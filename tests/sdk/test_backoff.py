"""im_sdk.realtime.backoff.Backoff and im_sdk.realtime.policy (what a close means, where to reconnect)."""

from __future__ import annotations

import itertools

import pytest

from im_schema import limits
from im_schema.frames import ErrorFrame, ReadyFrame
from im_schema.rest import GatewayAddress, GatewayAssignment
from im_sdk.errors import (
    APIError,
    AuthenticationError,
    ConnectionReplaced,
    ProtocolError,
    TokenExpiredError,
    TransportError,
)
from im_sdk.realtime import policy
from im_sdk.realtime.backoff import Backoff
from im_sdk.realtime.policy import (
    GOING_AWAY_SPREAD,
    Gateways,
    GoingAway,
    RefreshToken,
    ResyncSchedule,
    TooSlow,
    auth_answer,
    classify_close,
    reconnect_delay,
)


def take(iterator, n):
    return list(itertools.islice(iterator, n))


# Backoff ------------------------------------------------------------------------------------------


def test_without_jitter_delays_grow_by_factor_up_to_the_cap():
    backoff = Backoff(initial=1.0, factor=2.0, max_delay=10.0, jitter=False)
    assert take(backoff.delays(), 7) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_default_growth_is_the_golden_ratio():
    delays = take(Backoff(jitter=False).delays(), 4)
    assert delays[0] == 1.0
    for previous, current in itertools.pairwise(delays):
        assert current == pytest.approx(previous * 1.618)


def test_default_delays_reach_and_keep_the_cap():
    delays = take(Backoff(jitter=False).delays(), 30)
    assert max(delays) == 30.0
    assert delays[-5:] == [30.0] * 5
    assert delays == sorted(delays)


def test_jittered_delays_stay_within_the_growing_bound():
    backoff = Backoff(initial=0.5, factor=3.0, max_delay=20.0)
    bounds = take(Backoff(initial=0.5, factor=3.0, max_delay=20.0, jitter=False).delays(), 8)
    for _ in range(200):
        for delay, bound in zip(backoff.delays(), bounds, strict=False):
            assert 0.0 <= delay <= bound


def test_jitter_spreads_the_first_delay():
    backoff = Backoff(initial=5.0)
    firsts = [next(backoff.delays()) for _ in range(100)]
    assert all(0.0 <= delay <= 5.0 for delay in firsts)
    assert len(set(firsts)) > 50  # random, not one wave
    assert min(firsts) < 2.5 < max(firsts)


def test_each_outage_starts_over():
    backoff = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=False)
    first = backoff.delays()
    take(first, 5)
    assert next(first) == 8.0
    assert next(backoff.delays()) == 1.0  # a fresh iterator is the reset


def test_zero_backoff_reconnects_at_once():
    assert take(Backoff(initial=0, max_delay=0).delays(), 5) == [0.0] * 5


def test_zero_initial_delay_then_backs_off_to_the_cap():
    assert take(Backoff(initial=0, max_delay=3.0, jitter=False).delays(), 3) == [0, 3.0, 3.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"max_delay": -0.1}, {"factor": 0.5}],
)
def test_invalid_backoff_is_refused(kwargs):
    with pytest.raises(ValueError, match=">= 0"):
        Backoff(**kwargs)


def test_no_delay_exceeds_the_cap():
    delays = take(Backoff(initial=60.0, max_delay=30.0, jitter=False).delays(), 3)
    assert max(delays) <= 30.0


# Close codes --------------------------------------------------------------------------------------

CLOSE_CASES = {
    limits.CLOSE_AUTH_FAILED: AuthenticationError,
    limits.CLOSE_AUTH_TIMEOUT: TransportError,
    limits.CLOSE_PROTOCOL_UNSUPPORTED: ProtocolError,
    limits.CLOSE_GOING_AWAY: GoingAway,
    limits.CLOSE_REPLACED: ConnectionReplaced,
    limits.CLOSE_SESSION_REVOKED: AuthenticationError,
    limits.CLOSE_TOO_SLOW: TooSlow,
    limits.CLOSE_FLOODING: TransportError,
}

RETRYABLE = {limits.CLOSE_AUTH_TIMEOUT, limits.CLOSE_GOING_AWAY, limits.CLOSE_TOO_SLOW, limits.CLOSE_FLOODING}


def test_every_close_code_of_the_schema_is_covered():
    codes = {getattr(limits, name) for name in limits.__all__ if name.startswith("CLOSE_")}
    assert codes == set(CLOSE_CASES)


@pytest.mark.parametrize(("code", "expected"), sorted(CLOSE_CASES.items()))
def test_classify_close(code, expected):
    exc = classify_close(code, "why")
    assert type(exc) is expected
    # Retryable closes are transport errors; the rest are final.
    assert isinstance(exc, TransportError) == (code in RETRYABLE)


def test_auth_failures_carry_the_unauthorized_code():
    for code in (limits.CLOSE_AUTH_FAILED, limits.CLOSE_SESSION_REVOKED):
        exc = classify_close(code, None)
        assert isinstance(exc, APIError)
        assert (exc.code, exc.status) == ("unauthorized", 401)


def test_expired_token_error_frame_before_the_close():
    exc = classify_close(limits.CLOSE_AUTH_FAILED, "expired", "token_expired")
    assert type(exc) is TokenExpiredError
    assert exc.status == 401


def test_unsupported_protocol_error_frame_wins_over_the_close_code():
    assert type(classify_close(1000, "old client", "unsupported_protocol")) is ProtocolError


def test_unauthorized_error_frame_without_a_close_code():
    exc = classify_close(None, "bad token", "unauthorized")
    assert type(exc) is AuthenticationError


@pytest.mark.parametrize("code", [None, 1000, 1006, 1011, 4999])
def test_other_closes_are_retryable_transport_errors(code):
    exc = classify_close(code, None)
    assert type(exc) is TransportError
    assert str(code) in str(exc)


def test_going_away_covers_the_standard_1001():
    assert type(classify_close(1001, "bye")) is GoingAway


def test_the_reason_is_kept():
    assert str(classify_close(limits.CLOSE_REPLACED, "another laptop")) == "another laptop"


# Reconnect delay ----------------------------------------------------------------------------------


def test_going_away_reconnects_soon_without_spending_a_backoff_step():
    delays = Backoff(initial=100.0, max_delay=100.0, jitter=False).delays()
    for _ in range(50):
        assert 0.0 <= reconnect_delay(GoingAway("drain"), delays) <= GOING_AWAY_SPREAD
    assert next(delays) == 100.0


def test_other_errors_take_the_next_backoff_step():
    delays = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=False).delays()
    steps = [reconnect_delay(TransportError("x"), delays) for _ in range(5)]
    assert steps == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_too_slow_reconnects_at_once_without_spending_a_backoff_step():
    delays = Backoff(initial=100.0, max_delay=100.0, jitter=False).delays()
    assert reconnect_delay(classify_close(limits.CLOSE_TOO_SLOW, "outbound budget"), delays) == 0.0
    assert next(delays) == 100.0


# The handshake and resync -------------------------------------------------------------------------


def test_ready_after_auth_is_the_answer():
    ready = ReadyFrame(protocol=1, node_id="g1", user_id=1, device_id="laptop")
    assert auth_answer(ready, None, None) is ready


def test_an_expired_token_at_auth_means_refresh_then_reconnect():
    frame = ErrorFrame(code="token_expired", message="expired")
    assert isinstance(auth_answer(frame, limits.CLOSE_AUTH_FAILED, None), RefreshToken)


def test_other_errors_at_auth_are_raised():
    answer = auth_answer(ErrorFrame(code="unauthorized", message="bad token"), limits.CLOSE_AUTH_FAILED, None)
    assert type(answer) is AuthenticationError
    revoked = auth_answer(None, limits.CLOSE_SESSION_REVOKED, "logged out")
    assert type(revoked) is AuthenticationError
    assert type(auth_answer(None, 1006, None)) is TransportError  # dropped: reconnect
    assert type(auth_answer(None, limits.CLOSE_TOO_SLOW, None)) is TooSlow


@pytest.fixture
def clock(monkeypatch):
    now = [500.0]
    monkeypatch.setattr(policy, "monotonic", lambda: now[0])
    return now


def test_nothing_is_due_on_a_busy_connection_without_a_quiet_limit(clock):
    schedule = ResyncSchedule(None)
    clock[0] += 10_000
    assert not schedule.due()
    assert schedule.wait() is None


def test_a_quiet_connection_is_due_after_the_quiet_period(clock):
    schedule = ResyncSchedule(120)
    clock[0] += 100
    schedule.heard()  # a frame: the period starts again
    clock[0] += 119
    assert not schedule.due()
    assert schedule.wait() == pytest.approx(1)
    clock[0] += 1
    assert schedule.due()
    schedule.done()
    assert not schedule.due()
    assert schedule.wait() == pytest.approx(120)


def test_a_resync_frame_is_due_at_once_after_the_spacing(clock):
    schedule = ResyncSchedule(120, spacing=1.0)
    clock[0] += 5
    schedule.asked()
    assert schedule.due()
    schedule.done()
    schedule.asked()  # asked again right after a pass: waits for the spacing
    assert not schedule.due()
    assert schedule.wait() == pytest.approx(1.0)
    clock[0] += 1
    assert schedule.due()


def test_a_flood_of_resync_frames_costs_one_pass_per_interval(clock):
    schedule = ResyncSchedule(None, spacing=1.0)
    passes = 0
    for _ in range(80):  # a frame every 1/8 s for 10 s
        clock[0] += 0.125
        schedule.heard()
        schedule.asked()
        if schedule.due():
            passes += 1
            schedule.done()
    assert passes == 10


# Where to reconnect ------------------------------------------------------------------------------------


def _address(node: str) -> GatewayAddress:
    return GatewayAddress(node_id=node, url=f"ws://{node}.example:8000/ws")


def _assignment(node: str, *alternates: str) -> GatewayAssignment:
    return GatewayAssignment(
        node_id=node, url=f"ws://{node}.example:8000/ws", alternates=[_address(a) for a in alternates]
    )


def test_the_first_connection_asks_the_api():
    assert Gateways().next() is None


def test_a_lost_working_connection_goes_to_the_alternates_in_order_without_asking():
    gateways = Gateways()
    address: GatewayAddress | None = gateways.assigned(_assignment("gw-1", "gw-2", "gw-3"))
    tried = []
    while address is not None:
        tried.append(address.node_id)
        gateways.connecting(address)
        gateways.up()  # ready, then lost
        address = gateways.next()
    assert tried == ["gw-1", "gw-2", "gw-3"]
    # All tried: the API is asked again, naming the last one lost.
    assert gateways.lost == "gw-3"


def test_an_attempt_that_fails_before_ready_makes_the_next_one_ask_the_api():
    # The list may be stale (several gateways went away): after one failed attempt, the API decides.
    gateways = Gateways()
    gateways.connecting(gateways.assigned(_assignment("gw-1", "gw-2", "gw-3")))
    gateways.up()
    second = gateways.next()
    assert second is not None and second.node_id == "gw-2"
    gateways.connecting(second)  # never ready
    assert gateways.next() is None
    assert gateways.lost == "gw-2"
    # The API's new answer replaces the old list.
    again = gateways.assigned(_assignment("gw-3", "gw-4"))
    gateways.connecting(again)
    gateways.up()
    after = gateways.next()
    assert after is not None and after.node_id == "gw-4"


def test_the_gateway_just_lost_is_skipped_if_the_api_lists_it():
    gateways = Gateways()
    gateways.connecting(gateways.assigned(_assignment("gw-1", "gw-1", "gw-2")))
    gateways.up()
    address = gateways.next()
    assert address is not None and address.node_id == "gw-2"


def test_an_assignment_without_alternates_always_asks_the_api():
    # From a server that predates them.
    gateways = Gateways()
    assignment = GatewayAssignment.model_validate({"node_id": "gw-1", "url": "ws://gw-1.example/ws"})
    gateways.connecting(gateways.assigned(assignment))
    gateways.up()
    assert gateways.next() is None and gateways.lost == "gw-1"


def test_an_assignment_names_a_bounded_number_of_alternates():
    too_many = [{"node_id": f"gw-{n}", "url": "ws://x/ws"} for n in range(limits.MAX_GATEWAY_ALTERNATES + 1)]
    with pytest.raises(ValueError, match="at most 16"):
        GatewayAssignment.model_validate({"node_id": "gw-a", "url": "ws://x/ws", "alternates": too_many})
