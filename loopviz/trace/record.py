"""`Recorder`: the framework-free, low-overhead store that adapters write event firings and callback calls to.

Raw records are packed into bytes (`loopviz.trace.records`: 32 per firing, 24 per call, no Python object per
span) up to a cap. A record's values are first appended to a flat list, and up to `PENDING_ROWS` rows of them are
packed together, 64 rows per struct call, when no firing is open; past the cap,
each record only updates a fixed-size aggregate (count, total, min, max, log2 histogram) kept per loop,
so memory stays bounded however long the run. What the reports need whole is kept whatever the cap:
each loop's span, the work between sibling firings past the cap, and calls without a handler per loop.
Everything recorded lands in one `TraceData`.
"""
from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import replace
from time import perf_counter_ns
from typing import Any, Callable

from loopviz.trace.clock import Clock, HostClock
from loopviz.trace.data import Aggregate, TraceData, is_outermost, recount
from loopviz.trace.layout import (
    CALL_FIELDS, CANCELLED, ERROR, F_END, FIRING_FIELDS, MODES, NCH, NF, NO_HANDLER, RAN, SKIPPED, SKIPPED_TRAIN,
    SKIPPED_VALID, STATUS,
)
from loopviz.trace.records import (
    CALL_ROW, FIRING_EPOCH_ITER, FIRING_ROW, LONG, MAX_EVENT, MAX_INDEX, CallRecords, FiringRecords,
)

__all__ = ["Recorder", "FIRING_FIELDS", "CALL_FIELDS", "STATUS", "MODES", "RAN", "NO_HANDLER", "SKIPPED",
           "SKIPPED_TRAIN", "SKIPPED_VALID", "CANCELLED", "ERROR"]

_DRAIN_EVERY = 4096  # deferred clock marks resolved per batch
# Rows wait as values in a flat list until this many are made, then are packed by struct (`loopviz.trace.records`)
# 64 at a time: per row, a pack call of its own costs more in argument handling and bytes objects than converting
# its values, and a list or tuple per row more again in allocating and freeing it.
PENDING_ROWS = 2048
_FIRING_SIZE, _CALL_SIZE = FIRING_ROW.size, CALL_ROW.size
_pack_firing, _pack_call = FIRING_ROW.pack, CALL_ROW.pack
_unpack_firing, _unpack_call = FIRING_ROW.unpack_from, CALL_ROW.unpack_from
_FW, _CW = len(FIRING_ROW.unpack(bytes(_FIRING_SIZE))), len(CALL_ROW.unpack(bytes(_CALL_SIZE)))  # values per row
_ST, _DUR = 7, 8  # where a pending firing row holds its status and duration (None while the firing is open)
# where each of a pending firing row's values but the duration goes in FIRING_FIELDS' order
_PENDING_FIELDS = tuple(FIRING_FIELDS.index(name) for name in
                        ("start", "epoch", "iter", "loop", "parent", "event", "mode", "status"))
_BLOCK = 64  # rows packed per struct call (a struct holds 32 bytes per field: 64 firing rows take 18 KB)
_BLOCKS: dict[str, tuple[str, struct.Struct]] = {}  # row format -> (its bulk format, the struct packing _BLOCK rows)


def _bulk(row: struct.Struct) -> tuple[str, str]:
    """The byte order and the body of the format to pack `row` in bulk with, giving the same bytes: native where it
    can (native conversion is the faster one; the rows' layout needs no padding on a little-endian machine), with the
    64-bit fields as `n` (ssize_t) where that is 8 bytes (CPython converts a multi-digit int to long long through
    `_PyLong_AsByteArray`, to ssize_t digit by digit); else the row's own."""
    body = row.format[1:]
    if sys.byteorder != "little" or struct.calcsize("@" + body * 2) != 2 * row.size:
        return row.format[0], body
    return "@", body.replace("q", "n") if struct.calcsize("@n") == 8 else body


def _pack_many(row: struct.Struct, values: list[Any], width: int) -> bytes:
    """Rows of format `row`, `width` values each, packed _BLOCK at a time (raises struct.error/TypeError as
    `row.pack` would)."""
    found = _BLOCKS.get(row.format)
    if found is None:
        prefix, body = _bulk(row)
        found = _BLOCKS[row.format] = (prefix + body, struct.Struct(prefix + body * _BLOCK))
    one, block = found
    step = _BLOCK * width
    whole = len(values) - len(values) % step
    packed = [block.pack(*values[i:i + step]) for i in range(0, whole, step)]
    if whole < len(values):
        rest = (len(values) - whole) // width
        packed.append(struct.pack(one[0] + one[1:] * rest, *values[whole:]))
    return b"".join(packed)


def _held(long: dict[int, int], index: int, dur: int) -> int:
    """The duration row `index` stores: `dur`, or LONG with `dur` kept exactly in `long` when 32 bits cannot hold it
    (past 4.29 s, or negative)."""
    if 0 <= dur < LONG:
        return dur
    long[index] = dur
    return LONG


def _add(aggregates: dict[tuple[int, ...], Aggregate], key: tuple[int, ...], dur: int) -> None:
    """Count one duration past the cap into the aggregate at `key`, creating it on first use."""
    agg = aggregates.get(key)
    if agg is None:
        agg = aggregates[key] = Aggregate()
    agg.add(dur)


class Recorder:
    """Collects one run into `data`. Adapters call `begin_firing`/`end_firing` around each event and `call`
    per callback; `close()` hands the finished `TraceData` over.

    Its interface to tracers is its methods (`vocabulary`, the loops' and callbacks' methods, the hot path), `now`
    (the host clock) and `loop` (the innermost open loop); tracers read none of its buffers or id tables, with two
    exceptions: `no_handler`, the calls a loop makes to callbacks without a handler (outside any loop, then per loop),
    which a tracer counts as `no_handler[loop + 1] += k` (most calls, where a loop calls every callback at every
    event: a method call would cost a frame each), or by a tally (`no_handler_tally`); and `hot_path()`, the cells and
    functions with which a tracer writes the short paths of `begin_firing`/`end_firing`/`call` into its own frame, by
    the protocol `HotPath` documents."""

    def __init__(self, clock: Clock | None = None, max_calls: int = 1_000_000, max_firings: int = 250_000,
                 now: Callable[[], int] | None = None):
        # the host clock (ns) every timestamp is read from, the tracers' included: inject a deterministic one in tests
        self.now = now or perf_counter_ns
        self.clock = clock or HostClock()
        self.max_calls = max_calls
        self.max_firings = max_firings
        self.data = TraceData(clock=self.clock.name)
        self.data.meta["dispatch_label"] = "dispatch"  # until the adapter names it (`vocabulary`)
        # the hot path's own handles on the buffers and aggregates it fills (the same objects as in `data`)
        # the packed rows (bytearrays), their exact long durations, and the firings' device times
        self.firings, self.calls = self.data.firings.packed, self.data.calls.packed
        self.long_firings, self.long_calls = self.data.firings.long, self.data.calls.long
        self.device_times = self.data.firings.device
        # Rows not packed yet, as flat values. A firing's nine in FIRING_ROW's stored order (start, epoch, iter, loop,
        # parent, event, mode, status, duration; the duration None while it is open): row `count[0] - len(pending)
        # // 9 + i` from value 9 * i. They are packed only while no firing is open, so an open firing's values stay
        # where they are. A call's five in CALL_ROW's order.
        self.pending: list[Any] = []
        self.add_values = self.pending.extend
        self.count = [0]  # firing rows made, packed or not
        self.pending_calls: list[int] = []
        self.add_call_values = self.pending_calls.extend
        self.packed_calls = 0  # call rows packed
        self.overflow_firings, self.overflow_calls = self.data.overflow_firings, self.data.overflow_calls
        self.overflow_nested, self.overflow_work = self.data.overflow_nested, self.data.overflow_work
        self.event_ids: dict[str, int] = {}
        self.short_ids: dict[str, int] = {}  # the events begin_firing's short path may take (ids a row can hold)
        self.callback_ids: dict[int, int] = {}
        self.attr_ids: dict[str, int] = {}
        self.loop = -1  # the innermost open loop
        self.loop_stack: list[int] = []  # open loops, innermost last
        # Open firings with a row are a chain: the innermost one's index in `cur`, each row's parent the next. Firings
        # past the cap (dropped: no row) are kept open here, innermost last: (event id, mode, loop, start, the `cur`
        # they were opened in); while one is, `limit` sends every firing down the full path.
        self.cur = [-1]  # the innermost open firing (-1: none, or dropped)
        self.dropped: list[tuple[int, int, int, int, int]] = []
        # [end of the last firing closed (at any level), the sibling: the row of the last firing closed at this level
        # (-1: none, a firing began since; -2: a dropped one, in `sibling`), start of the first top-level firing of the
        # open outermost loop when it was not a row (else it is row `top_row`'s), end of the last top-level firing closed]
        self.marks = [0, -1, -1, -1]
        self.top_row = 0  # the first row made in the open outermost loop, if made
        self.sibling: tuple[int, int, int] | None = None  # (event id, end, parent) of the last dropped firing closed
        self.call_cap = min(max_calls, MAX_INDEX)  # in rows
        self.firing_cap = min(max_firings, MAX_INDEX)
        self.device = self.clock.name != "host"  # event boundaries also marked on a device clock
        # the short paths' bounds: begin_firing's on `count[0]` (-1 on a device clock and while a dropped firing is
        # open; else the cap, or where the pending rows are packed), call's on len(pending_calls) (0 while a dropped
        # firing is open, so that a call's firing is known from the innermost firing's serial; else likewise, in values)
        self.limit = [-1 if self.device else min(self.firing_cap, PENDING_ROWS)]
        self.call_limit = [min(self.call_cap, PENDING_ROWS) * _CW]
        self.change_cap = max_calls * NCH
        self.no_handler = [0]  # calls to callbacks without a handler for the event: outside any loop, then per loop
        # id -> [a tally of firings, the no-handler calls each made, dropped by its tracer]: see `no_handler_tally`
        self.tallies: dict[int, list[Any]] = {}
        self.deferred: list[int] = []  # positions in `device_times` awaiting a deferred clock's times

    # -- registries ---------------------------------------------------------------------------

    def event_id(self, name: str) -> int:
        """The small integer standing for an event name."""
        eid = self.event_ids.get(name)
        if eid is None:
            eid = self.event_ids[name] = len(self.data.events)
            self.data.events.append(name)
            if eid <= MAX_EVENT:
                self.short_ids[name] = eid
        return eid

    def callback_id(self, key: int, describe: Any) -> int:
        """The small integer standing for a callback (keyed by identity); `describe()` gives its facts once."""
        cid = self.callback_ids.get(key)
        if cid is None:
            cid = self.callback_ids[key] = len(self.data.callbacks)
            self.data.callbacks.append(describe())
        return cid

    def vocabulary(self, dispatch_label: str | None = None, range_prefix: str | None = None,
                   batch_events: tuple[str, str] | None = None, skip_statuses: dict[str, str] | None = None) -> None:
        """What the adapter calls the parts of its loop, kept in the trace's meta (and its files): the label of the
        time in events no callback's call accounts for, the prefix of the profiler ranges it opens (ranges=True),
        the events that open and close a batch, and what each skip status means in its loop."""
        given = {"dispatch_label": dispatch_label, "range_prefix": range_prefix,
                 "batch_events": list(batch_events) if batch_events else None, "skip_statuses": skip_statuses}
        self.data.meta.update({key: value for key, value in given.items() if value is not None})

    def no_handler_tally(self, calls: int) -> list[None]:
        """A tally for firings that each made `calls` calls to callbacks without a handler: a tracer appends None to it
        as each firing ends (a list append costs less than `no_handler[loop + 1] += calls`), and the recorder counts
        it into `no_handler` of the loop that is innermost then (at each loop's start and end, each packing, close),
        so a firing's entry counts in its own loop. `drop_tally` when no new firing will use it."""
        tally: list[None] = []
        self.tallies[id(tally)] = [tally, calls, False]
        return tally

    def drop_tally(self, tally: list[None]) -> None:
        """No new firing will use this tally: it is forgotten once counted next (a firing open now may still end,
        and append to it)."""
        entry = self.tallies.get(id(tally))
        if entry is not None:
            entry[2] = True

    def count_tallies(self) -> None:
        """Count every tally's firings into `no_handler` of the innermost open loop (where each tallied firing ran:
        tallies are counted whenever that loop changes), and forget the dropped ones."""
        no_handler, at = self.no_handler, self.loop + 1
        for key, (tally, calls, dropped) in list(self.tallies.items()):
            if tally:
                no_handler[at] += len(tally) * calls
                tally.clear()
            if dropped:
                del self.tallies[key]

    def forget_callback(self, key: int) -> None:
        """Forget the object keyed `key` (collected: a new object reusing its id is a new callback); its records keep
        their callback id."""
        self.callback_ids.pop(key, None)

    def loop_open(self, index: int) -> bool:
        """True while loop `index` has not ended."""
        return index in self.loop_stack

    @property
    def loops_open(self) -> int:
        """How many loops are open (nested ones included)."""
        return len(self.loop_stack)

    def is_outermost_loop(self, index: int) -> bool:
        """True when loop `index` began inside no other loop and no firing."""
        return is_outermost(self.data.loop_spans[index])

    def end_loops(self) -> None:
        """End every open loop, the innermost first."""
        while self.loop_stack:
            self.end_loop()

    def begin_loop(self, label: str, start: int | None = None) -> int:
        """Start a loop (a fit, a validate, a get_preds...) inside the open one, if any; returns its index.
        Firings belong to it until `end_loop`. `start` (ns): when its entry point was called (default: now)."""
        self.count_tallies()
        data = self.data
        index = len(data.loops)
        parent_firing = (self.cur[0] if self.cur[0] >= 0 else -2) if self._open() else -1  # -2: a dropped firing
        data.loops.append(label)
        data.loop_spans.append([start if start is not None else self.now(), -1, self.loop, parent_firing, -1, -1])
        if self.loop < 0 and not self._open():  # an outermost loop: the run's time is tiled from here
            self.marks[1:] = [-1, -1, -1]
            self.top_row = self.count[0]
        self.loop_stack.append(index)
        self.loop = index
        self.no_handler.append(0)
        return index

    def end_loop(self, end: int | None = None) -> None:
        """End the innermost open loop; `end` (ns): when its entry point returned (default: its last firing's end)."""
        if not self.loop_stack:
            return
        self.count_tallies()
        index = self.loop_stack.pop()
        span = self.data.loop_spans[index]
        span[1] = end if end is not None else max(self.marks[0], span[0])
        if is_outermost(span):  # where its first and last top-level firings were
            span[4], span[5] = self._top_first(), self.marks[3]
            self.marks[1] = -1
        self.loop = self.loop_stack[-1] if self.loop_stack else -1

    def extend_loop(self, index: int, end: int) -> None:
        """Let an ended loop run on to `end` (its caller's own work after it, until the caller returned)."""
        span = self.data.loop_spans[index]
        span[1] = max(span[1], end)

    # -- the hot path -------------------------------------------------------------------------

    # begin_firing, end_firing and call run at every event and handler call: each has a short path for what is
    # nearly always so (a host clock, under the caps, an event seen before) and leaves the rest to a full one. A tracer
    # may write the short path into its own frame instead, through `hot_path()` (see `HotPath`).

    def hot_path(self) -> HotPath:
        """The cells and functions a tracer's own frame records firings and calls with (the protocol is `HotPath`'s)."""
        return HotPath(self)

    def short_id(self, event: str) -> int:
        """The event's id (registered now if new) when a row can name it, else -1 (its firings are aggregated)."""
        eid = self.event_id(event)
        return eid if eid <= MAX_EVENT else -1

    def _open(self) -> bool:
        """True while any firing is open."""
        return self.cur[0] >= 0 or bool(self.dropped)

    def _row(self, index: int) -> Any:
        """Firing row `index` in FIRING_FIELDS' stored order, packed or not (its duration: None while open, LONG
        for one kept in `long_firings` once packed)."""
        at = (index - self.count[0]) * _FW + len(self.pending)
        if at >= 0:
            return self.pending[at:at + _FW]
        return _unpack_firing(self.firings, index * _FIRING_SIZE)

    def _epoch_iter(self, index: int) -> tuple[int, int]:
        """The epoch and iteration of firing `index` as its row holds them (-1, -1: none, or not 32-bit integers)."""
        if index < 0:
            return -1, -1
        epoch, iteration = self._row(index)[1:3]
        try:
            FIRING_EPOCH_ITER.pack(epoch, iteration)
        except (struct.error, TypeError):
            return -1, -1
        return epoch, iteration

    def _innermost(self) -> tuple[int, int, int, int]:
        """(index or -1, event id, mode, loop) of the innermost open firing; (-1, -1, 0, loop) when none is open."""
        index = self.cur[0]
        if index >= 0:
            row = self._row(index)
            return index, row[5], row[6], row[3]
        if self.dropped:
            eid, mode, loop, _, _ = self.dropped[-1]
            return -1, eid, mode, loop
        return -1, -1, 0, self.loop

    def _sibling(self) -> tuple[int, int] | None:
        """(event id, end) of the last firing closed at the level a firing begins at, if any. A tracer may leave
        `marks[1]` as it was when it opens a firing with a row (`HotPath`), so the sibling found must have the new
        firing's parent as its own."""
        marks, parent = self.marks, self.cur[0]
        if marks[1] >= 0:
            row = self._row(marks[1])
            return (row[5], marks[0]) if row[4] == parent else None
        if marks[1] == -2 and self.sibling is not None and self.sibling[2] == parent:
            return self.sibling[0], self.sibling[1]
        return None

    def _first_top(self, start: int) -> None:
        """A top-level firing begins at `start` on the full path: the first of its outermost loop if no row came before."""
        if self.marks[2] < 0 and self.count[0] == self.top_row:
            self.marks[2] = start

    def _top_first(self) -> int:
        """Start of the first top-level firing of the open outermost loop (-1: none): one the full path saw before any
        row, else the loop's first row (nothing was open as the loop began, so its first firing is top-level)."""
        if self.marks[2] >= 0 or self.count[0] <= self.top_row:
            return self.marks[2]
        return self._row(self.top_row)[0]

    def begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """Open an event firing; returns its index (or -1 once past the cap)."""
        eid = self.short_ids.get(event)
        index = self.count[0]
        if eid is None or index >= self.limit[0]:
            return self._begin_firing(event, mode, epoch, iteration)
        self.count[0] = index + 1
        cur = self.cur
        parent = cur[0]
        cur[0] = index
        self.marks[1] = -1  # this firing's own children start a new level
        self.add_values((self.now(), epoch, iteration, self.loop, parent, eid, mode, 0, None))
        return index

    def _begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """begin_firing's full path: a new event, past the cap, a dropped firing open, or a device clock to mark."""
        eid = self.event_id(event)
        loop = self.loop
        opened = self._open()
        sibling = self._sibling()
        self.marks[1] = -1  # this firing's own children start a new level
        if self.pending and self.count[0] >= self.limit[0] and not opened:
            self.pack_rows()
        if self.count[0] >= self.firing_cap or eid > MAX_EVENT:  # past the cap (or an event a row cannot name)
            start = self.now()
            if sibling is not None:  # the work since the previous firing at this level, kept as an aggregate
                _add(self.overflow_work, (loop, sibling[0], eid, mode, 1 if opened else 0), start - sibling[1])
            if not opened:
                self._first_top(start)
            self.dropped.append((eid, mode, loop, start, self.cur[0]))
            self.cur[0] = -1
            self.limit[0] = -1  # firings inside a dropped one take the full path, and so do calls
            self.call_limit[0] = 0
            return -1
        index = self.count[0]
        parent = self.cur[0]
        self.cur[0] = index
        if self.device:
            if self.clock.deferred:
                self.deferred.append(len(self.device_times))
            self.device_times.extend((self.clock.mark(), -1))
        start = self.now()
        if not opened:
            self._first_top(start)
        self.count[0] = index + 1
        self.add_values((start, epoch, iteration, loop, parent, eid, mode, 0, None))
        return index

    def end_firing(self, index: int, status: int, end: int | None = None) -> None:
        """Close the innermost open firing with its outcome (0 ok, else a CANCELLED/ERROR status); `end` (ns): when it
        ended, if earlier than now."""
        if end is None:
            end = self.now()
        if index < 0 or self.device:
            return self._end_firing(index, status, end)
        self.closed(index, status, end)

    def closed(self, index: int, status: int, end: int) -> None:
        """The end of firing `index`, open, so its row is pending (rows are packed only while no firing is open)."""
        pending = self.pending
        at = (index - self.count[0]) * _FW + len(pending)
        parent = pending[at + 4]
        self.cur[0] = parent
        marks = self.marks
        marks[0], marks[1] = end, index
        if parent < 0 and not self.dropped:
            marks[3] = end
        pending[at + _ST], pending[at + _DUR] = status, end - pending[at]

    def _end_firing(self, index: int, status: int, end: int) -> None:
        """end_firing's full path: a firing past the cap, or a device clock to mark."""
        if index < 0:
            eid, mode, loop, start, parent = self.dropped.pop()
            self.cur[0] = parent
            self.sibling = (eid, end, parent)
            marks = self.marks
            marks[0], marks[1] = end, -2
            opened = self._open()
            if not opened:
                marks[3] = end
            if not self.dropped:
                self.limit[0] = self._limit()
                self.call_limit[0] = self._call_limit()
            _add(self.overflow_nested if opened else self.overflow_firings, (loop, eid, mode), end - start)
            return
        self.closed(index, status, end)
        if self.device:
            self.device_times[2 * index + 1] = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(2 * index + 1)
                if len(self.deferred) >= _DRAIN_EVERY:
                    self.drain()

    def call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """Record one callback call inside the innermost open firing."""
        firing = self.cur[0]
        if firing >= 0 and len(self.pending_calls) < self.call_limit[0]:
            self.add_call_values((start, firing, cb_id, end - start, status))
            return
        self._call(cb_id, start, end, status)

    def _call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """call's full path: the pending calls to pack, past the cap, outside any firing, or in a dropped one."""
        room = self._call_room()
        if self.pending_calls and len(self.pending_calls) >= room:
            self.pack_calls()
            room = self._call_room()
        firing = self.cur[0]
        if firing >= 0 and len(self.pending_calls) < room:
            self.add_call_values((start, firing, cb_id, end - start, status))
            return
        _, eid, mode, loop = self._innermost()
        _add(self.overflow_calls, (loop, eid, mode, cb_id, status), end - start)

    # -- packing ----------------------------------------------------------------------------------

    def _limit(self) -> int:
        """begin_firing's short-path bound on `count[0]` now: the cap, or where the pending rows fill up."""
        if self.device or self.dropped:
            return -1
        return min(self.firing_cap, self.count[0] - len(self.pending) // _FW + PENDING_ROWS)

    def _call_room(self) -> int:
        """How many call values may be pending before they are packed: the cap, or a batch."""
        return min(self.call_cap - self.packed_calls, PENDING_ROWS) * _CW

    def _call_limit(self) -> int:
        """call's short-path bound on len(pending_calls) now: none while a dropped firing is open, else the room."""
        return 0 if self.dropped else self._call_room()

    def pack_rows(self, keep: bool = False) -> None:
        """Pack every pending firing row (as the trace closes, one still open is packed open). `keep`: leave the values
        in place (a trace ended inside a firing: the open firings' frames still write their ends there, unread)."""
        self.count_tallies()  # each holds at most one entry per row made since the last packing
        pending = self.pending
        first = self.count[0] - len(pending) // _FW
        try:
            self.firings += _pack_many(FIRING_ROW, pending, _FW)
        except (struct.error, TypeError):  # a value a row cannot hold as it is: row by row
            for at in range(0, len(pending), _FW):
                self.firings += self._packed_firing(first + at // _FW, pending[at:at + _FW])
        if not keep:
            pending.clear()
            self.limit[0] = self._limit()

    def _packed_firing(self, index: int, row: list[Any], long: dict[int, int] | None = None) -> bytes:
        """One firing row packed: an epoch or iteration that is not a 32-bit integer is recorded as -1, a duration
        a row cannot hold is kept in `long` (`long_firings`), an open firing's (None) as 0."""
        start, epoch, iteration, loop, parent, eid, mode, status, dur = row
        dur = 0 if dur is None else _held(self.long_firings if long is None else long, index, dur)
        try:
            return _pack_firing(start, epoch, iteration, loop, parent, eid, mode, status, dur)
        except (struct.error, TypeError):
            return _pack_firing(start, -1, -1, loop, parent, eid, mode, status, dur)

    def pack_calls(self) -> None:
        """Pack every pending call row."""
        pending = self.pending_calls
        try:
            self.calls += _pack_many(CALL_ROW, pending, _CW)
        except (struct.error, TypeError):  # a duration a row cannot hold: row by row
            for at in range(0, len(pending), _CW):
                start, firing, cb_id, dur, status = pending[at:at + _CW]
                dur = _held(self.long_calls, self.packed_calls + at // _CW, dur)
                self.calls += _pack_call(start, firing, cb_id, dur, status)
        self.packed_calls += len(pending) // _CW
        pending.clear()
        self.call_limit[0] = self._call_limit()

    def changed(self, cb_id: int, names: list[str]) -> None:
        """Record that a callback's call (in the innermost open firing) changed these attributes."""
        index, eid, mode, loop = self._innermost()
        epoch, iteration = self._epoch_iter(index)
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

    def call_waited(self, cb_id: int, wait: Any) -> None:
        """Record that a callback's call (in the innermost open firing) synchronised with the GPU (a `Wait`)."""
        _, eid, mode, loop = self._innermost()
        self.waited((loop, eid, mode, cb_id, -1), wait)

    def waited(self, key: tuple[int, int, int, int, int], wait: Any) -> None:
        """Add one synchronising call or piece of work (a `Wait`) to `wait_agg` under its key."""
        entry = self.data.wait_agg.get(key)
        if entry is None:
            self.data.wait_agg[key] = [1, wait.syncs, wait.wait_ns, wait.wait_ns, wait.site]
        else:
            entry[0] += 1
            entry[1] += wait.syncs
            entry[2] += wait.wait_ns
            entry[3] = max(entry[3], wait.wait_ns)

    def drain(self) -> None:
        """Write a deferred clock's times into the firings they belong to."""
        times = self.clock.drain()
        for position, value in zip(self.deferred, times):
            self.device_times[position] = value
        self.deferred.clear()

    # -- reading while the run goes on (a live view) ----------------------------------------------

    def rows_recorded(self) -> int:
        """The firing and call rows recorded so far, packed or not (what a report of the run so far reads)."""
        return self.count[0] + self.packed_calls + len(self.pending_calls) // _CW

    def closed_firings(self, since: int) -> tuple[list[tuple[int, ...]], int]:
        """The firing rows from row `since` up to the first one still open, each in FIRING_ROW's stored order (start,
        epoch, iter, loop, parent, event, mode, status, duration) with its exact duration; and the row to read from
        next. It only reads: the recording goes on as it was."""
        rows: list[tuple[int, ...]] = []
        packed = len(self.firings) // _FIRING_SIZE
        if since < packed:  # (a copy of the new rows: a view of the buffer would stop it growing)
            long = self.long_firings
            for index, row in enumerate(FIRING_ROW.iter_unpack(self.firings[since * _FIRING_SIZE:]), since):
                rows.append(row if row[_DUR] != LONG else (*row[:_DUR], long.get(index, LONG)))
            since = packed
        pending, first = self.pending, self.count[0] - len(self.pending) // _FW
        for at in range(max(since - first, 0) * _FW, len(pending), _FW):
            row = pending[at:at + _FW]
            if row[_DUR] is None:
                break
            rows.append(tuple(row))
            since += 1
        return rows, since

    def closed_matrix(self, since: int) -> tuple[Any, int]:
        """`closed_firings` as an (n, NF) int64 matrix in FIRING_FIELDS order (numpy, without a Python object per row:
        what a live view reads once a second), and the row to read from next."""
        import numpy as np

        packed = len(self.firings) // _FIRING_SIZE
        parts = []
        if since < packed:
            long = {index - since: dur for index, dur in self.long_firings.items() if index >= since}
            parts.append(FiringRecords(self.firings[since * _FIRING_SIZE:], long).matrix())
            since = packed
        pending, first = self.pending, self.count[0] - len(self.pending) // _FW
        at = max(since - first, 0) * _FW
        durations = pending[at + _DUR::_FW]
        closed = durations.index(None) if None in durations else len(durations)
        if closed:
            try:
                stored = np.array(pending[at:at + closed * _FW], dtype=np.int64).reshape(closed, _FW)
            except (TypeError, ValueError, OverflowError):  # an epoch or iteration that is no 64-bit integer
                stored = np.array([[value if type(value) is int and -2**63 <= value < 2**63 else -1 for value in row]
                                   for row in self.closed_firings(since)[0][:closed]], dtype=np.int64)
            rows = np.full((closed, NF), -1, np.int64)
            for field, column in zip(_PENDING_FIELDS, stored.T):
                rows[:, field] = column
            rows[:, F_END] = stored[:, 0] + stored[:, _DUR]
            parts.append(rows)
            since += closed
        matrix = np.concatenate(parts) if parts else np.zeros((0, NF), np.int64)
        return matrix, since

    def snapshot(self) -> TraceData:
        """What is recorded so far as a closed trace's data, as the run stood when the first firing still open began
        (that firing, what ran in it and the calls it made left out; open loops end there), leaving the recording
        untouched: what a live view diagnoses from inside a firing. Past the caps, the aggregates as they are."""
        self.count_tallies()  # (what every packing does: no row's count changes)
        data = self.data
        rows, cutoff = self.closed_firings(0 if not self.firings else len(self.firings) // _FIRING_SIZE)
        end = self._row(cutoff)[0] if cutoff < self.count[0] else self.now()
        long_firings = {index: dur for index, dur in self.long_firings.items() if index < cutoff}
        firings = bytearray(self.firings)
        first = len(self.firings) // _FIRING_SIZE
        for index, row in enumerate(rows, first):
            firings += self._packed_firing(index, list(row), long_firings)
        # Calls are rows in the order they ended; a firing before the cutoff ended before the cutoff began, so its
        # calls come before every call of the cutoff or of what runs in it: the calls kept are the rows up to the
        # first of those.
        kept = self.packed_calls
        while kept and _unpack_call(self.calls, (kept - 1) * _CALL_SIZE)[1] >= cutoff:
            kept -= 1
        calls = bytearray(self.calls[:kept * _CALL_SIZE])
        long_calls = {index: dur for index, dur in self.long_calls.items() if index < kept}
        pending = self.pending_calls
        if kept == self.packed_calls:
            for at in range(0, len(pending), _CW):
                start, firing, cb_id, dur, status = pending[at:at + _CW]
                if firing >= cutoff:
                    break
                calls += _pack_call(start, firing, cb_id, _held(long_calls, kept, dur), status)
                kept += 1
        spans = [list(span) for span in data.loop_spans]
        for index in self.loop_stack:
            span = spans[index]
            span[1] = max(end, span[0])
            if is_outermost(span):
                span[4], span[5] = self._top_first(), min(self.marks[3], end)
        device = array("q", self.device_times[:2 * cutoff]) if len(self.device_times) else array("q")
        copied = replace(
            data, meta={**data.meta, "max_calls": self.max_calls, "max_firings": self.max_firings},
            events=list(data.events), callbacks=[dict(facts) for facts in data.callbacks], loops=list(data.loops),
            loop_spans=spans, firings=FiringRecords(firings, long_firings, device),
            calls=CallRecords(calls, long_calls), no_handler_calls=sum(self.no_handler),
            no_handler_by_loop=self.no_handler[1:],
            **{name: {key: agg.plus(Aggregate()) for key, agg in getattr(data, name).items()}
               for name in ("overflow_firings", "overflow_calls", "overflow_nested", "overflow_work")},
            attrs=list(data.attrs), change_agg={key: list(entry) for key, entry in data.change_agg.items()},
            change_log=array(data.change_log.typecode, [value for at in range(0, len(data.change_log), NCH)
                                                        if data.change_log[at] < cutoff
                                                        for value in data.change_log[at:at + NCH]]),
            wait_agg={key: list(entry) for key, entry in data.wait_agg.items()},
            data_steps=[list(step) for step in data.data_steps],
            data_work=array(data.data_work.typecode, data.data_work))
        return recount(copied)

    def close(self) -> TraceData:
        """The recorded data, complete: open loops ended, deferred clock times resolved, counts of what went past
        the caps filled in."""
        self.end_loops()
        self.drain()
        self.pack_rows(keep=self._open())
        self.pack_calls()
        data = self.data
        data.no_handler_calls = sum(self.no_handler)
        data.no_handler_by_loop = self.no_handler[1:]
        data.meta["max_calls"], data.meta["max_firings"] = self.max_calls, self.max_firings
        return recount(data)


class HotPath:
    """What a tracer needs to record firings and calls in its own frame (no call into the recorder), bound once.

    Under `count[0] < limit[0]` (a host clock, under the firing cap and the pending rows' bound, no dropped firing
    open), for an event whose `rec.short_id(event)` is `eid >= 0`, a firing is recorded exactly as
    `begin_firing`/`end_firing` would:

        index = count[0]; count[0] = index + 1; parent = cur[0]; cur[0] = index; marks[1] = -1
        at = len(values); start = now()
        add_values((start, epoch, iteration, rec.loop, parent, eid, mode, 0, None))
        ...                                                     # the firing runs (its values stay at `at`)
        end = now(); cur[0] = parent; marks[0] = end; marks[1] = index
        if parent < 0: marks[3] = end
        values[at + 7] = status (when not 0); values[at + 8] = end - start   # packed later, checked then

    (`marks[1] = -1` may be left out: a firing's sibling is taken only where its parent is the new firing's.)
    Otherwise `index = begin_firing(...)` and `end_firing(index, status)`. A call in the innermost open firing is
    `add_call((start, cur[0], cid, end - start, status))` when `cur[0] >= 0` and `len(calls) < call_limit[0]`, else
    `call(cid, start, end, status)`; `call_limit[0]` is 0 while a firing without a row (past the cap) is open, so
    `len(calls) < call_limit[0]` alone says the innermost open firing has a row."""

    __slots__ = ("now", "count", "limit", "values", "add_values", "cur", "marks", "calls", "add_call", "call_limit",
                 "call")

    def __init__(self, rec: Recorder):
        self.now, self.count, self.limit = rec.now, rec.count, rec.limit
        self.values, self.add_values = rec.pending, rec.add_values
        self.cur, self.marks = rec.cur, rec.marks
        self.calls, self.add_call, self.call_limit = rec.pending_calls, rec.add_call_values, rec.call_limit
        self.call = rec.call
