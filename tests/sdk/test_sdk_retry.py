"""The retry policy: which errors are retried, and the backoff schedule (hypothesis)."""

from __future__ import annotations

import random

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from orders_client import OrdersError, RetryPolicy
from orders_client.errors import error_class
from orders_client.retry import RetryState, is_retryable


def error(code: grpc.StatusCode, reason: str = "", retry_after: float | None = None) -> OrdersError:
    return error_class(code)("x", code=code, reason=reason, retry_after=retry_after)


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


S = grpc.StatusCode


@pytest.mark.parametrize(
    ("err", "idempotent", "expected"),
    [
        (error(S.UNAVAILABLE), True, True),
        (error(S.UNAVAILABLE, "STORE_UNAVAILABLE"), True, True),
        (error(S.UNAVAILABLE), False, False),
        (error(S.UNAVAILABLE, "STORE_UNAVAILABLE"), False, False),
        (error(S.UNAVAILABLE, "NOT_SERVING"), False, True),
        (error(S.DEADLINE_EXCEEDED), True, True),
        (error(S.DEADLINE_EXCEEDED), False, False),
        (error(S.RESOURCE_EXHAUSTED, retry_after=0.05), False, True),
        (error(S.RESOURCE_EXHAUSTED, "QUEUE_FULL"), False, True),
        (error(S.RESOURCE_EXHAUSTED), True, False),
        (error(S.INVALID_ARGUMENT), True, False),
        (error(S.FAILED_PRECONDITION, "ILLEGAL_TRANSITION"), False, False),
        (error(S.ALREADY_EXISTS), True, False),
        (error(S.INTERNAL), True, False),
        (error(S.UNAUTHENTICATED), True, False),
    ],
)
def test_retry_classification(err: OrdersError, idempotent: bool, expected: bool) -> None:
    assert is_retryable(err, idempotent=idempotent) is expected


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    initial_backoff=st.floats(0, 5, allow_nan=False),
    max_backoff=st.floats(0, 60, allow_nan=False),
    multiplier=st.floats(1, 10, allow_nan=False),
    rng=st.floats(0, 0.999999).map(FixedRandom),
)


@given(policies, st.integers(1, 10_000))
def test_backoff_is_within_zero_and_the_capped_exponential(policy: RetryPolicy, retry: int) -> None:
    cap = policy.backoff_cap(retry)
    assert 0 <= cap <= policy.max_backoff
    if retry <= 64:
        assert cap <= policy.initial_backoff * policy.multiplier ** (retry - 1)
    assert 0 <= policy.backoff(retry) <= cap


@given(policies, st.integers(1, 200))
def test_backoff_cap_never_shrinks(policy: RetryPolicy, retry: int) -> None:
    assert policy.backoff_cap(retry) <= policy.backoff_cap(retry + 1)


@given(policies, st.integers(1, 50), st.floats(0, 30, allow_nan=False))
def test_delay_never_undercuts_retry_info(
    policy: RetryPolicy, retry: int, retry_after: float
) -> None:
    err = error(S.RESOURCE_EXHAUSTED, retry_after=retry_after)
    assert policy.delay(err, retry) >= retry_after


def test_full_jitter_spans_the_whole_range() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, rng=FixedRandom(0.0))
    assert policy.backoff(1) == 0.0
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, rng=FixedRandom(0.999999))
    assert policy.backoff(1) == pytest.approx(0.1, rel=1e-4)
    assert policy.backoff(3) == pytest.approx(0.4, rel=1e-4)
    assert policy.backoff(10) == pytest.approx(1.0, rel=1e-4)  # capped
    seeded = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, rng=random.Random(7))
    samples = [seeded.backoff(2) for _ in range(2000)]
    assert min(samples) < 0.02 and max(samples) > 0.18 and all(0 <= s <= 0.2 for s in samples)


@given(
    st.integers(1, 10),
    st.lists(st.sampled_from([S.UNAVAILABLE, S.DEADLINE_EXCEEDED]), min_size=1, max_size=30),
)
def test_attempts_are_bounded(max_attempts: int, codes: list[grpc.StatusCode]) -> None:
    now = [0.0]
    state = RetryState(
        RetryPolicy(max_attempts=max_attempts, rng=FixedRandom(0.5)),
        timeout=None,
        idempotent=True,
        clock=lambda: now[0],
    )
    attempts = 0
    for code in codes:
        state.attempt_timeout()
        attempts += 1
        wait = state.next_delay(error(code))
        if wait is None:
            break
        now[0] += wait
    assert attempts <= max_attempts
    assert attempts == min(max_attempts, len(codes))


@given(st.floats(0.01, 10), st.floats(0, 5), st.integers(1, 8))
def test_no_retry_waits_past_the_deadline(
    timeout: float, retry_after: float, attempts: int
) -> None:
    now = [0.0]
    state = RetryState(RetryPolicy(max_attempts=50), timeout, idempotent=True, clock=lambda: now[0])
    for _ in range(attempts):
        budget = state.attempt_timeout()
        assert budget is not None and budget <= timeout
        wait = state.next_delay(error(S.UNAVAILABLE, retry_after=retry_after))
        if wait is None:
            break
        now[0] += wait
        assert now[0] < timeout


def test_attempt_timeout_is_the_smaller_of_remaining_and_per_attempt() -> None:
    now = [0.0]
    policy = RetryPolicy(attempt_timeout=2.0)
    state = RetryState(policy, 5.0, idempotent=True, clock=lambda: now[0])
    assert state.attempt_timeout() == 2.0
    now[0] = 4.0
    assert state.attempt_timeout() == pytest.approx(1.0)
    assert RetryState(RetryPolicy(), None, idempotent=True).attempt_timeout() is None


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"multiplier": 0.5}, {"initial_backoff": -1}, {"attempt_timeout": 0}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
