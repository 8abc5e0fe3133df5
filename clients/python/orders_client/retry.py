"""Retry policy: which failures are retried, how long to wait, and when to give up.

- idempotent calls (CreateOrder, which always carries a request_id, BatchCreateOrders,
  GetOrder, ListOrders, GetStock, Reconcile, and every item of the bulk stream) are retried
  on UNAVAILABLE, DEADLINE_EXCEEDED, and RESOURCE_EXHAUSTED with RetryInfo;
- the others (Cancel/Confirm/ShipOrder, SetStock, AdjustStock, UpsertLocation,
  ConfigureRegion) only when the server proved it did nothing: UNAVAILABLE with reason
  NOT_SERVING, RESOURCE_EXHAUSTED with RetryInfo or reason QUEUE_FULL.

A transition that failed with a plain UNAVAILABLE (for example STORE_UNAVAILABLE, or a
dropped connection) may still have been applied, and a blind retry of a Confirm that did
succeed would answer FAILED_PRECONDITION / ILLEGAL_TRANSITION: those are left to the caller.

The wait before retry n (n = 1, 2, ...) is "full jitter": uniform(0, min(max_backoff,
initial_backoff * multiplier ** (n - 1))), and never less than the server's RetryInfo
delay. Attempts are bounded by `max_attempts`, and no retry starts if its wait would
reach past the call's overall deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from orders_client.errors import OrdersError

__all__ = ["NO_RETRY", "RetryPolicy", "RetryState", "is_retryable"]

#: ErrorInfo reasons that prove the server rejected a request before doing anything.
NOT_ACCEPTED_REASONS = frozenset({"NOT_SERVING", "QUEUE_FULL"})
# Retries past this exponent are all capped anyway; keeps multiplier ** n finite.
_MAX_EXPONENT = 64


def is_retryable(error: OrdersError, *, idempotent: bool) -> bool:
    """Whether `error` may be retried, for an idempotent call or not (see the module doc)."""
    code = error.code
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return error.retry_after is not None or error.reason in NOT_ACCEPTED_REASONS
    if code == grpc.StatusCode.UNAVAILABLE:
        return idempotent or error.reason in NOT_ACCEPTED_REASONS
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return idempotent
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with capped exponential backoff and full jitter.

    `attempt_timeout` limits each attempt (the call's timeout still bounds them all):
    with the default None an attempt may use the whole remaining deadline, so a client-side
    DEADLINE_EXCEEDED ends the call; set it below the call timeout to retry slow attempts.
    `rng` is injectable for tests.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    attempt_timeout: float | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if self.attempt_timeout is not None and self.attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be positive")

    def backoff_cap(self, retry: int) -> float:
        """Upper bound of the wait before retry number `retry` (1-based)."""
        exponent = min(max(retry - 1, 0), _MAX_EXPONENT)
        return min(self.max_backoff, self.initial_backoff * self.multiplier**exponent)

    def backoff(self, retry: int) -> float:
        """A full-jitter wait before retry number `retry` (1-based)."""
        return self.rng.uniform(0.0, self.backoff_cap(retry))

    def delay(self, error: OrdersError, retry: int) -> float:
        """The wait before retry `retry` after `error`: jittered, never below RetryInfo."""
        wait = self.backoff(retry)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)


class RetryState:
    """The retry bookkeeping of one logical call (shared by the sync and asyncio clients)."""

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        *,
        idempotent: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self._clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.attempts = 0

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self._clock()

    def attempt_timeout(self) -> float | None:
        """The timeout to give the next attempt (counts it as started)."""
        self.attempts += 1
        remaining = self.remaining()
        limit = self.policy.attempt_timeout
        if remaining is None:
            return limit
        remaining = max(remaining, 0.0)
        return remaining if limit is None else min(remaining, limit)

    def next_delay(self, error: OrdersError) -> float | None:
        """How long to wait before retrying after `error`, or None to give up."""
        if self.attempts >= self.policy.max_attempts:
            return None
        if not is_retryable(error, idempotent=self.idempotent):
            return None
        wait = self.policy.delay(error, self.attempts)
        remaining = self.remaining()
        if remaining is not None and wait >= remaining:
            return None
        return wait
