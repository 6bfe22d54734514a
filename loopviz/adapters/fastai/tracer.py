"""Tracing real fastai fits: `with learn.trace() as t: learn.fit(...)`.

While any learner is traced, loopviz wraps whatever is installed as `Learner._call_one` (one event firing), the entry
points (fit, validate, get_preds, lr_find, fine_tune, fit_one_cycle, to name loops), `Learner.add_cb`/`remove_cb`
(callbacks attached while tracing), `Callback.__setattr__` (a handler set on a callback while tracing) and
`Callback.__getstate__` (pickles and copies leave the timed handlers out). These class-level wrappers look the learner
up in a registry and pass straight through for learners that are not traced.

Handler calls are timed by a wrapper on each traced callback *instance*, for exactly the events it handles
(`loopviz.adapters.fastai.timed`): fastai's own `Callback.__call__` and `getcallable` are not replaced, so they still
decide, by the run flags, which handler runs, and a callback with no handler for an event costs nothing extra.
Callbacks whose class replaces `__call__` (VerboseCallback) are timed by a wrapper of that class's `__call__`.

The last trace to finish puts every original back, whether the fit ended, was cancelled or raised. Installing and
removing goes through `loopviz.trace.instrument` (one lock, one restore, one policy for code that replaces a wrapper
while it is installed), so traces started and finished in several threads at once leave fastai exactly as it was. A
trace holds its learner (and its callbacks) weakly: a trace that is never exited ends when its learner is collected,
or with `t.stop()`.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastcore.basics import patch

from loopviz.adapters.fastai.advice import ADVICE
from loopviz.adapters.fastai.cost import cost_measure
from loopviz.adapters.facts import cpu_facts, weights_precision
from loopviz.adapters.fastai.descriptions import WORK_BETWEEN
from loopviz.adapters.fastai.learner_trace import RANGE_PREFIX, SKIP_STATUS, LearnerTrace
from loopviz.checks import check_bool, check_int, check_type
from loopviz.errors import LoopvizError
from loopviz.introspect import SHADOWS, call_owner, is_shadowing, shadowed
from loopviz.trace import instrument
from loopviz.trace.clock import make_clock
from loopviz.trace.instrument import MISSING
from loopviz.trace.record import STATUS, Recorder
from loopviz.trace.trace import Trace
from loopviz.trace.waits import wait_watch

__all__ = ["TraceSession", "trace", "active_recorders"]

DISPATCH_LABEL = "dispatch (fastai's own)"  # the time in events that no callback's call accounts for
_ENTRY_POINTS = ("fit", "validate", "get_preds", "lr_find", "fine_tune", "fit_one_cycle")
# fastai's callback dispatch: not where a handler synchronised with the GPU (waits=True)
_DISPATCH_FILES = frozenset({fastai_core.__file__})

# id(learner) -> its trace. Its membership and the class-level wrappers change under the kernel's lock
# (instrument.guarded: re-entrant, and a trace ended by the garbage collector while this thread is inside a guarded
# block is ended when the block ends).
_ACTIVE: dict[int, LearnerTrace] = {}
_PATCHES = instrument.PatchSet()
_guarded = instrument.guarded


def active_recorders() -> int:
    """How many learners are being traced right now (0 when no loopviz wrapper is installed)."""
    return len(_ACTIVE)


# -- the class-level wrappers ------------------------------------------------------------------------


def _wrap_entry(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """An entry point (fit, get_preds...): names the loops it runs and bounds their time."""

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


def _wrap_add_cb(original: Callable[..., Any]) -> Callable[..., Any]:
    """`Learner.add_cb`: a callback attached to a traced learner is timed from its next event on."""

    @functools.wraps(original)
    def add_cb(self: Learner, cb: Any) -> Any:
        try:
            return original(self, cb)
        finally:
            state = _ACTIVE.get(id(self))
            if state is not None:
                state.attached()
                _patch_overriding_classes(self)

    add_cb.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return add_cb


def _wrap_remove_cb(original: Callable[..., Any]) -> Callable[..., Any]:
    """`Learner.remove_cb`: a callback detached from a traced learner is left as it was before the trace."""

    @functools.wraps(original)
    def remove_cb(self: Learner, cb: Any) -> Any:
        try:
            return original(self, cb)
        finally:
            state = _ACTIVE.get(id(self))
            if state is not None and not isinstance(cb, type):  # a class: fastai removes each instance in turn
                state.detached(cb)

    remove_cb.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return remove_cb


def _wrap_callback_setattr(original: Callable[..., Any]) -> Callable[..., Any]:
    """`Callback.__setattr__`: a handler a traced callback's code sets (over a timed one, or one it lacked) stays, and
    is timed from the event's next firing."""

    @functools.wraps(original)
    def __setattr__(self: Callback, name: str, value: Any) -> None:
        original(self, name, value)
        learn = self.__dict__.get("learn")
        state = _ACTIVE.get(id(learn)) if learn is not None else None
        if state is not None and (name in state.tables or (id(self), name) in state.slots):
            state.handler_set(self, name)

    __setattr__.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return __setattr__


def _wrap_getstate(original: Callable[..., Any]) -> Callable[..., Any]:
    """A callback's or learner's `__getstate__` (pickling, `copy`, `learn.export()`): the timed handlers and the
    learner's traced `_call_one` are left out, and what they shadow on the instance is put in their place, so the
    pickle or copy is the object as its code left it."""

    @functools.wraps(original)
    def __getstate__(self: Any) -> Any:
        state = original(self)
        live = getattr(_ACTIVE.get(id(self)), "live_callback", None) if isinstance(self, Learner) else None
        if live is not None and isinstance(state, dict):  # the live view is the trace's, not the learner's
            state = {name: value for name, value in state.items() if value is not live}
            if "cbs" in state:
                state["cbs"] = type(state["cbs"])([cb for cb in state["cbs"] if cb is not live])
        if isinstance(state, dict) and any(is_shadowing(value) for value in state.values()):
            state = dict(state)  # never the live __dict__ a __getstate__ may return
            for name, value in list(state.items()):
                own = shadowed(value, MISSING)
                if own is MISSING:
                    del state[name]
                else:
                    state[name] = own
        return state

    __getstate__.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return __getstate__


def _wrap_overriding_call(original: Callable[..., Any]) -> Callable[..., Any]:
    """The `__call__` of a callback class that replaces `Callback.__call__`: fastai calls it at every event."""

    @functools.wraps(original)
    def __call__(self: Callback, event_name: str) -> Any:
        learn = self.__dict__.get("learn")
        state = _ACTIVE.get(id(learn)) if learn is not None else None
        if state is None:
            return original(self, event_name)
        return state.overriding_call(self, event_name, original)

    __call__.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return __call__


def _wrap_attribute_write(original: Callable[..., Any]) -> Callable[..., Any]:
    """Learner's `__setattr__` or `__delattr__` while a trace records changes: a write (`value` given) or delete
    during a tracked callback call notes the attribute's value before the call's first write to it."""

    @functools.wraps(original)
    def write(self: Learner, name: str, *value: Any) -> None:
        state = _ACTIVE.get(id(self))
        written = state.written if state is not None else None
        if written is None or name in written:
            return original(self, name, *value)
        old = self.__dict__.get(name, MISSING)
        original(self, name, *value)
        written[name] = old

    write.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return write


# -- installing and removing ----------------------------------------------------------------------


def _install_all() -> None:
    _PATCHES.install(Learner, "__getstate__", _wrap_getstate)
    _PATCHES.install(Learner, "add_cb", _wrap_add_cb)
    _PATCHES.install(Learner, "remove_cb", _wrap_remove_cb)
    _PATCHES.install(Callback, "__setattr__", _wrap_callback_setattr)
    _PATCHES.install(Callback, "__getstate__", _wrap_getstate)
    for name in _ENTRY_POINTS:
        if hasattr(Learner, name):
            _PATCHES.install(Learner, name, lambda original, name=name: _wrap_entry(name, original))


def _patch_overriding_classes(learn: Learner) -> None:
    """Wrap `__call__` of callback classes that replace it (they bypass `Callback.__call__`), and `__getstate__` of
    those that replace Callback's."""
    with _guarded():
        if not len(_PATCHES):
            return  # every trace ended (in another thread) while this fit was starting
        for cb in learn.cbs:
            owner = call_owner(type(cb))
            if owner is not None and owner is not Callback and (id(owner), "__call__") not in _PATCHES:
                _PATCHES.install(owner, "__call__", _wrap_overriding_call)
            owner = next((klass for klass in type(cb).__mro__ if "__getstate__" in vars(klass)), None)
            if owner is not None and owner is not Callback and issubclass(owner, Callback) \
                    and (id(owner), "__getstate__") not in _PATCHES:
                _PATCHES.install(owner, "__getstate__", _wrap_getstate)


def _start(learn: Learner, state: LearnerTrace) -> None:
    """Register a learner's trace, installing the wrappers if it is the first."""
    key = id(learn)
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
        state.call_patch = _put_firing(learn, state)


def _put_firing(learn: Learner, state: LearnerTrace) -> instrument.Patch:
    """Put the trace's `_call_one` on the learner instance: fastai's `Learner.__call__` reads `self._call_one`, so the
    instance's own is what it calls, and other learners pay nothing. It calls whatever the class has (another
    library's wrapper included)."""
    firing = state.firing(learn)
    functools.update_wrapper(firing, type(learn)._call_one)
    firing.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    patch = instrument.put(learn, "_call_one", firing)
    setattr(firing, SHADOWS, [] if patch.before is MISSING else [patch.before])  # what pickles and copies hold
    return patch


def _end(key: int, state: LearnerTrace, trace: Trace) -> None:
    """End a learner's trace (now, or when this thread's guarded block ends if the garbage collector ended it there)."""
    instrument.run_or_defer(lambda: _finish(key, state, trace))


def _finish_args() -> dict[str, Any]:
    """What a fastai trace is finished with (`Trace.finish`'s arguments)."""
    return dict(framework=_fastai_version(), work_names=WORK_BETWEEN, advice=ADVICE)


def _finish(key: int, state: LearnerTrace, trace: Trace) -> None:
    """Unregister a learner's trace, take its timed handlers off, remove the class wrappers if it was the last, and
    finish the trace."""
    _remove_live(state)
    state.close_work_range()
    if state.waits is not None:
        if state.work_wait is not None:
            state.close_work_wait()
        state.waits.stop()
    if state.data_timing is not None:
        state.data_timing.finish(trace.data)
        state.data_timing = None
    with _guarded():
        state.unwrap_all()
        if state.call_patch is not None:
            instrument.restore(state.call_patch)
            state.call_patch = None
        if _ACTIVE.get(key) is state:
            del _ACTIVE[key]
            if not _ACTIVE:
                _PATCHES.restore()
    trace.finish(**_finish_args())


def _add_live(learn: Learner, state: LearnerTrace, recorder: Recorder) -> None:
    """live=True: the live view's callback joins the learner for the trace (traced as any callback added now is)."""
    from loopviz.adapters.fastai.live import LoopvizLive
    from loopviz.trace.live import LiveStats

    state.live_callback = LoopvizLive(LiveStats(recorder, _finish_args()))
    learn.add_cb(state.live_callback)


def _remove_live(state: LearnerTrace) -> None:
    """The live view's callback leaves the learner (while the trace is still on: detached as any callback is) and
    leaves its last line on screen."""
    cb, state.live_callback = state.live_callback, None
    if cb is None:
        return
    try:
        learn = state.learn
        if learn is not None and cb in learn.cbs:
            learn.remove_cb(cb)
    finally:
        cb.close()


def loader_facts(learn: Learner) -> dict[str, Any]:
    """The learner's loaders' settings a diagnosis names (`meta['loaders']`: per 'train'/'valid', bs, num_workers,
    persistent_workers, pin_memory, and `restarts_workers`: fastai's own loader starts its workers again every epoch
    whatever persistent_workers says) and the machine's CPU cores (`meta['cpus']`)."""
    loaders = {}
    for name in ("train", "valid"):
        try:
            loader = getattr(learn.dls, name)
            worker = getattr(loader, "fake_l", loader)  # a fastai loader keeps torch's settings on its _FakeLoader
            facts = {"bs": getattr(loader, "bs", getattr(loader, "batch_size", None)),
                     "num_workers": worker.num_workers, "persistent_workers": worker.persistent_workers,
                     "pin_memory": worker.pin_memory, "restarts_workers": worker is not loader}
        except Exception:  # a learner without loaders yet, or loaders of another kind: nothing to note
            continue
        kept = {key: value for key, value in facts.items()
                if (type(value) is int and value >= 0) or type(value) is bool}
        if kept:
            loaders[name] = kept
    return {"loaders": loaders, **cpu_facts()}


def model_facts(learn: Learner) -> dict[str, str]:
    """The model's device and precision as the trace starts (`meta['device']`, `meta['precision']`: '32' for float32
    weights, 'fp16-mixed' or 'bf16-mixed' under fastai's MixedPrecision, '16-true' for half weights...)."""
    mixed = next((cb for cb in learn.cbs if type(cb).__name__ == "MixedPrecision"), None)
    amp_mode = getattr(getattr(mixed, "amp_mode", None), "value", None)
    return {"device": _model_device(learn), "precision": f"{amp_mode}-mixed" if amp_mode else
            weights_precision(learn.model)}


class TraceSession:
    """Context manager returned by `learn.trace()`: records everything the learner does inside it.

    It holds the learner weakly; the trace ends when the block exits, when `t.stop()` is called, or when
    the learner is collected, whichever comes first."""

    def __init__(self, learn: Learner, clock: str = "auto", max_calls: int = 1_000_000, max_firings: int = 250_000,
                 changes: bool = False, tensors: bool = False, ranges: bool = False, waits: bool = False,
                 data: bool = False, live: bool = False, now: Callable[[], int] | None = None):
        check_type("learn", learn, Learner, "a fastai Learner")
        self.live = check_bool("live", live)
        self.max_calls = check_int("max_calls", max_calls)
        self.max_firings = check_int("max_firings", max_firings)
        self.changes, self.tensors = check_bool("changes", changes), check_bool("tensors", tensors)
        self.ranges = check_bool("ranges", ranges)
        self.data = check_bool("data", data)
        if self.data and now is not None:
            raise LoopvizError("data=True times the loader's worker processes on the system's clock "
                               "(time.perf_counter_ns): it cannot run on an injected clock (now=).")
        self.waits = wait_watch(_DISPATCH_FILES) if check_bool("waits", waits) else None
        self.learn_ref = weakref.ref(learn)
        self.clock = make_clock(clock, _model_device(learn))
        # `now`: the host clock (ns) of every timestamp, time.perf_counter_ns unless a test injects a deterministic one
        self.recorder = Recorder(self.clock, max_calls=self.max_calls, max_firings=self.max_firings, now=now)
        self.recorder.vocabulary(dispatch_label=DISPATCH_LABEL, range_prefix=RANGE_PREFIX,
                                 batch_events=("before_batch", "after_batch"),
                                 skip_statuses={STATUS[code]: why for why, code in SKIP_STATUS.items() if why})
        self.trace = Trace.recording(self.recorder, stop=self._stop, start=self.__enter__, measure_cost=cost_measure(
            self.changes, self.tensors, self.ranges, self.waits is not None, self.clock.name, now is not None))
        self.trace.tracked_changes = self.changes or self.tensors
        self.trace.tracked_waits = self.waits is not None
        self.trace.meta.update(ranges=self.ranges, tensors=self.tensors, data=self.data)  # so a diff can tell traces
        # recorded apart
        self._ending: weakref.finalize | None = None

    def __enter__(self) -> Trace:
        learn = self.learn_ref()
        if learn is None:
            raise LoopvizError("the learner of this trace is gone (collected): trace a learner you still hold.")
        if self._ending is not None:
            raise LoopvizError("this trace session has been used; start a new one with `learn.trace()`.")
        state = LearnerTrace(learn, self.recorder, changes=self.changes, tensors=self.tensors, ranges=self.ranges,
                              waits=self.waits)
        if self.waits is not None:
            self.waits.start()
        try:
            _start(learn, state)
        except BaseException:
            if self.waits is not None:
                self.waits.stop()
            raise
        self.trace.meta.update(loader_facts(learn), **model_facts(learn))
        if self.data:  # (imported here: a worker process started by spawn imports it to unpickle a loader)
            from loopviz.adapters.fastai.datatimer import FastaiTiming

            state.data_timing = FastaiTiming()
        # Ends the trace once: on exit, on t.stop(), or when the learner is collected (the finalizer holds
        # the state and the trace, which hold the learner only weakly).
        self._ending = weakref.finalize(learn, _end, id(learn), state, self.trace)
        self.trace.started()
        try:
            if self.live:
                _add_live(learn, state, self.recorder)
            _patch_overriding_classes(learn)
            if state.data_timing is not None:
                _time_loaders(learn, state.data_timing)
        except BaseException:
            self._stop()
            raise
        return self.trace

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._ending is not None:
            self._ending()


def _time_loaders(learn: Learner, timing: Any) -> None:
    """Time the loops of the learner's loaders (`learn.dls.loaders`: train, valid, then any others) from now on."""
    loaders = list(getattr(getattr(learn, "dls", None), "loaders", None) or ())
    for index, loader in enumerate(loaders):
        timing.watch(loader, ("train", "valid")[index] if index < 2 else f"loader {index}")


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
    data: bool = False,  # Also time the data loop inside `draw`: each stage and transform of every batch, in the loader's worker processes too
    live: bool = False,  # Also show, while the fit runs, the split of the recent steps and the top finding so far (at most once a second), in the progress bar's comment or on a line of its own
) -> Trace:
    "Record every event firing, callback call and the work between events of what runs inside `with` (or between `t.start()` and `t.stop()`)"
    return TraceSession(self, clock=clock, max_calls=max_calls, max_firings=max_firings, changes=changes,
                        tensors=tensors, ranges=ranges, waits=waits, data=data, live=live).trace
