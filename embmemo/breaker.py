"""A circuit breaker, so a dead backend costs microseconds per call instead of a timeout."""

from __future__ import annotations

import threading
import time


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> one trial after ``cooldown``.

    While open, ``allow()`` is False and callers skip the backend. After the cooldown a
    single caller is let through as a trial; its success closes the breaker, its failure
    opens it for another cooldown. Thread-safe; shared by everything using one cache.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._trial_running = False

    def allow(self) -> bool:
        """Whether a caller may use the backend now."""
        if self._failures < self.threshold:
            return True
        with self._lock:
            if self._failures < self.threshold:
                return True
            if time.monotonic() < self._open_until or self._trial_running:
                return False
            self._trial_running = True
            return True

    def record_success(self) -> None:
        """The backend answered: close the breaker."""
        if self._failures or self._trial_running:
            with self._lock:
                self._failures = 0
                self._trial_running = False

    def record_failure(self) -> None:
        """The backend failed: count it, and open the breaker at the threshold."""
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.threshold:
                self._open_until = time.monotonic() + self.cooldown

    @property
    def is_open(self) -> bool:
        """True while callers are being turned away."""
        return self._failures >= self.threshold and time.monotonic() < self._open_until
