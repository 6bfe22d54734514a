"""`Recorder`: the framework-free, low-overhead store that adapters write event firings and callback calls to.

Raw records go into flat `array('q')` buffers (no Python object per span) up to a cap; past the cap,
each record only updates a fixed-size aggregate (count, total, min, max, log2 histogram) kept per loop,
so memory stays bounded however long the run. Everything recorded lands in one `TraceData`.
"""
from __future__ import annotations

from time import perf_counter_ns
from typing import Any

from loopviz.trace.clock import Clock, HostClock
from loopviz.trace.data import Aggregate, TraceData, recount
from loopviz.trace.layout import (
    CALL_FIELDS, CANCELLED, ERROR, F_DEV_END, F_DEV_START, F_END, F_EPOCH, F_ITER, F_STATUS, FIRING_FIELDS, MODES,
    NC, NCH, NF, NO_HANDLER, RAN, SKIPPED_RUN, SKIPPED_TRAIN, SKIPPED_VALID, STATUS,
)

__all__ = ["Recorder", "FIRING_FIELDS", "CALL_FIELDS", "STATUS", "MODES", "RAN", "NO_HANDLER", "SKIPPED_RUN",
           "SKIPPED_TRAIN", "SKIPPED_VALID", "CANCELLED", "ERROR"]

_DRAIN_EVERY = 4096  # deferred clock marks resolved per batch


class Recorder:
    """Collects one run into `data`. Adapters call `begin_firing`/`end_firing` around each event and `call`
    per callback; `close()` hands the finished `TraceData` over."""

    def __init__(self, clock: Clock | None = None, max_calls: int = 1_000_000, max_firings: int = 250_000):
        self.clock = clock or HostClock()
        self.max_calls = max_calls
        self.max_firings = max_firings
        self.data = TraceData(clock=self.clock.name)
        # the hot path's own handles on the buffers and aggregates it fills (the same objects as in `data`)
        self.firings, self.calls = self.data.firings, self.data.calls
        self.overflow_firings, self.overflow_calls = self.data.overflow_firings, self.data.overflow_calls
        self.event_ids: dict[str, int] = {}
        self.callback_ids: dict[int, int] = {}
        self.attr_ids: dict[str, int] = {}
        self.loop = -1
        # open firings, innermost last: (index or -1 when dropped, event id, mode, loop, start if dropped)
        self.stack: list[tuple[int, int, int, int, int]] = []
        self.current = -1  # the innermost open firing (-1: none, or dropped)
        self.call_cap = max_calls * NC
        self.firing_cap = max_firings * NF
        self.change_cap = max_calls * NCH
        self.device = self.clock.name != "host"  # event boundaries also marked on a device clock
        self.no_handler_calls = 0  # calls to callbacks without a handler for the event: counted, not recorded
        self.deferred: list[int] = []  # positions in `firings` awaiting a deferred clock's times

    # -- registries ---------------------------------------------------------------------------

    def event_id(self, name: str) -> int:
        """The small integer standing for an event name."""
        eid = self.event_ids.get(name)
        if eid is None:
            eid = self.event_ids[name] = len(self.data.events)
            self.data.events.append(name)
        return eid

    def callback_id(self, key: int, describe: Any) -> int:
        """The small integer standing for a callback (keyed by identity); `describe()` gives its facts once."""
        cid = self.callback_ids.get(key)
        if cid is None:
            cid = self.callback_ids[key] = len(self.data.callbacks)
            self.data.callbacks.append(describe())
        return cid

    def begin_loop(self, label: str) -> None:
        """Start a new loop (a fit, a validate, a get_preds...): later firings belong to it."""
        self.data.loops.append(label)
        self.loop = len(self.data.loops) - 1

    # -- the hot path -------------------------------------------------------------------------

    def begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """Open an event firing; returns its index (or -1 once past the cap)."""
        eid = self.event_ids.get(event)
        if eid is None:
            eid = self.event_id(event)
        firings = self.firings
        loop = self.loop
        if len(firings) >= self.firing_cap:
            self.stack.append((-1, eid, mode, loop, perf_counter_ns()))
            self.current = -1
            return -1
        index = len(firings) // NF
        parent = self.current
        self.current = index
        self.stack.append((index, eid, mode, loop, 0))
        dev = -1
        if self.device:
            dev = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(len(firings) + F_DEV_START)
        # one row in FIRING_FIELDS order
        firings.extend((eid, mode, epoch, iteration, loop, parent, perf_counter_ns(), 0, 0, dev, -1))
        return index

    def end_firing(self, index: int, status: int) -> None:
        """Close the innermost open firing with its outcome (0 ok, else a CANCELLED/ERROR status)."""
        end = perf_counter_ns()
        stack = self.stack
        _, eid, mode, loop, dropped_start = stack.pop()
        self.current = stack[-1][0] if stack else -1
        if index < 0:
            key = (loop, eid, mode)
            agg = self.overflow_firings.get(key)
            if agg is None:
                agg = self.overflow_firings[key] = Aggregate()
            agg.add(end - dropped_start)
            return
        base = index * NF
        firings = self.firings
        firings[base + F_END] = end
        firings[base + F_STATUS] = status
        if self.device:
            firings[base + F_DEV_END] = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(base + F_DEV_END)
                if len(self.deferred) >= _DRAIN_EVERY:
                    self.drain()

    def call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """Record one callback call inside the innermost open firing."""
        firing = self.current
        if firing >= 0 and len(self.calls) < self.call_cap:
            self.calls.extend((firing, cb_id, start, end - start, status))  # one row in CALL_FIELDS order
            return
        _, eid, mode, loop, _ = self.stack[-1] if self.stack else (-1, -1, 0, self.loop, 0)
        key = (loop, eid, mode, cb_id, status)
        agg = self.overflow_calls.get(key)
        if agg is None:
            agg = self.overflow_calls[key] = Aggregate()
        agg.add(end - start)

    def changed(self, cb_id: int, names: list[str]) -> None:
        """Record that a callback's call (in the innermost open firing) changed these attributes."""
        index, eid, mode, loop, _ = self.stack[-1] if self.stack else (-1, -1, 0, self.loop, 0)
        base = index * NF
        epoch, iteration = (self.firings[base + F_EPOCH], self.firings[base + F_ITER]) if index >= 0 else (-1, -1)
        data = self.data
        for name in names:
            aid = self.attr_ids.get(name)
            if aid is None:
                aid = self.attr_ids[name] = len(data.attrs)
                data.attrs.append(name)
            key = (loop, eid, mode, cb_id, aid)
            agg = data.change_agg.get(key)
            if agg is None:
                data.change_agg[key] = [1, epoch, iteration, epoch, iteration]
            else:
                agg[0] += 1
                agg[3], agg[4] = epoch, iteration
            if index >= 0 and len(data.change_log) < self.change_cap:
                data.change_log.extend((index, cb_id, aid))  # one row in CHANGE_FIELDS order

    def drain(self) -> None:
        """Write a deferred clock's times into the firings they belong to."""
        times = self.clock.drain()
        for position, value in zip(self.deferred, times):
            self.firings[position] = value
        self.deferred.clear()

    def close(self) -> TraceData:
        """The recorded data, complete: deferred clock times resolved, counts of what went past the caps filled in."""
        self.drain()
        data = self.data
        data.no_handler_calls = self.no_handler_calls
        data.meta["max_calls"], data.meta["max_firings"] = self.max_calls, self.max_firings
        return recount(data)
