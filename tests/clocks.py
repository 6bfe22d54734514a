"""An injected clock for traces whose figures must be the same on every run (`TraceSession(learn, now=clock.now)`)."""
from __future__ import annotations

import itertools


class CountingClock:
    "A clock that moves 1 µs per reading, plus whatever the traced code says it spent (`spent`, in ns)"

    def __init__(self):
        self.readings, self.spent = itertools.count(0, 1_000), 0

    def now(self) -> int:
        return next(self.readings) + self.spent
