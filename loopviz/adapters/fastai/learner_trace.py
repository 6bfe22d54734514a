"""One learner's trace while it records: its loops, the timed handlers on its callbacks, and the firing itself.

Per event, a table says which attached callbacks have a handler (each with a timed wrapper on the instance, see
`timed`) and how many have none. A firing is recorded around fastai's own `_call_one`; as it ends, every callback
with a handler whose wrapper did not run in it was skipped by its run flags (fastai called it; its `Callback.__call__`
did not ask for the handler), and every callback without one was called for nothing (counted, not recorded one by one).
Tables are built at an event's first firing and dropped whenever the callbacks change (`add_cb`, `remove_cb`, a
handler set on a callback) and at the start of each loop, where every timed handler is looked up again.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable

from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner

from loopviz.adapters.fastai.descriptions import WORK_AFTER
from loopviz.adapters.fastai.changes import changed_state, state_snapshot
from loopviz.adapters.fastai.handlers import callback_info, overrides_call, skip_reason
from loopviz.adapters.fastai.timed import (
    Slot, make_changes, make_timed, make_tracked, reaches, resolve_handler, surely_no_handler, takes_nothing,
)
from loopviz.introspect import SHADOWS
from loopviz.trace import instrument
from loopviz.trace.data import callback_facts
from loopviz.trace.instrument import MISSING, outcome
from loopviz.trace.profiler import call_range, firing_range, work_range
from loopviz.trace.record import MODES, RAN, SKIPPED, SKIPPED_TRAIN, SKIPPED_VALID, Recorder
from loopviz.trace.waits import WaitWatch

__all__ = ["LearnerTrace", "CANCELS", "RANGE_PREFIX", "SKIP_STATUS"]

CANCELS = tuple(
    getattr(fastai_core, name) for name in dir(fastai_core) if name.startswith("Cancel") and name.endswith("Exception")
)
_INNER = frozenset(fastai_core._inner_loop)
_LOOP_EVENTS = frozenset({"before_fit", "before_validate"})  # the events that may open a loop
_CLOSING = frozenset({"after_fit", "after_validate"})  # the events that may close a loop begun without an entry point
_BATCH_EVENTS = _INNER | {"after_cancel_step"}  # the events of a batch, whose phase is learn.training
_PHASE_MODE = {
    "before_train": 1, "after_cancel_train": 1, "after_train": 1,
    "before_validate": 2, "after_cancel_validate": 2, "after_validate": 2,
}
SKIP_STATUS = {None: RAN, "run=False": SKIPPED, "run_train=False": SKIPPED_TRAIN, "run_valid=False": SKIPPED_VALID}
_PAST_ANY_BOUND = 1 << 62  # a row index no recorder's bound allows
_BEFORE_EPOCHS = frozenset({"after_create", "before_fit"})  # fired before any epoch: at no epoch or iteration
_NOT_LEAN = _LOOP_EVENTS | _CLOSING | _BEFORE_EPOCHS  # the events whose firings always take the general path
RANGE_PREFIX = "fastai"  # the name of every range a fastai trace opens (ranges=True) starts with it and a space

# (mode or -1: read learn.training, the slots of the callbacks with a handler, how many have none, the event's
# `Recorder.short_id`, the ids of the callbacks with none)
Table = tuple[int, tuple[Slot, ...], int, int, frozenset[int]]
# a table's mode and slots, a tally of its lean firings (`Recorder.no_handler_tally`), its event id, the table itself
Lean = tuple[int, tuple[Slot, ...], list[None], int, Table]


class LearnerTrace:
    """Per-learner state while tracing: the recorder, the loops, the timed handlers and what the firing needs."""

    def __init__(self, learn: Learner, recorder: Recorder, changes: bool = False, tensors: bool = False,
                 ranges: bool = False, waits: WaitWatch | None = None):
        self.learn_ref = weakref.ref(learn)
        self.rec = recorder
        self.now = recorder.now  # the host clock every timestamp is read from
        self.track = changes or tensors  # record which learner state each callback call changes
        # while a tracked call runs: learner attributes written so far -> their value before the call (else None)
        self.written: dict[str, Any] | None = None
        self.tensors = tensors  # also in-place tensor changes (version counters), at a higher cost
        # entry points open, innermost last: [name, the loop it started (-1: none yet), when it was called]
        self.entries: list[list[Any]] = []
        self.bare: list[tuple[int, str]] = []  # loops begun without an entry point: (loop, the event that ends it)
        self.ranges = ranges  # also open torch.profiler ranges (record_function) while a profiler is active
        self.work_range: Any = None  # the open range of the work since the last firing ended, if any
        self.waits = waits  # times the waits for the GPU of calls and work that synchronise (waits=True)
        self.extras = ranges or waits is not None  # either: the firing does more than record
        self.work_wait: tuple[int, int, int] | None = None  # (loop, event, mode) of the work open in `waits`, if any
        self.cursor = -1  # where the last outermost loop of the user's call ended (-1: none yet)
        self.last_outer = -1  # that loop
        # [serial of the innermost open firing (None: none), the last serial given to a firing past the cap]: read by
        # every timed handler. A firing with a row has its row's index as serial, one past the cap -1, -2, ...: each
        # firing its own.
        self.live: list[Any] = [None, 0]
        self.tables: dict[str, Table] = {}  # event -> its table, once it has fired
        self.lean: dict[str, Lean] = {}  # the events whose top-level firings may take the lean path (`firing`)
        self.slots: dict[tuple[int, str], Slot] = {}  # (id(cb), event) -> its slot, once seen with a handler
        self.facts: dict[int, dict[str, Any]] = {}  # id(cb) -> its facts (computed before any wrapper is put on it)
        self.raiser: Slot | None = None  # the slot whose handler last raised (where a cut-short firing stopped)
        self.removed: list[Any] = []  # callbacks removed during a firing: unwrapped when the outermost firing ends
        self.calling: list[tuple[Any, str]] = []  # calls of callbacks that override __call__ being timed, innermost last
        self.live_callback: Any = None  # live=True: the live view's callback, on the learner while the trace runs
        self.overriders: dict[type, bool] = {}  # callback class -> replaces Callback.__call__
        self.call_patch: Any = None  # the kernel's patch of the learner's own `_call_one` (see `firing`)
        self.data_timing: Any = None  # the loaders' timing (data=True): a `datatimer.DataTiming`

    @property
    def learn(self) -> Learner | None:
        """The traced learner, or None once it has been collected."""
        return self.learn_ref()

    # -- loops ----------------------------------------------------------------------------------

    def starts_loop(self, event: str) -> bool:
        """True when this event opens a new loop: every before_fit, and a before_validate outside any loop or
        from an entry point (get_preds(inner=True)) that has not begun one."""
        if event == "before_fit":
            return True
        if event != "before_validate":
            return False
        return self.rec.loop < 0 or bool(self.entries and self.entries[-1][1] < 0)

    def start_loop(self, event: str) -> None:
        """Begin a loop named after the entry points that are open (e.g. 'fine_tune > fit_one_cycle > fit'),
        spanning the innermost entry point's call; without one, it ends with its after_fit/after_validate."""
        label = " > ".join(name for name, _, _ in self.entries) or ("fit" if event == "before_fit" else "validate")
        if self.entries and self.entries[-1][1] < 0:
            entry = self.entries[-1]
            entry[1] = self.rec.begin_loop(label, start=entry[2] if self.rec.loops_open else self.resume_at())
        else:
            self.bare.append((self.rec.begin_loop(label), "after_fit" if event == "before_fit" else "after_validate"))

    def resume_at(self) -> int:
        """Where a new outermost loop's time starts: when the user's call began (fit_one_cycle, fine_tune...), or
        where the previous loop of that call ended, so the call's own work between fits is in the run."""
        return self.cursor if self.cursor >= 0 else self.entries[0][2]

    def end_bare_loop(self, event: str) -> None:
        """End the innermost loop begun without an entry point when its closing event has run."""
        loop, closing = self.bare[-1]
        if event == closing and self.rec.loop == loop:
            self.bare.pop()
            self.rec.end_loop()

    def end_entry(self, entry: list[Any], end: int) -> None:
        """End the loop an entry point began (and any still open inside it) when the entry point returns or raises;
        when the user's own call returns, its last outermost loop runs to that moment."""
        loop = entry[1]
        rec = self.rec
        outermost = loop >= 0 and rec.is_outermost_loop(loop)
        while loop >= 0 and rec.loop_open(loop):
            rec.end_loop(end)
        if outermost:
            self.cursor, self.last_outer = end, loop
        self.bare[:] = [(index, closing) for index, closing in self.bare if rec.loop_open(index)]
        if entry is self.entries[0]:
            if self.last_outer >= 0 and not rec.loops_open:
                rec.extend_loop(self.last_outer, end)
            self.cursor, self.last_outer = -1, -1

    # -- callbacks and their timed handlers --------------------------------------------------------

    def overrides(self, cb: Any) -> bool:
        """True when the callback's class replaces `Callback.__call__` (its calls are timed whole, by its class)."""
        cls = type(cb)
        found = self.overriders.get(cls)
        if found is None:
            found = self.overriders[cls] = overrides_call(cb)
        return found

    def facts_of(self, cb: Any) -> dict[str, Any]:
        """The callback's facts for the trace, computed once (before any wrapper of ours is on it)."""
        facts = self.facts.get(id(cb))
        if facts is None:
            facts = self.facts[id(cb)] = callback_facts(callback_info(cb))
        return facts

    def register(self, slot: Slot) -> int:
        """The trace id of a slot's callback, given at its first recorded call."""
        facts = self.facts.get(slot.key)
        if facts is None:
            cb = slot.cb()
            facts = self.facts_of(cb) if cb is not None else {"name": "?", "cls": "?"}
        slot.cid = self.rec.callback_id(slot.key, lambda: facts)
        return slot.cid

    def slot_of(self, cb: Any, event: str) -> Slot:
        """The slot of (cb, event), made on first use."""
        slot = self.slots.get((id(cb), event))
        if slot is None:
            self.facts_of(cb)
            slot = self.slots[(id(cb), event)] = Slot(cb, event, self.forget)
        return slot

    def forget(self, key: int) -> None:
        """Drop what is keyed by a collected callback's id, so a new object reusing the id is new (its records keep
        their trace ids)."""
        for found in [k for k in list(self.slots) if k[0] == key]:
            self.slots.pop(found, None)
        self.facts.pop(key, None)
        self.rec.forget_callback(key)

    def raised(self, slot: Slot) -> None:
        """A timed handler raised: where its firing stopped, should the exception escape it."""
        self.raiser = slot

    def table(self, learn: Learner, event: str) -> Table:
        """Which attached callbacks have a handler for `event` (wrapping each, once) and how many have none."""
        mode = -1 if event in _BATCH_EVENTS else _PHASE_MODE.get(event, 0)
        handled: list[Slot] = []
        quiet: list[int] = []
        learn_has = hasattr(learn, event)  # asked once: what every callback of this learner delegates to
        for cb in list(learn.cbs):
            if self.overrides(cb):
                continue  # timed whole by its class's wrapper
            slot = self.slots.get((id(cb), event))
            if slot is not None and slot.active:
                handled.append(slot)
            elif cb.__dict__.get("learn") is learn and surely_no_handler(cb, event, learn_has):
                quiet.append(id(cb))
            elif self.wrap(cb, event):
                handled.append(self.slots[(id(cb), event)])
            else:
                quiet.append(id(cb))
        eid = self.rec.short_id(event)
        table = self.tables[event] = (mode, tuple(handled), len(quiet), eid, frozenset(quiet))
        if eid >= 0 and not self.extras and event not in _NOT_LEAN:
            tally = self.rec.no_handler_tally(table[2])
            self.lean[event] = (table[0], table[1], tally, eid, table)
        return table

    def drop_tables(self, event: str | None = None) -> None:
        """Forget the table of `event` (None: every table): it is made again at the event's next firing."""
        if event is None:
            dropped = list(self.lean.values())
            self.tables.clear()
            self.lean.clear()
        else:
            dropped = [self.lean.pop(event)] if event in self.lean else []
            self.tables.pop(event, None)
        for entry in dropped:  # a firing open now may still append to its tally
            self.rec.drop_tally(entry[2])

    def wrap(self, cb: Any, event: str) -> bool:
        """Put a timed wrapper on the callback for `event` if fastai would find a handler there; True when it did."""
        handler = resolve_handler(cb, event)
        if handler is None:
            return False
        slot = self.slot_of(cb, event)
        wrapper = self.make_wrapper(slot, handler)
        slot.patch = instrument.put(cb, event, wrapper)
        getattr(wrapper, SHADOWS)[:] = [] if slot.patch.before is MISSING else [slot.patch.before]
        return True

    def make_wrapper(self, slot: Slot, handler: Any) -> Callable[..., Any]:
        """The timed wrapper: the lean one, the one that also records changes, or the one that does all the extras
        (changes with tensors, ranges, waits)."""
        learn = self.learn
        if self.track and not self.tensors and not self.extras and learn is not None:
            return make_changes(slot, handler, self.live, self, learn.__dict__, self.register, CANCELS, RAN)
        if self.track or self.extras or not takes_nothing(handler):  # a handler with parameters is rare: slow path
            return make_tracked(slot, handler, self.live, self.before_call, self.after_call, self.raised)
        return make_timed(slot, handler, self.live, self.rec.hot_path(), self.register, self.raised, CANCELS, RAN)

    def unwrap(self, slot: Slot) -> None:
        """Take a slot's wrapper off its callback, putting back what was there."""
        patch, slot.patch = slot.patch, None
        if patch is not None:
            instrument.restore(patch)

    def handler_set(self, cb: Any, event: str) -> None:
        """The callback's code set (or replaced) its handler for `event` during the trace: what it set stays, and the
        event's table is made again at its next firing (timing the new handler, or counting `noop` as none)."""
        slot = self.slots.get((id(cb), event))
        if slot is not None and slot.patch is not None:
            instrument.release(slot.patch)
            slot.patch = None
        self.drop_tables(event)

    def attached(self) -> None:
        """A callback was added: tables are made again at each event's next firing."""
        self.drop_tables()

    def detached(self, cb: Any) -> None:
        """A callback was removed: its wrappers come off now, or when the outermost firing ends if one is open
        (fastai still calls it in that firing: `_call_one` iterates a sorted copy of the callbacks)."""
        self.drop_tables()
        if self.live[0] is not None:
            self.removed.append(cb)
        else:
            self.unwrap_callback(id(cb))

    def unwrap_callback(self, key: int) -> None:
        """Take every wrapper of ours off the callback with this id."""
        for slot in [slot for (owner, _), slot in self.slots.items() if owner == key]:
            self.unwrap(slot)

    def unwrap_removed(self, learn: Learner) -> None:
        """Take the wrappers off the callbacks removed during the firing that just ended (unless added back)."""
        removed = self.removed[:]
        self.removed.clear()
        attached = {id(cb) for cb in learn.cbs}
        for cb in removed:
            if id(cb) not in attached:
                self.unwrap_callback(id(cb))

    def refresh(self, learn: Learner) -> None:
        """At the start of a loop: each timed handler looked up again (a class changed since, a callback detached
        behind fastai's back, a handler replaced without `setattr`), and every table made again."""
        attached = {id(cb) for cb in learn.cbs}
        for slot in list(self.slots.values()):
            cb, wrapper = slot.cb(), slot.wrapper() if slot.wrapper is not None else None
            if slot.patch is None or cb is None:
                continue
            if slot.key not in attached and self.live[0] is None:
                self.unwrap(slot)
                continue
            current = cb.__dict__.get(slot.event, MISSING)
            if not reaches(current, wrapper):
                self.handler_set(cb, slot.event)
            elif current is wrapper and not getattr(wrapper, SHADOWS):  # a class's (or delegate's): may have changed
                handler = resolve_handler(cb, slot.event, wrapper)
                if handler is None or not slot.rebind(handler):  # no handler, or one the lean wrapper cannot call
                    self.unwrap(slot)
        self.drop_tables()

    def unwrap_all(self) -> None:
        """Take every wrapper off (as the trace ends)."""
        for slot in list(self.slots.values()):
            self.unwrap(slot)

    # -- what a firing leaves to count --------------------------------------------------------------

    def skipped(self, slot: Slot, event: str) -> None:
        """Record a call fastai made to a callback with a handler that did not run: its run flags said no."""
        cb = slot.cb()
        if cb is None:
            return
        if event == "after_fit":
            status = SKIPPED  # only `run` applies there, and fastai has just set it back to True
        else:
            try:
                training = bool(getattr(cb, "training", True)) if event in _INNER else None
                reason = skip_reason(bool(cb.run), cb.run_train, cb.run_valid, event, training, _INNER)
            except Exception:  # a callback detached from its learner: its flags cannot be read through it
                reason = None
            status = SKIP_STATUS[reason] if reason is not None else SKIPPED
        cid = slot.cid if slot.cid >= 0 else self.register(slot)
        at = self.now()
        self.rec.call(cid, at, at, status)

    def settle(self, learn: Learner, table: Table, serial: int, event: str, status: int) -> None:
        """What firing `serial` of `event` leaves to count as it ends: its calls to callbacks without a handler and
        the handlers its callbacks' flags skipped, or, cut short by an exception (`status`), what `cut_short` finds."""
        if status:
            self.cut_short(learn, table, serial, event)
            return
        _, handled, quiet, _, _ = table
        if quiet:
            self.rec.no_handler[self.rec.loop + 1] += quiet
        for slot in handled:
            if slot.ran != serial:
                self.skipped(slot, event)

    def cut_short(self, learn: Learner, table: Table, serial: int, event: str) -> None:
        """A firing an exception ended: fastai called the callbacks in its order up to the one that raised, and
        none after it. Without a handler that raised (an interrupt elsewhere), up to the last handler that ran."""
        _, handled, _, _, quiet = table
        raiser, self.raiser = self.raiser, None
        order = sorted(learn.cbs, key=lambda cb: getattr(cb, "order", 0))  # fastai's own sort (stable)
        ran = {slot.key for slot in handled if slot.ran == serial}
        if raiser is not None and raiser.ran == serial:
            ran.add(raiser.key)
        reached = 0
        for position, cb in enumerate(order):
            if id(cb) in ran:
                reached = position + 1
        called = {id(cb) for cb in order[:reached]}
        self.rec.no_handler[self.rec.loop + 1] += len(quiet & called)
        for slot in handled:
            if slot.ran != serial and slot.key in called:
                self.skipped(slot, event)

    # -- the firing ------------------------------------------------------------------------------

    def firing(self, learn: Learner) -> Callable[[str], Any]:
        """The `_call_one` put on the traced learner instance: records one firing around the class's (fastai's own, or
        whatever another library installed there; looked up again at each loop's start). The hot path, with the state
        it reads bound once; the trace does not hold it (the learner does, and the trace holds the learner weakly).

        Most firings take the lean path: a top-level firing (none of this trace open) of an event seen before, with
        nothing but timings to record (no ranges, no waits), that opens or closes no loop, under the recorder's row
        bound, once the learner has an epoch and an iteration; it writes its row by the recorder's `HotPath` protocol.
        Everything else takes `general_firing`, which records the same rows through the recorder's own
        `begin_firing`/`end_firing`."""
        dispatch = [type(learn)._call_one]
        general = self.general_firing(learn, dispatch)
        rec = self.rec
        hot = rec.hot_path()
        now, count, limit, cur, marks = hot.now, hot.count, hot.limit, hot.cur, hot.marks
        values, add_values = hot.values, hot.add_values
        lean, live, removed = self.lean, self.live, self.removed
        skipped, cut_short, end_firing = self.skipped, self.cut_short, rec.end_firing
        attrs = learn.__dict__

        def _call_one(event: str) -> Any:
            try:
                mode, handled, tally, eid, table = lean[event]
                epoch, iteration = attrs["epoch"], attrs["iter"]
                if mode < 0:  # fastai's own phase: Callback.__call__ reads learn.training
                    mode = 1 if attrs["training"] else 2
                index = count[0]
            except KeyError:  # an event not seen yet or not lean, or no iteration yet (before the first batch)
                index = _PAST_ANY_BOUND  # the general path, called outside this handler: no exception context
            if index >= limit[0] or live[0] is not None:
                return general(event)
            count[0] = index + 1
            # cur was -1: the recorder opens firings only for this learner, and none is open. `marks[1]` (the sibling)
            # is left as it is: a firing nested in this one checks its sibling's parent (`Recorder._sibling`)
            cur[0] = live[0] = index
            loop = rec.loop
            dur_at = len(values) + 8  # where this row's duration goes
            start = now()
            add_values((start, epoch, iteration, loop, -1, eid, mode, 0, None))
            try:
                result = dispatch[0](learn, event)
            except BaseException as error:
                live[0] = None
                status = outcome(error, CANCELS)
                cut_short(learn, table, index, event)
                end_firing(index, status)  # the recorder's own end of the row written here
                if removed:
                    self.unwrap_removed(learn)
                raise
            live[0] = None
            tally.append(None)  # `settle` and the recorder's end_firing, written out: this runs at nearly every event
            for slot in handled:
                if slot.ran != index:
                    skipped(slot, event)
            end = now()
            cur[0] = -1
            marks[0] = marks[3] = end  # the last firing closed, and the last top-level one
            marks[1] = index
            values[dur_at] = end - start
            if removed:
                self.unwrap_removed(learn)
            return result

        return _call_one

    def general_firing(self, learn: Learner, dispatch: list[Any]) -> Callable[[str], Any]:
        """`firing`'s general path: any firing (nested, a loop's first or last event, past the recorder's row bound,
        with ranges or waits to record), `dispatch[0]` the class's `_call_one` (updated here at each loop's start)."""
        rec = self.rec
        begin, end_firing = rec.begin_firing, rec.end_firing
        tables = self.tables
        live = self.live
        extras, bare, removed = self.extras, self.bare, self.removed
        table_of, settle = self.table, self.settle
        attrs = learn.__dict__

        def _call_one(event: str) -> Any:
            if event in _LOOP_EVENTS and self.starts_loop(event):
                self.loop_starts(learn, event)
                dispatch[0] = type(learn)._call_one
            table = tables.get(event)
            if table is None:
                table = table_of(learn, event)
            mode, handled = table[0], table[1]
            if mode < 0:
                mode = 1 if learn.training else 2  # fastai's own phase: Callback.__call__ reads learn.training
            if event in _BEFORE_EPOCHS:  # (a reused learner still holds the last fit's epoch and iteration)
                epoch, iteration = -1, -1
            else:
                epoch, iteration = attrs.get("epoch", -1), attrs.get("iter", -1)
            index = begin(event, mode, epoch, iteration)
            outer = live[0]
            if index < 0:  # a firing with a row is known by its index; one past the cap by a negative count
                live[1] -= 1
            serial = live[0] = index if index >= 0 else live[1]
            if outer is not None:  # nested: the marks its handlers leave are put back as it ends, for the outer one
                ran = [slot.ran for slot in handled]
            status = 0
            if extras:
                event_range = self.firing_begins(event, mode)
            try:
                return dispatch[0](learn, event)
            except BaseException as error:
                status = outcome(error, CANCELS)
                raise
            finally:
                live[0] = outer
                settle(learn, table, serial, event, status)
                if outer is not None:
                    for slot, mark in zip(handled, ran):
                        slot.ran = mark
                end_firing(index, status)
                if extras:
                    self.firing_ends(event, mode, event_range)
                if bare:
                    self.end_bare_loop(event)
                if outer is None and removed:
                    self.unwrap_removed(learn)

        return _call_one

    def loop_starts(self, learn: Learner, event: str) -> None:
        """A loop begins: recorded, and every timed handler looked up again."""
        self.start_loop(event)
        self.refresh(learn)

    # -- ranges and waits (the slow path) -------------------------------------------------------------

    def firing_begins(self, event: str, mode: int) -> Any:
        """ranges=/waits=: the work before this firing ends; the firing's range opens (while a profiler records)."""
        if self.work_wait is not None:
            self.close_work_wait(event, mode)
        if not self.ranges:
            return None
        if self.work_range is not None:
            self.close_work_range()
        return _enter_range(firing_range(RANGE_PREFIX, event, MODES[mode]), None) if _recording() else None

    def firing_ends(self, event: str, mode: int, event_range: Any) -> None:
        """ranges=/waits=: the firing's range closes; the work after it begins."""
        if self.ranges:
            if self.work_range is not None:
                self.close_work_range()
            if event_range is not None:
                _exit_range(event_range)
            if _recording():
                self.work_range = _enter_range(work_range(RANGE_PREFIX, event, WORK_AFTER.get(event)), None)
        if self.waits is not None:
            if self.work_wait is not None:
                self.close_work_wait()
            self.open_work_wait(event, mode)

    def close_work_range(self) -> None:
        """Close the range of the work since the last firing: ranges nest, so it ends before any other range does."""
        handle, self.work_range = self.work_range, None
        if handle is not None:
            _exit_range(handle)

    def open_work_wait(self, event: str, mode: int) -> None:
        """The work after an event's firing begins: watched for synchronisations until the next firing begins."""
        self.waits.open()
        self.work_wait = (self.rec.loop, self.rec.event_id(event), mode)

    def close_work_wait(self, next_event: str | None = None, mode: int = 0) -> None:
        """The open work ends as `next_event` fires in `mode` (None: as the call or trace around it ends; the work
        keeps the mode of the event before it)."""
        loop, event, before_mode = self.work_wait
        self.work_wait = None
        wait = self.waits.close()
        if wait is not None:
            following = self.rec.event_id(next_event) if next_event is not None else -1
            self.rec.waited((loop, event, mode if next_event is not None else before_mode, -1, following), wait)

    # -- one handler call, the slow path (changes=, ranges=, waits=, callbacks that override __call__) ----------

    def before_call(self, slot: Slot) -> tuple[Any, ...]:
        """What a tracked call needs when it ends: its start, its range, what the learner's state was."""
        outer_written = before = attrs = None
        if self.track:  # the learner attributes this call writes are noted by the Learner.__setattr__ wrapper
            outer_written, self.written = self.written, {}
            learn = self.learn
            attrs = learn.__dict__ if learn is not None else {}
            before = state_snapshot(attrs, self.tensors)
        opened = None
        if self.ranges and _recording():
            cb = slot.cb()
            opened = _enter_range(call_range(RANGE_PREFIX, type(cb).__name__, slot.event), None)
        if self.waits is not None:
            self.waits.open()
        return self.now(), opened, outer_written, before, attrs

    def after_call(self, slot: Slot, opened: tuple[Any, ...], error: BaseException | None) -> None:
        """Record a tracked call: its time and outcome, the waits it made, what it changed."""
        end = self.now()
        start, event_range, outer_written, before, attrs = opened
        status = RAN if error is None else outcome(error, CANCELS)
        wait = None
        if self.ranges:
            if self.work_range is not None:  # opened by a loop this handler ran
                self.close_work_range()
            if event_range is not None:
                _exit_range(event_range)
        if self.waits is not None:
            if self.work_wait is not None:  # opened by a loop this handler ran
                self.close_work_wait()
            wait = self.waits.close()
        written = None
        if self.track:
            written, self.written = self.written, outer_written
            if outer_written is not None:  # what a nested call wrote, its caller wrote too
                for name, value in written.items():
                    outer_written.setdefault(name, value)
        cid = slot.cid if slot.cid >= 0 else self.register(slot)
        if wait is not None:
            self.rec.call_waited(cid, wait)
        if self.track:
            names = changed_state(attrs, written, before, self.tensors)
            if names:
                self.rec.changed(cid, names)
        self.rec.call(cid, start, end, status)

    def overriding_call(self, cb: Callback, event: str, original: Callable[..., Any]) -> Any:
        """Time one call of a callback whose class replaces `Callback.__call__`: fastai calls it whatever its flags
        say, so every call ran. Its own `super().__call__` for the same event is part of it."""
        if self.live[0] is None or (self.calling and self.calling[-1] == (cb, event)):
            return original(cb, event)
        slot = self.slot_of(cb, "__call__")
        self.calling.append((cb, event))
        serial = self.live[0]
        opened = self.before_call(_EventSlot(slot, event))
        error: BaseException | None = None
        try:
            return original(cb, event)
        except BaseException as caught:
            error = caught
            self.raised(slot)
            raise
        finally:
            self.calling.pop()
            slot.ran = serial
            self.after_call(slot, opened, error)


class _EventSlot:
    """A slot seen with the event of one call (a callback overriding __call__ has one slot for every event)."""

    def __init__(self, slot: Slot, event: str):
        self.cb, self.event = slot.cb, event


# -- torch.profiler ranges (ranges=True) -----------------------------------------------------------

def _torch_ranges() -> tuple[Any, Any, Any]:
    import torch

    # what torch.profiler.record_function does, less its frames; a range is opened only while a profiler (or
    # emit_nvtx) records: entering one costs microseconds even when nothing records it, the check about 100 ns
    return (torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit._RecordFunction,
            torch.autograd._profiler_enabled)


_enter_range, _exit_range, _recording = _torch_ranges()
