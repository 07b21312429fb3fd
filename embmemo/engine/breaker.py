"""A circuit breaker, so a dead backend costs microseconds per call instead of a timeout."""

from __future__ import annotations

import threading
import time


class Ticket:
    """What ``CircuitBreaker.allow`` hands a caller that may use the backend."""

    __slots__ = ("trial",)

    def __init__(self, trial: bool) -> None:
        self.trial = trial
        """This caller is the one probing a backend that failed: it must report back."""


_CLOSED = Ticket(trial=False)


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> one trial after ``cooldown``.

    While open, ``allow()`` returns None and callers skip the backend. After the cooldown
    a single caller gets a trial ticket; its success closes the breaker, its failure opens
    it for another cooldown. A trial that ends without an answer (its caller was
    cancelled) is abandoned, and one that gives no answer within a cooldown is given up:
    either way the next caller becomes the trial, so caching always resumes by itself.
    Thread-safe; shared by every decorated function of one cache.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._trial: Ticket | None = None
        self._trial_deadline = 0.0

    def allow(self) -> Ticket | None:
        """A ticket to use the backend now, or None while the breaker is open."""
        if self._failures < self.threshold:
            return _CLOSED
        with self._lock:
            if self._failures < self.threshold:
                return _CLOSED
            now = time.monotonic()
            if now < self._open_until or (self._trial is not None
                                          and now < self._trial_deadline):
                return None
            self._trial = Ticket(trial=True)
            self._trial_deadline = now + self.cooldown
            return self._trial

    def record_success(self) -> None:
        """The backend answered: close the breaker."""
        if self._failures or self._trial is not None:
            with self._lock:
                self._failures = 0
                self._trial = None

    def record_failure(self) -> None:
        """The backend failed: count it, and open the breaker at the threshold."""
        with self._lock:
            self._failures += 1
            self._trial = None
            if self._failures >= self.threshold:
                self._open_until = time.monotonic() + self.cooldown

    def abandon(self, ticket: Ticket) -> None:
        """A trial ended without an answer: let the next caller try at once."""
        if ticket.trial:
            with self._lock:
                if self._trial is ticket:
                    self._trial = None

    @property
    def is_open(self) -> bool:
        """True while callers are being turned away."""
        return self._failures >= self.threshold and (
            time.monotonic() < self._open_until or self._trial is not None)

    @property
    def retry_in(self) -> float:
        """Seconds until the next trial may start (0 when one may start now)."""
        deadline = self._trial_deadline if self._trial is not None else self._open_until
        return max(0.0, deadline - time.monotonic())
