"""Tracing real fastai fits: `with learn.trace() as t: learn.fit(...)`.

While any learner is traced, loopviz wraps whatever is installed as `Learner._call_one` (one event
firing), `Callback.__call__` (one callback call; also the `__call__` of callback classes that override
it) and the entry points (fit, validate, get_preds, lr_find, fine_tune, fit_one_cycle, to name loops).
The wrappers look the learner up in a registry and pass straight through for learners that are not
traced. The last trace to finish puts every original back, whether the fit ended, was cancelled or raised.
Nothing is attached to the learner or its callbacks, so `learn.export()` pickles no tracer.

Installing and removing the wrappers goes through `loopviz.trace.instrument` (one lock, one restore, one policy
for code that replaces a wrapper while it is installed), so traces started and finished in several threads at once
leave fastai exactly as it was. A trace holds its learner (and the callbacks it has seen)
weakly: a trace that is never exited ends when its learner is collected, or with `t.stop()`.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import torch
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastcore.basics import getcallable as fastcore_getcallable
from fastcore.basics import noop, patch
from fastcore.foundation import L

from loopviz.adapters.fastai.descriptions import WORK_BETWEEN
from loopviz.adapters.fastai.handlers import callback_info, has_handler, skip_reason
from loopviz.checks import check_bool, check_int, check_type
from loopviz.errors import LoopvizError
from loopviz.introspect import call_owner
from loopviz.trace import instrument
from loopviz.trace.clock import make_clock
from loopviz.trace.data import callback_facts
from loopviz.trace.instrument import outcome
from loopviz.trace.profiler import call_range, firing_range, work_range  # the ranges' names (ranges=True)
from loopviz.trace.record import (
    MODES, NO_HANDLER, RAN, SKIPPED, SKIPPED_TRAIN, SKIPPED_VALID, STATUS, Recorder,
)
from loopviz.trace.trace import Trace
from loopviz.trace.waits import WaitWatch, wait_watch

__all__ = ["TraceSession", "trace", "active_recorders"]

_CANCELS = tuple(
    getattr(fastai_core, name) for name in dir(fastai_core) if name.startswith("Cancel") and name.endswith("Exception")
)
_INNER = frozenset(fastai_core._inner_loop)
_BATCH_EVENTS = _INNER | {"after_cancel_step"}  # the events of a batch, whose phase is learn.training
_PHASE_MODE = {
    "before_train": 1, "after_cancel_train": 1, "after_train": 1,
    "before_validate": 2, "after_cancel_validate": 2, "after_validate": 2,
}
_SKIP_STATUS = {None: RAN, "run=False": SKIPPED, "run_train=False": SKIPPED_TRAIN, "run_valid=False": SKIPPED_VALID}
RANGE_PREFIX = "fastai"  # the name of every range this tracer opens (ranges=True) starts with it and a space
DISPATCH_LABEL = "dispatch (fastai's own)"  # the time in events that no callback's call accounts for
_ENTRY_POINTS = ("fit", "validate", "get_preds", "lr_find", "fine_tune", "fit_one_cycle")
# fastai's callback dispatch: not where a handler synchronised with the GPU (waits=True)
_DISPATCH_FILES = frozenset({fastai_core.__file__})

_ACTIVE: dict[int, "_LearnerTrace"] = {}
# The wrappers in place while any learner is traced. _ACTIVE's membership and these change under the kernel's
# lock (instrument.guarded: re-entrant, and a trace ended by the garbage collector while this thread is inside a
# guarded block is ended when the block ends).
_PATCHES = instrument.PatchSet()
_guarded = instrument.guarded
_TIMING: dict[int, "_LearnerTrace"] = {}  # id(callback) -> its trace, while its call is timed (for getcallable)
# (id(callback), event) -> its trace, for callbacks seen to have no handler for the event: their calls are counted
# through this one lookup (fastai calls every callback at every event, so most calls are these)
_QUIET: dict[tuple[int, str], "_LearnerTrace"] = {}


def active_recorders() -> int:
    """How many learners are being traced right now (0 when no loopviz wrapper is installed)."""
    return len(_ACTIVE)


class _LearnerTrace:
    """Per-learner state while tracing: the recorder plus what the wrappers need to label and classify."""

    def __init__(self, learn: Learner, recorder: Recorder, changes: bool = False, tensors: bool = False,
                 ranges: bool = False, waits: WaitWatch | None = None):
        self.learn_ref = weakref.ref(learn)
        self.learn_id = id(learn)  # the key in _ACTIVE (this state leaves it before the learner is freed)
        self.rec = recorder
        self.now = recorder.now  # the host clock every timestamp is read from
        self.known_callback = recorder.known_callback  # a callback's id in the trace, or None before its first call
        self.track = changes or tensors  # record which learner state each callback call changes
        # while a tracked call runs: learner attributes written so far -> their value before the call (else None)
        self.written: dict[str, Any] | None = None
        self.tensors = tensors  # also in-place tensor changes (version counters), at a higher cost
        # entry points open, innermost last: [name, the loop it started (-1: none yet), when it was called]
        self.entries: list[list[Any]] = []
        self.bare: list[tuple[int, str]] = []  # loops begun without an entry point: (loop, the event that ends it)
        self.seen: dict[int, Any] = {}  # id(cb) -> weak reference: a collected callback's id leaves the trace's tables
        self.handlers: dict[tuple[int, str], bool] = {}  # (id(cb), event) -> has a handler (for skipped calls only)
        self.calling: Callback | None = None  # the callback whose call is being timed
        self.calling_event = ""  # the event it was called for
        self.reached = 0  # what fastai's getcallable gave `calling`: 0 not called yet, 1 no handler, 2 a handler
        self.surprised: Callback | None = None  # a callback seen to have no handler for an event that now has one
        self.surprise_start = 0  # when fastai's getcallable gave it that handler
        self.ranges = ranges  # also open torch.profiler ranges (record_function) while a profiler is active
        self.work_range: Any = None  # the open range of the work since the last firing ended, if any
        self.waits = waits  # times the waits for the GPU of calls and work that synchronise (waits=True)
        self.extras = ranges or waits is not None  # either: the wrappers do more than record
        self.work_wait: tuple[int, int, int] | None = None  # (loop, event, mode) of the work open in `waits`, if any
        self.cursor = -1  # where the last outermost loop of the user's call ended (-1: none yet)
        self.last_outer = -1  # that loop

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
        self.bare = [(index, closing) for index, closing in self.bare if rec.loop_open(index)]
        if entry is self.entries[0]:
            if self.last_outer >= 0 and not rec.loops_open:
                rec.extend_loop(self.last_outer, end)
            self.cursor, self.last_outer = -1, -1

    @property
    def learn(self) -> Learner | None:
        """The traced learner, or None once it has been collected."""
        return self.learn_ref()

    def callback_id(self, cb: Callback) -> int:
        """The callback's id in the trace, registering it on its first call."""
        cid = self.known_callback(id(cb))
        if cid is None:
            self.watch(cb)
            cid = self.rec.callback_id(id(cb), lambda: callback_facts(callback_info(cb)))
        return cid

    def has_handler(self, cb: Callback, event: str) -> bool:
        """Whether fastai's call of `cb` for `event` would reach a handler, looked up once per callback and event."""
        key = (id(cb), event)
        found = self.handlers.get(key)
        if found is None:
            self.watch(cb)
            found = self.handlers[key] = has_handler(cb, event, self.learn)
        return found

    def no_handler_seen(self, cb: Callback, event: str) -> None:
        """Note that fastai's getcallable gave `cb` no handler for `event`: its later calls are counted, not timed."""
        self.watch(cb)
        self.handlers[(id(cb), event)] = False
        _QUIET[(id(cb), event)] = self

    def watch(self, cb: Callback) -> None:
        """Forget what is keyed by the callback's id when it is collected, so a new object reusing the id is new."""
        key = id(cb)
        if key in self.seen:
            return
        try:
            self.seen[key] = weakref.ref(cb, lambda _, key=key: self.forget(key))
        except TypeError:  # a callback class with __slots__ and no __weakref__: keep it, its id stays its own
            self.seen[key] = cb

    def forget(self, key: int) -> None:
        """Drop a collected callback's entries keyed by its id (its records keep their trace ids)."""
        self.seen.pop(key, None)
        self.rec.forget_callback(key)
        for found in [k for k in list(self.handlers) if k[0] == key]:
            self.handlers.pop(found, None)
            if _QUIET.get(found) is self:
                _QUIET.pop(found, None)

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

    def forget_all(self) -> None:
        """Drop this trace's entries from the tables every trace shares (when it ends)."""
        for found in [k for k, state in list(_QUIET.items()) if state is self]:
            _QUIET.pop(found, None)


def skipped_status(cb: Callback, event: str, run: bool) -> int | None:
    """Why fastai's `Callback.__call__` did not reach `cb`'s handler: `run` as it was when called (fastai resets it
    at after_fit), the other flags and `training` as the callback sees them; None when they would let it run."""
    reason = skip_reason(run, cb.run_train, cb.run_valid, event, bool(getattr(cb, "training", True)), _INNER)
    return None if reason is None else _SKIP_STATUS[reason]


_MISSING_VALUE = object()


# What a tracked call changed: the learner attributes it rebound, added or deleted are seen as they are written (the
# wrapped Learner.__setattr__/__delattr__ note each one's value before the call's first write); the optimizer's
# hyper-parameters, which are plain dicts written in place, and tensor version counters are compared before and after.
Snapshot = tuple[Any, list[dict[str, Any]], dict[str, Any]]


def state_snapshot(attrs: dict[str, Any], tensors: bool) -> Snapshot:
    """What a tracked call's outcome is compared with, from the learner's `__dict__`: the optimizer, its
    hyper-parameters (copied) and, with `tensors`, the tensor version counters (cheap fingerprints of in-place changes)."""
    opt = attrs.get("opt")
    return opt, list(map(dict, _hyper_dicts(opt))), _tensor_versions(attrs) if tensors else {}


def _hyper_dicts(opt: Any) -> list[dict[str, Any]]:
    """The optimizer's hyper-parameter dicts (one per parameter group), as the list that holds them (fastai keeps
    them in an `L`, whose own iteration is Python code)."""
    hypers = getattr(opt, "hypers", None) if opt is not None else None
    return hypers.items if isinstance(hypers, L) else list(hypers or ())


def changed_state(attrs: dict[str, Any], written: dict[str, Any], before: Snapshot, tensors: bool) -> list[str]:
    """Names of what changed, from the learner's `__dict__`: learn.<attr> rebound, added or deleted (by identity:
    written back as it was is no change); learn.opt.hypers.<name> (by value); with `tensors`, '<name> (in place)'
    for tensors modified in place."""
    names = [f"learn.{k}" for k, old in written.items() if attrs.get(k, _MISSING_VALUE) is not old] if written else []
    opt_before, hypers_before, versions_before = before
    opt = attrs.get("opt")
    if opt is not None and opt is opt_before and hypers_before:
        hypers = _hyper_dicts(opt)
        if hypers != hypers_before:  # most calls change no hyper-parameter: one comparison of the lists, in C
            keys: list[str] = []
            for old, new in zip(hypers_before, hypers):
                keys += [k for k, v in new.items() if k not in keys and old.get(k, _MISSING_VALUE) != v]
            names += [f"learn.opt.hypers.{k}" for k in keys]
    if tensors:
        versions = _tensor_versions(attrs)
        names += [f"{k} (in place)" for k, v in versions.items()
                  if k in versions_before and versions_before[k] != v and f"learn.{k.split('.')[1]}" not in names]
    return names


def _tensor_versions(attrs: dict[str, Any]) -> dict[str, Any]:
    """Version counters (bumped by every in-place op) of the learner's tensors and of the model's gradients."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, torch.Tensor):
            out[f"learn.{key}"] = value._version
        elif isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            out[f"learn.{key}"] = tuple(v._version for v in value)
    model = attrs.get("model")
    if model is not None:
        out["learn.model.grads"] = tuple(-1 if p.grad is None else p.grad._version for p in model.parameters())
        out["learn.model.parameters"] = tuple(p._version for p in model.parameters())
    return out


# -- torch.profiler ranges (ranges=True) -----------------------------------------------------------

_enter_range = torch.ops.profiler._record_function_enter_new  # what torch.profiler.record_function does, less its frames
_exit_range = torch.ops.profiler._record_function_exit._RecordFunction


_recording = torch.autograd._profiler_enabled  # a range is opened only while a profiler (or emit_nvtx) records:
# entering one costs microseconds even when nothing records it, the check about 100 ns


def _close_work_range(state: _LearnerTrace) -> None:
    """Close the range of the work since the last firing: ranges nest, so it ends before any other range does."""
    handle, state.work_range = state.work_range, None
    if handle is not None:
        _exit_range(handle)


# -- the wrappers ---------------------------------------------------------------------------------


def _wrap_call_one(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _call_one(self: Learner, event_name: str) -> Any:
        state = _ACTIVE.get(id(self))
        if state is None:
            return original(self, event_name)
        if (event_name == "before_fit" or event_name == "before_validate") and state.starts_loop(event_name):
            state.start_loop(event_name)
            if event_name == "before_fit":
                _patch_overriding_classes(self)
        d = self.__dict__
        mode = _PHASE_MODE.get(event_name, 0)
        if event_name in _BATCH_EVENTS:
            mode = 1 if self.training else 2  # fastai's own phase: Callback.__call__ reads learn.training
        rec = state.rec
        index = rec.begin_firing(event_name, mode, d.get("epoch", -1), d.get("iter", -1))
        status = 0
        extras = state.extras  # ranges=True or waits=True: one check at every event when neither
        if extras:
            if state.work_wait is not None:
                state.close_work_wait(event_name, mode)
            if state.ranges:  # names are made only while a profiler records
                if state.work_range is not None:
                    _close_work_range(state)
                event_range = (_enter_range(firing_range(RANGE_PREFIX, event_name, MODES[mode]), None)
                               if _recording() else None)
        # The outcome bookkeeping is written out here and in the callback wrapper, not shared through a
        # helper or a context manager: this runs at every event and every callback call.
        try:
            return original(self, event_name)
        except BaseException as error:
            status = outcome(error, _CANCELS)
            raise
        finally:
            rec.end_firing(index, status)
            if extras:
                if state.ranges:
                    if state.work_range is not None:
                        _close_work_range(state)
                    if event_range is not None:
                        _exit_range(event_range)
                    if _recording():
                        state.work_range = _enter_range(work_range(RANGE_PREFIX, event_name), None)
                if state.waits is not None:
                    if state.work_wait is not None:
                        state.close_work_wait()
                    state.open_work_wait(event_name, mode)
            if state.bare:
                state.end_bare_loop(event_name)

    _call_one.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return _call_one


def _wrap_callback_call(original: Callable[..., Any], replaces_call: bool = False) -> Callable[..., Any]:
    """A `__call__` that times the call and records what fastai did with it: whether its getcallable reached a
    handler, found none, or was never asked (the run flags said no). `replaces_call`: the wrapped `__call__`
    is a callback class's own, which fastai calls whatever its flags say, so every call of it ran."""

    @functools.wraps(original)
    def __call__(self: Callback, event_name: str) -> Any:
        quiet = _QUIET.get((id(self), event_name)) if not replaces_call else None
        if quiet is not None and quiet.calling is not self and id(self.learn) == quiet.learn_id:
            # Seen before to have no handler for this event (fastai's getcallable gave noop): counted, not timed.
            # Should getcallable now give it a handler, its wrapper notes when, and the call is recorded after all.
            try:
                return original(self, event_name)
            finally:
                if quiet.surprised is self:
                    quiet.surprised = None
                    quiet.rec.call(quiet.callback_id(self), quiet.surprise_start, quiet.now(), RAN)
                else:  # Recorder.no_handler_call, inline: this is most of fastai's callback calls
                    rec = quiet.rec
                    rec.no_handler[rec.loop + 1] += 1
        learn = self.__dict__.get("learn")
        state = _ACTIVE.get(id(learn)) if learn is not None else None
        if state is None or (state.calling is self and state.calling_event == event_name):
            return original(self, event_name)  # not traced, or super().__call__ from an overriding class
        # A call inside another call of the same callback for another event (its handler ran a loop, such as
        # get_preds, that fires events at it again) is a call of its own.
        key = id(self)
        outer_calling, outer_reached, outer_event = state.calling, state.reached, state.calling_event
        state.calling, state.reached, state.calling_event = self, 0, event_name
        _TIMING[key] = state
        if state.track:  # the learner attributes this call writes are noted by the Learner.__setattr__ wrapper
            outer_written, state.written = state.written, {}
            attrs = learn.__dict__
            before = state_snapshot(attrs, state.tensors)
        status = RAN
        run = self.run
        extras = state.extras
        if extras:
            opened = (_enter_range(call_range(RANGE_PREFIX, type(self).__name__, event_name), None)
                      if state.ranges and _recording() else None)
            if state.waits is not None:
                state.waits.open()
        now = state.now
        start = now()
        try:
            return original(self, event_name)
        except BaseException as error:
            status = outcome(error, _CANCELS)
            raise
        finally:
            end = now()
            wait = None
            if extras:
                if state.ranges:
                    if state.work_range is not None:  # opened by a loop this handler ran
                        _close_work_range(state)
                    if opened is not None:
                        _exit_range(opened)
                if state.waits is not None:
                    if state.work_wait is not None:  # opened by a loop this handler ran
                        state.close_work_wait()
                    wait = state.waits.close()
            reached = state.reached
            state.calling, state.reached, state.calling_event = outer_calling, outer_reached, outer_event
            _TIMING.pop(key, None)  # getcallable is asked once, as a call starts: an outer call of it needs it no more
            if state.track:
                written, state.written = state.written, outer_written
                if outer_written is not None:  # what a nested call wrote, its caller wrote too
                    for name, value in written.items():
                        outer_written.setdefault(name, value)
            if not replaces_call and reached != 2:
                if reached == 1:
                    status = NO_HANDLER
                    state.no_handler_seen(self, event_name)
                elif not state.has_handler(self, event_name):
                    status = NO_HANDLER
                else:  # fastai never asked for the handler: its run flags said no (or a foreign __call__ ran it)
                    status = skipped_status(self, event_name, run) or status
            if status == NO_HANDLER:  # fastai calls every callback at every event: counted, not recorded one by one
                state.rec.no_handler_call()
            else:
                cid = state.callback_id(self)
                if wait is not None:
                    state.rec.call_waited(cid, wait)
                if state.track:
                    names = changed_state(attrs, written, before, state.tensors)
                    if names:
                        state.rec.changed(cid, names)
                state.rec.call(cid, start, end, status)

    __call__.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return __call__


def _wrap_getcallable(original: Callable[..., Any]) -> Callable[..., Any]:
    """fastai's `getcallable`, which `Callback.__call__` asks for the handler only when its run flags allow:
    the point where fastai decides, so the tracer notes what it gave the callback being timed."""

    # fastcore's own getcallable is `getattr(o, attr, noop)`: done here, it costs no frame of its own (this runs at
    # every callback call fastai makes); anything else installed there is called
    own = original is fastcore_getcallable

    @functools.wraps(original)
    def getcallable(o: Any, attr: str) -> Any:
        found = getattr(o, attr, noop) if own else original(o, attr)
        state = _TIMING.get(id(o)) if _TIMING else None  # mostly empty: no call is being timed
        if state is not None and state.calling is o:
            state.reached = 1 if found is noop else 2
        elif found is not noop and _QUIET:
            _handler_appeared(o, attr)
        return found

    getcallable.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return getcallable


def _wrap_attribute_write(original: Callable[..., Any]) -> Callable[..., Any]:
    """Learner's `__setattr__` or `__delattr__` while a trace records changes: a write (`value` given) or delete
    during a tracked callback call notes the attribute's value before the call's first write to it."""

    @functools.wraps(original)
    def write(self: Learner, name: str, *value: Any) -> None:
        state = _ACTIVE.get(id(self))
        written = state.written if state is not None else None
        if written is None or name in written:
            return original(self, name, *value)
        old = self.__dict__.get(name, _MISSING_VALUE)
        original(self, name, *value)
        written[name] = old

    write.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return write


def _handler_appeared(o: Any, attr: str) -> None:
    """fastai found a handler on a traced callback that was seen to have none for this event (one set on it since):
    its cached answer is dropped, and its call, being counted only, is recorded after all."""
    state = _QUIET.pop((id(o), attr), None)
    if state is not None:
        state.handlers[(id(o), attr)] = True
        state.surprised, state.surprise_start = o, state.now()


def _wrap_entry(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def entry(self: Learner, *args: Any, **kwargs: Any) -> Any:
        state = _ACTIVE.get(id(self))
        if state is None:
            return original(self, *args, **kwargs)
        opened = [name, -1, state.now()]
        state.entries.append(opened)
        try:
            return original(self, *args, **kwargs)
        finally:
            state.end_entry(opened, state.now())
            state.entries.pop()

    entry.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return entry


# -- installing and removing ----------------------------------------------------------------------


def _install_all() -> None:
    _PATCHES.install(Learner, "_call_one", _wrap_call_one)
    _PATCHES.install(Callback, "__call__", _wrap_callback_call)
    _PATCHES.install(fastai_core, "getcallable", _wrap_getcallable)
    for name in _ENTRY_POINTS:
        if hasattr(Learner, name):
            _PATCHES.install(Learner, name, lambda original, name=name: _wrap_entry(name, original))


def _patch_overriding_classes(learn: Learner) -> None:
    """Wrap `__call__` of callback classes that replace it (they bypass `Callback.__call__`)."""
    with _guarded():
        if not len(_PATCHES):
            return  # every trace ended (in another thread) while this fit was starting
        for cb in learn.cbs:
            owner = call_owner(type(cb))
            if owner is not None and owner is not Callback and (id(owner), "__call__") not in _PATCHES:
                _PATCHES.install(owner, "__call__", lambda original: _wrap_callback_call(original, replaces_call=True))


def _start(key: int, state: _LearnerTrace) -> None:
    """Register a learner's trace, installing the wrappers if it is the first."""
    with _guarded():
        if key in _ACTIVE:
            raise LoopvizError(
                "this learner is already being traced: a trace cannot start inside another trace of the same "
                "learner. Use the outer trace, or finish it first."
            )
        if not _ACTIVE:
            _install_all()
        if state.track:
            _PATCHES.install(Learner, "__setattr__", _wrap_attribute_write)
            _PATCHES.install(Learner, "__delattr__", _wrap_attribute_write)
        _ACTIVE[key] = state


def _end(key: int, state: _LearnerTrace, trace: Trace) -> None:
    """End a learner's trace (now, or when this thread's guarded block ends if the garbage collector ended it there)."""
    instrument.run_or_defer(lambda: _finish(key, state, trace))


def _finish(key: int, state: _LearnerTrace, trace: Trace) -> None:
    """Unregister a learner's trace, remove the wrappers if it was the last, and finish the trace."""
    _close_work_range(state)
    if state.waits is not None:
        if state.work_wait is not None:
            state.close_work_wait()
        state.waits.stop()
    with _guarded():
        if _ACTIVE.get(key) is state:
            del _ACTIVE[key]
            if not _ACTIVE:
                _PATCHES.restore()
    state.forget_all()
    trace.finish(framework=_fastai_version(), work_names=WORK_BETWEEN)


class TraceSession:
    """Context manager returned by `learn.trace()`: records everything the learner does inside it.

    It holds the learner weakly; the trace ends when the block exits, when `t.stop()` is called, or when
    the learner is collected, whichever comes first."""

    def __init__(self, learn: Learner, clock: str = "auto", max_calls: int = 1_000_000, max_firings: int = 250_000,
                 changes: bool = False, tensors: bool = False, ranges: bool = False, waits: bool = False,
                 now: Callable[[], int] | None = None):
        check_type("learn", learn, Learner, "a fastai Learner")
        self.max_calls = check_int("max_calls", max_calls)
        self.max_firings = check_int("max_firings", max_firings)
        self.changes, self.tensors = check_bool("changes", changes), check_bool("tensors", tensors)
        self.ranges = check_bool("ranges", ranges)
        self.waits = wait_watch(_DISPATCH_FILES) if check_bool("waits", waits) else None
        self.learn_ref = weakref.ref(learn)
        self.clock = make_clock(clock, _model_device(learn))
        # `now`: the host clock (ns) of every timestamp, time.perf_counter_ns unless a test injects a deterministic one
        self.recorder = Recorder(self.clock, max_calls=self.max_calls, max_firings=self.max_firings, now=now)
        self.recorder.vocabulary(dispatch_label=DISPATCH_LABEL, range_prefix=RANGE_PREFIX,
                                 batch_events=("before_batch", "after_batch"),
                                 skip_statuses={STATUS[code]: why for why, code in _SKIP_STATUS.items() if why})
        self.trace = Trace.recording(self.recorder, stop=self._stop)
        self.trace.tracked_changes = self.changes or self.tensors
        self.trace.tracked_waits = self.waits is not None
        self.trace.meta.update(ranges=self.ranges, tensors=self.tensors)  # so a diff can tell traces recorded apart
        self._ending: weakref.finalize | None = None

    def __enter__(self) -> Trace:
        learn = self.learn_ref()
        if self._ending is not None or learn is None:
            raise LoopvizError("this trace session has been used; start a new one with `learn.trace()`.")
        state = _LearnerTrace(learn, self.recorder, changes=self.changes, tensors=self.tensors, ranges=self.ranges,
                              waits=self.waits)
        if self.waits is not None:
            self.waits.start()
        try:
            _start(id(learn), state)
        except BaseException:
            if self.waits is not None:
                self.waits.stop()
            raise
        # Ends the trace once: on exit, on t.stop(), or when the learner is collected (the finalizer holds
        # the state and the trace, which hold the learner only weakly).
        self._ending = weakref.finalize(learn, _end, id(learn), state, self.trace)
        try:
            _patch_overriding_classes(learn)
        except BaseException:
            self._stop()
            raise
        return self.trace

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._ending is not None:
            self._ending()


def _model_device(learn: Learner) -> str:
    try:
        return str(next(learn.model.parameters()).device)
    except (StopIteration, AttributeError):
        return "cpu"


def _fastai_version() -> str:
    import fastai

    return f"fastai {fastai.__version__}"


@patch
def trace(
    self: Learner,
    clock: str = "auto",  # 'auto' (cuda events when the model is on a GPU, else host), 'host', 'cuda' or 'sync'
    max_calls: int = 1_000_000,  # Raw callback-call records kept (24 bytes each); past it, aggregates only
    max_firings: int = 250_000,  # Raw event-firing records kept (32 bytes each); past it, aggregates only
    changes: bool = False,  # Also record which learner attributes (and optimizer hyper-parameters) each callback call changes
    tensors: bool = False,  # Also record tensors changed in place (loss_grad, gradients, parameters...): costlier
    ranges: bool = False,  # Also open a torch.profiler range (record_function) per event, handler call and piece of work, while a profiler (or emit_nvtx) is recording
    waits: bool = False,  # Also find the callback calls and work that make the host wait for the GPU (.item(), .cpu(), printing a tensor), and how long: needs CUDA
) -> TraceSession:
    "Record every event firing, callback call and the work between events of what runs inside `with`"
    return TraceSession(self, clock=clock, max_calls=max_calls, max_firings=max_firings, changes=changes,
                        tensors=tensors, ranges=ranges, waits=waits)
