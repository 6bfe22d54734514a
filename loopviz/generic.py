"""Describe and trace any callback-driven loop, not only fastai's.

Describe: build a `LoopSpec` from phases, events, work and cancel paths, with each event's handlers
read from your callback objects (a method named after the event) in the order your loop calls them:

    spec = loop_spec("fit", "my trainer 1.0", cbs, [
        phase("fit", "Fit", [event("before_fit", "Training starts", cbs), ...], cancel=cancel("CancelFit", "after_fit")),
    ])

Trace: `DispatchTracer(obj, "callback", callbacks=lambda: obj.cbs)` wraps the one method your loop
dispatches every event through (on that object only) and, per event, the callbacks' handler
methods (on those instances only: a callback without a handler for an event costs nothing extra when it fires; the
handlers are looked for when an event first fires, and again when the callback list changes or a loop starts), and
gives back a `Trace`; everything is put back at the end, or, for a
trace never exited, when the object is collected (the tracer holds it weakly). A callback shared by two traced
objects is timed by each trace for its own object's dispatches only.
Every view and report of loopviz works on both.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Iterable, Sequence

from loopviz import introspect
from loopviz.checks import check_int
from loopviz.errors import LoopvizError
from loopviz.model import CallbackInfo, CancelPath, Event, Handler, LoopSpec, Mode, Phase, Role, Step, Work
from loopviz.trace.clock import Clock, make_clock
from loopviz.trace.cost import STAND_IN_EVENTS, measure, on_test_clock
from loopviz.trace import instrument
from loopviz.trace.instrument import PatchSet, invisible, outcome
from loopviz.trace.data import callback_facts
from loopviz.trace.record import RAN, Recorder
from loopviz.trace.trace import Trace

__all__ = ["callback_info", "from_base", "handler", "event", "work", "phase", "cancel", "loop_spec", "DispatchTracer"]

_DISPATCHING = instrument.DispatchStack()  # the recordings whose dispatch this thread is inside, innermost last


class _Recording:
    """What a DispatchTracer's handler wrappers, its trace and its ending share: its patches and its trace, nothing
    of the traced loop, so that neither a callback that outlives the loop nor the trace keeps the loop alive."""

    def __init__(self, rec: Recorder, finish: dict[str, Any], measure_cost: Callable[[], dict[str, Any]] | None = None,
                 start: Callable[[], Any] | None = None):
        self.rec, self.finish = rec, finish
        self.patches = PatchSet()  # the wrapped dispatch method and the timed handlers (instrumentation kernel)
        self.trace = Trace.recording(rec, stop=self.end, measure_cost=measure_cost, start=start)
        self.active = False
        self.ending: Callable[[], Any] | None = None  # ends it once (a weakref.finalize of the traced object)
        self.closing: list[Callable[[Any], None]] = []  # run with the trace's data as it ends, before the patches go

    def start(self, obj: Any) -> None:
        """Mark it recording; it ends when `end()` is called or `obj` is collected, whichever comes first."""
        self.active = True
        try:
            self.ending = weakref.finalize(obj, instrument.run_or_defer, self._finish)
        except TypeError:  # an object without __weakref__: it ends on exit only
            self.ending = self._finish

    def end(self) -> None:
        """End the recording (once): put everything back and finish the trace."""
        if self.ending is not None:
            self.ending()

    def _finish(self) -> None:
        with instrument.guarded():
            if not self.active:
                return
            self.active = False
        try:
            for close in self.closing:
                close(self.trace.data)
        finally:
            self.patches.restore()
            self.trace.finish(**self.finish)


def _bases(base: type | None) -> tuple[type, ...]:
    """The framework's callback base class as `loopviz.introspect` takes it."""
    return () if base is None else (base,)


def callback_info(cb: Any, order: Callable[[Any], float] = lambda cb: getattr(cb, "order", 0), base: type | None = None) -> CallbackInfo:
    """The facts about one callback object; `base` is your framework's callback base class, whose doc is not the callback's."""
    return introspect.callback_info(cb, base_classes=_bases(base), order=order)


def from_base(cb: Any, name: str, base: type | None) -> bool:
    """True when the callback's `name` is the base class's own method, not overridden: a no-op, not a handler."""
    if base is None or name in getattr(cb, "__dict__", {}):
        return False
    owner = next((klass for klass in type(cb).__mro__ if name in klass.__dict__), None)
    return owner is not None and owner is not object and owner in base.__mro__


def handler(cb: Any, event_name: str, info: CallbackInfo | None = None, base: type | None = None) -> Handler | None:
    """The callback's handler for an event (a method or attribute named after it), or None; a method only `base`
    defines (its no-op) is none."""
    found = introspect.lookup(cb, event_name)
    if found is None or not callable(found.handler) or from_base(cb, event_name, base):
        return None
    return introspect.describe(found, event_name, info or callback_info(cb, base=base), _bases(base))


def event(name: str, description: str, cbs: Sequence[Any] = (), *, role: Role = "body", mode: Mode | None = None,
          cancel: CancelPath | None = None, base: type | None = None,
          order: Callable[[Any], float] | None = None) -> Event:
    """An event and the handlers of `cbs` (given in the order the loop calls them); `order`: each callback's order as
    the loop's spec gives it (`loop_spec(order=...)`), so that a handler and the callbacks' list say the same."""
    found = [handler(cb, name, callback_info(cb, order, base) if order is not None else None, base) for cb in cbs]
    return Event(name, description, [h for h in found if h is not None], role=role, cancel=cancel, mode=mode)


def work(name: str, code: str = "", description: str = "", condition: str | None = None) -> Work:
    """Work the loop does between two events."""
    return Work(name, code, description, condition)


def phase(name: str, label: str, steps: Iterable[Step], *, repeat: str | None = None, cancel: CancelPath | None = None,
          mode: Mode | None = None, note: str | None = None) -> Phase:
    """A phase with its steps in firing order."""
    return Phase(name, label, list(steps), repeat=repeat, cancel=cancel, mode=mode, note=note)


def cancel(exception: str, resumes_at: str, handler_event: str | None = None, description: str = "") -> CancelPath:
    """A cancel path: the exception, the event that handles it (if any), and where the loop resumes."""
    return CancelPath(exception, handler_event, resumes_at, description)


def loop_spec(loop: str, framework: str, cbs: Sequence[Any], phases: list[Phase], *,
              order: Callable[[Any], float] = lambda cb: getattr(cb, "order", 0), base: type | None = None,
              notes: Sequence[str] = ()) -> LoopSpec:
    """A whole loop: its phases and its callbacks (listed in call order)."""
    return LoopSpec(loop=loop, framework=framework, phases=phases,
                    callbacks=[callback_info(cb, order, base) for cb in cbs], notes=list(notes))


class DispatchTracer:
    """Trace a loop that dispatches every event through one method of one object.

    Args:
        obj: the object whose method dispatches events (a learner, a trainer...).
        method: that method's name; its argument `event_arg` (position, after self) is the event name.
        callbacks: returns the callback objects; for each event, their methods named after it are timed.
        framework: a name for reports, e.g. "miniai".
        loop_start: events that begin a new loop (each fit).
        mode: `mode(obj, event) -> 0/1/2` (none/train/valid), to split train and valid in reports.
        position: `position(obj) -> (epoch, iteration)`.
        where: `where(obj, event) -> (mode, epoch, iteration)`, in place of `mode` and `position` (one call per
            firing instead of two).
        work_names: names for the work between two consecutive events, {(before, after): name}.
        base: the framework's callback base class: its own (no-op) methods are counted as calls without a
            handler, not timed, and its doc is not a callback's.
        batch_events: the events that open and close a batch, if not before_batch and after_batch (for the
            per-batch charts of the plots and the HTML report).
        now: the host clock (ns) of every timestamp; time.perf_counter_ns unless a test injects a deterministic one.
        cancels: the exception classes that cancel part of the loop (a call or firing they end is 'cancelled', any
            other exception an 'error'); None: every exception class whose name starts with 'Cancel'.
        advice: what `t.diagnose()` says in this loop's words: its work names, per-batch events, own callbacks and
            fixes (the keys of `loopviz.trace.diagnose.ADVICE_KEYS`); None: framework-neutral words.
        measure_cost: measures what this tracer adds per firing and per handler call (`loopviz.trace.cost`), called
            once when the trace is first read; None: a stand-in loop's events dispatched through a DispatchTracer.
    """

    def __init__(self, obj: Any, method: str = "callback", *, callbacks: Callable[[], Iterable[Any]] = lambda: (),
                 framework: str = "", loop_start: Sequence[str] = ("before_fit",),
                 mode: Callable[[Any, str], int] = lambda obj, event: 0,
                 position: Callable[[Any], tuple[int, int]] = lambda obj: (getattr(obj, "epoch", -1), getattr(obj, "iter", -1)),
                 work_names: dict[tuple[str, str], str] | None = None, event_arg: int = 0, clock: Clock | None = None,
                 max_calls: int = 1_000_000, max_firings: int = 250_000, base: type | None = None,
                 batch_events: tuple[str, str] | None = None, now: Callable[[], int] | None = None,
                 cancels: tuple[type[BaseException], ...] | None = None,
                 where: Callable[[Any, str], tuple[int, int, int]] | None = None,
                 advice: dict[str, Any] | None = None, measure_cost: Callable[[], dict[str, Any]] | None = None):
        if not callable(getattr(obj, method, None)):
            raise LoopvizError(f"{type(obj).__name__} has no method {method!r} to trace; pass the name of its dispatch method.")
        self._obj = _weak(obj)
        self.method, self.callbacks = method, callbacks
        self.framework, self.loop_start, self.mode, self.position = framework, set(loop_start), mode, position
        self.where = where
        self.work_names, self.event_arg = dict(work_names or {}), event_arg
        self.base = base
        self.cancels = cancels
        self.batch_events = batch_events
        self.rec = Recorder(clock, max_calls=check_int("max_calls", max_calls),
                            max_firings=check_int("max_firings", max_firings), now=now)
        measured = measure_cost or (on_test_clock if now is not None else
                                    functools.partial(_measured_cost, self.rec.clock.name))
        self.recording = _Recording(self.rec, dict(framework=framework, work_names=self.work_names,
                                                   batch_events=batch_events, advice=advice), measured,
                                    start=self.__enter__)
        self.trace, self.patches = self.recording.trace, self.recording.patches
        # event -> (the callbacks its plan is for, a tally of its firings' base no-op calls, its row id): see `_plan`
        self.plans: dict[str, tuple[list[Any], list[None], int]] = {}

    @property
    def obj(self) -> Any:
        """The traced object (None once it has been collected)."""
        return self._obj()

    @property
    def active(self) -> bool:
        """True while the trace records."""
        return self.recording.active

    def __enter__(self) -> Trace:
        obj = self.obj
        if self.recording.ending is not None or obj is None:
            raise LoopvizError("this tracer has been used; start a new one.")
        if getattr(obj.__dict__.get(self.method), "__loopviz_wrapper__", False):
            raise LoopvizError(f"{type(obj).__name__}.{self.method} is already being traced; finish that trace first.")
        self.patches.put(obj, self.method, self._dispatch_wrapper(getattr(obj, self.method)))
        self.recording.start(obj)
        self.trace.started()
        return self.trace

    def __exit__(self, *exc: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        self.recording.end()

    def _dispatch_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        # The hot path: everything it reads is bound here once. Per event, a plan (the callbacks it was made for, a
        # tally of the firings that call those with only the base class's no-op, the event's row id) is made when the
        # event first fires, and again when the callback list changes or a loop starts; a callback without a handler
        # then costs nothing per firing. A firing with a row is recorded in this frame, by the recorder's `HotPath`.
        rec, recording, plans = self.rec, self.recording, self.plans
        hot = rec.hot_path()
        now, count, limit, cur, marks, values, add_values = (
            hot.now, hot.count, hot.limit, hot.cur, hot.marks, hot.values, hot.add_values)
        begin_firing, end_firing = rec.begin_firing, rec.end_firing
        event_arg, loop_start, framework = self.event_arg, self.loop_start, self.framework or "loop"
        callbacks, mode, position, target, cancels = self.callbacks, self.mode, self.position, self._obj, self.cancels
        where = self.where
        plan_for, stack = self._plan, _DISPATCHING

        def full(name: str, phase: int, epoch: int, iteration: int, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
            """A firing on the recorder's full path (past its row bound or cap, an event a row cannot name)."""
            index = begin_firing(name, phase, epoch, iteration)
            recordings = stack.inside
            recordings.append(recording)
            try:
                result = original(*args, **kwargs)
            except BaseException as error:
                recordings.pop()
                end_firing(index, outcome(error, cancels))
                raise
            recordings.pop()
            end_firing(index, 0)
            return result

        @functools.wraps(original)
        def dispatch(*args: Any, **kwargs: Any) -> Any:
            name = args[event_arg] if len(args) > event_arg else kwargs.get("method_nm", kwargs.get("event"))
            if name.__class__ is not str and not isinstance(name, str):
                return original(*args, **kwargs)
            loop = rec.loop
            if name in loop_start:
                self.forget_plans()
                loop = rec.begin_loop(name.removeprefix("before_"))
            elif loop < 0:
                loop = rec.begin_loop(framework)
            cbs = callbacks()
            try:
                snapshot, tally, eid = plans[name]
            except KeyError:  # (a plan made outside this clause: an exception in it carries no KeyError context)
                snapshot = None
            if snapshot is None or snapshot != cbs:
                _, tally, eid = plan_for(name, cbs)
            tally.append(None)  # its calls to callbacks with only the base no-op (`Recorder.no_handler_tally`)
            obj = target()
            if where is not None:
                phase, epoch, iteration = where(obj, name)
            else:
                epoch, iteration = position(obj)
                phase = mode(obj, name)
            if epoch.__class__ is not int:
                epoch = _int(epoch)
            if iteration.__class__ is not int:
                iteration = _int(iteration)
            index = count[0]
            if eid < 0 or index >= limit[0]:
                return full(name, phase, epoch, iteration, args, kwargs)
            count[0] = index + 1  # the recorder's begin_firing, written out (`HotPath`; the sibling mark may stay)
            parent = cur[0]
            cur[0] = index
            at = len(values)
            start = now()
            add_values((start, epoch, iteration, loop, parent, eid, phase, 0, None))
            recordings = stack.inside
            recordings.append(recording)
            try:
                result = original(*args, **kwargs) if kwargs else original(*args)  # (no empty dict to unpack)
            except BaseException as error:
                recordings.pop()
                end_firing(index, outcome(error, cancels))  # the recorder's own end of the row written here
                raise
            recordings.pop()
            end = now()  # the recorder's end_firing, written out (`HotPath`)
            cur[0] = parent
            marks[0] = end
            marks[1] = index
            if parent < 0:
                marks[3] = end
            values[at + 8] = end - start
            return result

        dispatch.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
        return dispatch

    def forget_plans(self) -> None:
        """Forget every event's plan (a loop starts: the handlers are looked for again)."""
        for _, tally, _ in self.plans.values():
            self.rec.drop_tally(tally)
        self.plans.clear()

    def _plan(self, name: str, cbs: Iterable[Any]) -> tuple[list[Any], list[None], int]:
        """Time the handlers of this event (once per callback) and count the callbacks with only the base no-op; kept
        as the event's plan until the callback list changes or a loop starts."""
        snapshot = list(cbs)
        self._wrap_handlers(name, snapshot)
        old = self.plans.get(name)
        if old is not None:
            self.rec.drop_tally(old[1])
        quiet = sum(1 for cb in snapshot if from_base(cb, name, self.base))
        plan = self.plans[name] = (snapshot, self.rec.no_handler_tally(quiet), self.rec.short_id(name))
        return plan  # (callbacks() giving anything but a list never compares equal to it: a plan per firing then)

    def _wrap_handlers(self, name: str, cbs: Iterable[Any]) -> None:
        """Time each callback's handler for this event, by an attribute on that callback instance."""
        for cb in cbs:
            key = (id(cb), name)
            if key in self.patches or not hasattr(cb, "__dict__"):
                continue
            found = introspect.lookup(cb, name)
            if found is None or not callable(found.handler) or from_base(cb, name, self.base):
                continue
            cid = self.rec.callback_id(id(cb), lambda cb=cb: callback_facts(callback_info(cb, base=self.base)))
            self.patches.put(cb, name, self._timed(found.handler, cid))

    def _timed(self, fn: Callable[..., Any], cid: int) -> Callable[..., Any]:
        # closes over the recording, not the tracer: a callback outliving the traced loop must not keep it alive
        recording, cancels, stack = self.recording, self.cancels, _DISPATCHING
        hot = self.rec.hot_path()
        now, call, cur, calls, add_call, call_limit = hot.now, hot.call, hot.cur, hot.calls, hot.add_call, hot.call_limit

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            recordings = stack.inside
            if not recordings or recordings[-1] is not recording or not recording.active:  # another loop's call
                return fn(*args, **kwargs)
            start = now()
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                call(cid, start, now(), outcome(error, cancels))
                raise
            end = now()
            if len(calls) < call_limit[0]:  # inside its dispatch, a firing is open: this says it has a row (`HotPath`)
                add_call((start, cur[0], cid, end - start, RAN))
            else:
                call(cid, start, end, RAN)
            return result

        return invisible(timed, fn)


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference to `obj`, or a strong one where it takes none."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class _StandInHandler:
    """A callback whose handlers for the stand-in's events do nothing."""

    def before_batch(self) -> None: pass
    def after_pred(self) -> None: pass
    def after_loss(self) -> None: pass
    def after_backward(self) -> None: pass
    def after_step(self) -> None: pass
    def after_batch(self) -> None: pass


class _StandInLoop:
    """The least a dispatching loop does: call each callback's handler for the event."""

    def __init__(self, callbacks: int):
        self.cbs = [_StandInHandler() for _ in range(callbacks)]

    def callback(self, name: str) -> None:
        for cb in self.cbs:
            getattr(cb, name)()


@functools.lru_cache(maxsize=8)
def _measured_cost(clock: str) -> dict[str, Any]:
    """What a DispatchTracer adds on this machine: a stand-in loop's batch events dispatched traced and untraced, with
    no callback and with two (`loopviz.trace.cost.measure`); once per process."""
    loops = {0: _StandInLoop(0), 2: _StandInLoop(2)}

    def events(handlers: int) -> list[Callable[[], Any]]:
        return [functools.partial(loops[handlers].callback, name) for name in STAND_IN_EVENTS]

    def tracing(handlers: int) -> DispatchTracer:
        loop = loops[handlers]
        tracer = DispatchTracer(loop, "callback", callbacks=lambda: loop.cbs, clock=make_clock(clock), loop_start=())
        tracer.trace._measure_cost = None  # its own trace is never measured (nor read)
        return tracer

    return measure(events, tracing, handlers=2)
