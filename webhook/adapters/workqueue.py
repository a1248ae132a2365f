"""A work queue keyed by name and a token bucket, as client-go's workqueue and flowcontrol do them.

The queue holds each key once however often it is added; a key being worked on is not handed to
a second worker, and one added meanwhile is queued again when the first is done. A failed key
comes back after an exponential backoff of its own, reset when it succeeds. Time is injected, so
the behaviour is tested without waiting.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up: `delay()` takes one and says how long to
    wait before using it (0 while the bucket has tokens)."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def delay(self) -> float:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def wait(self, stop: threading.Event | None = None) -> None:
        """Take a token, sleeping until it is due (or `stop` is set)."""
        delay = self.delay()
        if delay > 0:
            if stop is None:
                time.sleep(delay)
            else:
                stop.wait(delay)


class Backoff:
    """Per-key exponential backoff: `base` doubled at each failure in a row, at most `cap`."""

    def __init__(self, base: float = 0.1, cap: float = 300.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[Hashable, int] = {}

    def next(self, key: Hashable) -> float:
        """The wait before retrying `key`, counting this failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.cap, self.base * 2 ** n)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class WorkQueue:
    """Keys to work on, each at most once in the queue and once in progress."""

    def __init__(self, backoff: Backoff | None = None, clock: Clock = time.monotonic) -> None:
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # queued, or to be queued again once done
        self._processing: set[Hashable] = set()
        self._waiting: list[tuple[float, int, Hashable]] = []  # (due, tie-breaker, key)
        self._seq = 0
        self._shut = False
        self._cond = threading.Condition()

    def add(self, key: Hashable, *, first: bool = False) -> None:
        """Queue `key` unless it is queued already (`first`: ahead of the others)."""
        with self._cond:
            self._add(key, first)

    def _add(self, key: Hashable, first: bool = False) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # `done` queues it again
        if first:
            self._queue.appendleft(key)
        else:
            self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._waiting, (self.clock() + delay, self._seq, key))
            self._cond.notify()

    def retry(self, key: Hashable) -> float:
        """Queue a failed `key` again after its backoff; returns the backoff."""
        delay = self.backoff.next(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        """`key` succeeded: its next failure starts the backoff over."""
        self.backoff.forget(key)

    def _promote(self) -> float | None:
        """Move due keys into the queue; the seconds until the next one is due, if any."""
        now = self.clock()
        while self._waiting and self._waiting[0][0] <= now:
            self._add(heapq.heappop(self._waiting)[2])
        return self._waiting[0][0] - now if self._waiting else None

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key to work on (call `done` with it afterwards), or None at shutdown or timeout."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                until_due = self._promote()
                if self._shut:
                    return None
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                waits = [w for w in (until_due, None if deadline is None else deadline - self.clock())
                         if w is not None]
                if deadline is not None and min(waits) <= 0:
                    return None
                self._cond.wait(min(waits) if waits else None)

    def done(self, key: Hashable) -> None:
        """Work on `key` ended; if it was added meanwhile, it is queued again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def depth(self) -> int:
        """Keys queued (not those waiting out a backoff, nor those in progress)."""
        return len(self._queue)

    def shut_down(self) -> None:
        """Wake every waiting `get`, which then returns None; nothing is queued any more."""
        with self._cond:
            self._shut = True
            self._queue.clear()
            self._dirty.clear()
            self._waiting.clear()
            self._cond.notify_all()
