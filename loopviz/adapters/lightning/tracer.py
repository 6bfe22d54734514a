"""Tracing: wrappers of the dispatch functions of `lightning.pytorch.trainer.call`, active for traced trainers only.

While any trainer (or module) is traced, loopviz's wrappers replace `_call_callback_hooks`,
`_call_lightning_module_hook`, `_call_strategy_hook`, `_call_lightning_datamodule_hook`, the functions that call the
callbacks' checkpoint hooks directly (`_call_callbacks_state_dict`...) and `_call_and_handle_interrupt` there
(through `loopviz.trace.instrument`; the last trace to end puts Lightning's back). A hook's consecutive dispatches
(callbacks, then the module...) are one firing: a firing stays open, pending, after its dispatch returns until the
next dispatch, which joins it if it is of the same hook; it closes at the time its last dispatch returned. Handler
calls are timed by an attribute on each callback, module or datamodule instance, which Lightning's `is_overridden`
sees as the attribute it wraps (`instrument.invisible`); a handler records only calls made inside its own trace's
dispatches (a module or callback shared by two traced trainers is timed by each for its own trainer's calls). The
tracer holds its trainer (or module) weakly: a trace never exited ends when that object is collected, as a fastai
trace ends with its learner.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.trainer import call as pl_call
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader

from loopviz.adapters.facts import cpu_facts, torch_loader_facts
from loopviz.adapters.lightning.cost import cost_measure
from loopviz.adapters.lightning.hooks import (
    ADVICE, DIRECT_CALLS, FRAMEWORK, MODULE, RUN_HOOKS, STRATEGY_EVENTS, WORK_NAMES, handler_objects, hook_owners, owner_base,
)
from loopviz.adapters.torch_loader import first_loader, loader_settings
from loopviz.checks import check_bool
from loopviz.errors import LoopvizError
from loopviz.generic import callback_info
from loopviz.trace import instrument
from loopviz.trace.instrument import invisible, outcome
from loopviz.trace.data import callback_facts
from loopviz.trace.record import ERROR, RAN, Recorder
from loopviz.trace.trace import Trace

__all__ = ["LightningTracer", "SANITY_CHECK"]

SANITY_CHECK = "sanity_check"  # the label of the loop the sanity check runs, nested in fit (the spec's phase name)

_DISPATCHING = instrument.DispatchStack()  # the tracers whose dispatch this thread is inside, innermost last
# id(traced trainer or module) -> its tracer (changed under the kernel's lock; a tracer holds its target weakly)
_ACTIVE: dict[int, "LightningTracer"] = {}
# the one active tracer while there is exactly one (else None): a dispatch finds it by its target's weak reference,
# where `_ACTIVE.get(id(trainer))` costs some 850 instructions (id makes an int and runs the audit hook)
_SOLE: "LightningTracer | None" = None
_PATCHES = instrument.PatchSet()  # the wrappers in lightning.pytorch.trainer.call while any tracer is active
_LIVE: dict[str, Any] = {}  # name in lightning.pytorch.trainer.call -> the wrapper installed now
_CANCELS: tuple[type[BaseException], ...] = ()  # Lightning's loops stop by flags (should_stop), never by an exception
# what a Lightning trace is finished with (`Trace.finish`'s arguments)
_FINISH = dict(framework=FRAMEWORK, work_names=WORK_NAMES, batch_events=("on_train_batch_start", "on_train_batch_end"),
               advice=ADVICE)
_DISPATCH = {"_call_callback_hooks": "callbacks", "_call_lightning_module_hook": "module",
             "_call_strategy_hook": "strategy", "_call_lightning_datamodule_hook": "datamodule"}


def _tracer_for(trainer: Any) -> LightningTracer | None:
    """The tracer of this trainer, or of the module it runs; None for untraced trainers."""
    if not _ACTIVE:
        return None
    found = _ACTIVE.get(id(trainer))
    if found is None:
        found = _ACTIVE.get(id(trainer.lightning_module))
    return found


def _sole() -> None:
    """Set `_SOLE` from `_ACTIVE` (under the kernel's lock, whenever a tracer joins or leaves it)."""
    global _SOLE
    _SOLE = next(iter(_ACTIVE.values())) if len(_ACTIVE) == 1 else None


def _go_live(name: str, wrapper: Any) -> None:
    """Make `wrapper` the current installation's at `name`: each wrapper of ours reads its own flag, so an old one left
    under someone else's wrapper passes every call straight through."""
    old = _LIVE.get(name)
    if old is not None:
        old.__loopviz_live__[0] = False
    _LIVE[name] = wrapper
    wrapper.__loopviz_live__[0] = True


def _dispatch_wrapper(name: str, kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
    events = STRATEGY_EVENTS if kind == "strategy" else None  # the strategy's own bookkeeping is no hook
    stack = _DISPATCHING
    live = [False]  # True while this wrapper is its installation's (see _go_live)

    # A fit dispatches a dozen hooks a step, so this path is written for bytecode: the arguments are passed on as
    # they came (a `trainer, hook_name, *args` signature rebuilds them, some 1,000 instructions a dispatch), and the
    # join of a pending firing and the dispatch's end are written out here (a Python call costs some 500 instructions):
    # the tracer's `begin` is called only to open a firing.
    @functools.wraps(original)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        try:
            trainer, hook_name = args[0], args[1]
        except IndexError:  # named (Lightning passes both by position)
            trainer, hook_name = args[0] if args else kwargs.get("trainer"), kwargs.get("hook_name")
            if trainer is None:
                return original(*args, **kwargs)  # (Lightning's own TypeError)
        tracer = _SOLE
        if tracer is None or tracer.target_ref() is not trainer:
            tracer = _tracer_for(trainer)  # another trainer, a traced module run by this trainer, or nothing traced
            if tracer is None:
                return original(*args, **kwargs) if kwargs else original(*args)
        if not live[0] or (events is not None and hook_name not in events):
            return original(*args, **kwargs) if kwargs else original(*args)
        firing = tracer.pending
        if firing is not None and firing[_HOOK] == hook_name:
            tracer.pending = None  # the pending firing of this hook goes on
        else:
            firing = tracer.begin(trainer, hook_name)
        if firing[_TIMED]:  # a timed handler records only inside its own trace's dispatch (the innermost)
            tracers = stack.inside
            tracers.append(tracer)
            try:
                result = original(*args, **kwargs) if kwargs else original(*args)
            except BaseException as error:
                tracers.pop()
                tracer.failed(firing, error)
                raise
            tracers.pop()
        else:  # Lightning calls only its base classes' no-ops (and dispatches any nested hook itself)
            try:
                result = original(*args, **kwargs) if kwargs else original(*args)
            except BaseException as error:
                tracer.failed(firing, error)
                raise
        if tracer.active:  # (a trace stopped inside a hook records nothing more) the firing stays open, pending
            if tracer.pending is not None:
                tracer.settle()  # a nested firing, pending still, ends first
            tracer.pending = firing
            firing[_END] = tracer.now()
        return result

    dispatch.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    dispatch.__loopviz_live__ = live  # type: ignore[attr-defined]
    return dispatch


def _direct_wrapper(name: str, hook: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A dispatch of `hook` for one of Lightning's functions that call every callback's checkpoint hook directly
    (`_call_callbacks_state_dict(trainer)`...): traced as a dispatch to the callbacks, joined with the module's or
    datamodule's dispatch of the same hook that follows or precedes it."""
    inner = _dispatch_wrapper(name, "callbacks", lambda trainer, _hook, *args, **kwargs: original(trainer, *args, **kwargs))

    @functools.wraps(original)
    def direct(trainer: Any, *args: Any, **kwargs: Any) -> Any:
        return inner(trainer, hook, *args, **kwargs)

    direct.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    direct.__loopviz_live__ = inner.__loopviz_live__  # type: ignore[attr-defined]
    return direct


def _entry_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    live = [False]  # True while this wrapper is its installation's (see _go_live)

    @functools.wraps(original)
    def entry(trainer: Any, trainer_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        tracer = _tracer_for(trainer)
        if tracer is None or not live[0]:
            return original(trainer, trainer_fn, *args, **kwargs)
        label = getattr(trainer_fn, "__name__", "run").strip("_").removesuffix("_impl")
        tracer.plans.clear()  # the handlers are looked for again: callbacks, module or datamodule may have changed
        tracer.rec.begin_loop(label)
        try:
            return original(trainer, trainer_fn, *args, **kwargs)
        finally:
            if tracer.active:
                tracer.settle()
                tracer.rec.end_loop()
                tracer.plans.clear()  # a firing outside any loop opens one as it makes its plan

    entry.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    entry.__loopviz_live__ = live  # type: ignore[attr-defined]
    return entry


def _install() -> None:
    """Put the wrappers in lightning.pytorch.trainer.call (under the kernel's lock, for the first tracer)."""
    for name, kind in _DISPATCH.items():
        make = functools.partial(_dispatch_wrapper, name, kind)
        _go_live(name, _PATCHES.install(pl_call, name, make).wrapper)
    for name, hook in DIRECT_CALLS.items():
        _go_live(name, _PATCHES.install(pl_call, name, functools.partial(_direct_wrapper, name, hook)).wrapper)
    entry = _PATCHES.install(pl_call, "_call_and_handle_interrupt", _entry_wrapper).wrapper
    _go_live("_call_and_handle_interrupt", entry)


def _uninstall() -> None:
    """Put Lightning's functions back (for the last tracer); a wrapper someone put over ours stays (see instrument)."""
    for wrapper in _LIVE.values():
        wrapper.__loopviz_live__[0] = False
    _LIVE.clear()
    _PATCHES.restore()




# an open firing: [hook, index, end (once its dispatch returned), where its values wait in the recorder's pending rows
# (-1: begun on the recorder's full path), whether any handler of its hook is timed]
_HOOK, _INDEX, _END, _AT, _TIMED = range(5)
# a hook's plan: (the trainer, weakly: a plan keeps no trainer alive; its callbacks when the plan was made; the hook's
# row id, -1 for a hook whose firings take the recorder's own path; its mode while training; whether any handler of
# the hook is timed)
_TRAINER, _CALLBACKS, _EID, _MODE, _HANDLED = range(5)
_TRAINING, _PREDICTING = RunningStage.TRAINING, RunningStage.PREDICTING
_VALIDATING, _TESTING, _SANITY_CHECKING = RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING


def _where(trainer: Any, hook: str) -> tuple[int, int, int]:
    """(mode, epoch, batch index in the running loop): mode 0 for the run's own hooks, 1 while training, 2 while
    validating, testing or predicting; -1 where unknown. The stage is compared by identity (Lightning's enum
    compares by lower-cased value, thousands of instructions a time); anything else Lightning's way."""
    stage = trainer.state.stage
    if stage is _TRAINING:
        training, loop = True, trainer.fit_loop.epoch_loop
    elif stage is None:
        training, loop = False, None
    elif stage is _PREDICTING:
        training, loop = False, trainer.predict_loop
    elif stage is _VALIDATING or stage is _TESTING or stage is _SANITY_CHECKING:
        training, loop = False, trainer._evaluation_loop
    else:
        training = trainer.training
        loop = trainer.fit_loop.epoch_loop if training else getattr(trainer, "_active_loop", None)
    mode = 0 if stage is None or hook in RUN_HOOKS else 1 if training else 2
    progress = getattr(loop, "batch_progress", None)
    return mode, int(trainer.current_epoch), (int(progress.current.ready) - 1 if progress is not None else -1)


def _trainer_of(target: Any) -> Any:
    """The traced trainer, or the traced module's trainer (None before it has one)."""
    return target if isinstance(target, pl.Trainer) else getattr(target, "_trainer", None)


def _model_facts(target: Any) -> dict[str, str]:
    """The trainer's device and precision as the trace starts (`meta['device']`, `meta['precision']`, Lightning's
    own names: '32-true', 'bf16-mixed'...); nothing for a target that has no trainer yet."""
    trainer = _trainer_of(target)
    try:
        return {"device": str(trainer.strategy.root_device), "precision": str(trainer.precision)}
    except Exception:  # a module without a trainer, or a strategy not set up: nothing noted
        return {}


def _loader_facts(target: Any) -> dict[str, Any]:
    """The training loader's settings once a fit made it (`meta['loaders']`, as fastai's adapter notes), and the
    machine's CPU cores."""
    try:
        loader, _ = first_loader(_trainer_of(target).train_dataloader)
    except Exception:  # no trainer, or no fit yet: no loader to note
        loader = None
    facts = torch_loader_facts(loader_settings(loader)) if isinstance(loader, DataLoader) else {}
    return {**({"loaders": {"train": facts}} if facts else {}), **cpu_facts()}


# the trainer's loops that make loaders, by the path to each from the trainer: the method each calls once its loaders
# are made and before it iterates them (the fit loop iterates them inside its `setup_data`, right after loading their
# states; an evaluation loop in its `reset`), and the name their loaders are timed under
_DATA_LOOPS = {("fit_loop",): ("_load_combined_loader_states", "train"),
               ("fit_loop", "epoch_loop", "val_loop"): ("setup_data", "val"), ("validate_loop",): ("setup_data", "val"),
               ("test_loop",): ("setup_data", "test"), ("predict_loop",): ("setup_data", "predict")}


def _held_by(loop: Any) -> Callable[[Any], list[Any]]:
    """The loaders a loop holds once its method has made them (that method returns none of them)."""
    return lambda _result: _loaders_of(getattr(loop, "_combined_loader", None))


def _loaders_of(held: Any) -> list[Any]:
    """The torch DataLoaders a trainer holds for a loop: one, a list or dict of them, or a CombinedLoader's."""
    if held is None:
        return []
    if isinstance(held, DataLoader):
        return [held]
    if hasattr(held, "flattened"):
        return [loader for loader in held.flattened if isinstance(loader, DataLoader)]
    if isinstance(held, dict):
        held = list(held.values())
    if isinstance(held, (list, tuple)):
        return [loader for item in held for loader in _loaders_of(item)]
    return []


class LightningTracer:
    """Traces every hook a trainer (or any trainer running a given module) dispatches; `with` gives the `Trace`."""

    def __init__(self, target: Any, clock: Any = None, max_calls: int = 1_000_000, max_firings: int = 250_000,
                 now: Callable[[], int] | None = None, data: bool = False, live: bool = False):
        if not isinstance(target, (pl.Trainer, pl.LightningModule)):
            raise LoopvizError(f"trace a Lightning Trainer or LightningModule, not a {type(target).__name__}.")
        if check_bool("live", live) and not isinstance(target, pl.Trainer):
            raise LoopvizError("live=True shows the live view on a trainer's progress bar: trace the Trainer "
                               "(loopviz.tracing(trainer, live=True)), not the LightningModule.")
        self.live = live
        self.live_callback: Any = None  # live=True: the live view's callback, on the trainer while the trace runs
        self.target_ref = weakref.ref(target)
        self.target_id = id(target)  # its key in _ACTIVE (the tracer leaves it before the target is freed)
        self.target_name = type(target).__name__
        self.rec = Recorder(clock, max_calls=max_calls, max_firings=max_firings, now=now)  # now: the host clock
        self.now = self.rec.now
        self.trace = Trace.recording(self.rec, stop=self._stop, start=self.__enter__,
                                     measure_cost=cost_measure(self.rec.clock.name, now is not None))
        self.open: list[list[Any]] = []  # the open firings, innermost last (see _HOOK...)
        # the pending firing: the innermost open one, once its dispatch returned, until the next dispatch (which joins
        # it if it is of the same hook) or the end of the dispatch it is nested in; else None
        self.pending: list[Any] | None = None
        self.plans: dict[str, tuple[Any, ...]] = {}  # hook -> its plan (see _TRAINER...)
        self.patches = instrument.PatchSet()  # the timed handlers on callback, module and datamodule instances
        self.by_module = isinstance(target, pl.LightningModule)  # any trainer may dispatch: plans are per trainer
        self.begin = self._make_begin()
        self.active = False
        self._ending: weakref.finalize | None = None
        if data and now is not None:
            raise LoopvizError("data=True times the loader's worker processes on the system's clock "
                               "(time.perf_counter_ns): it cannot run on an injected clock (now=).")
        self.data_timing: Any = None  # the loaders' timing (data=True), a `loopviz.adapters.torch_timer.TorchTiming`
        self.data_trainers: set[int] = set()  # id() of each trainer whose loops' loaders are timed (data=True)
        if data:
            from loopviz.adapters.torch_timer import TorchTiming

            self.data_timing = TorchTiming()
            self.trace.meta["data"] = True

    def __enter__(self) -> Trace:
        target = self.target_ref()
        if self._ending is not None or target is None:
            raise LoopvizError("this tracer has been used; start a new one with `loopviz.adapters.lightning.trace()`.")
        with instrument.guarded():
            if self.target_id in _ACTIVE:
                raise LoopvizError(f"this {self.target_name} is already being traced; finish that trace first.")
            if not _ACTIVE:
                _install()
            _ACTIVE[self.target_id] = self
            _sole()
            self.active = True
            # Ends the trace once: on exit, on t.stop(), or when the target is collected (the finalizer holds this
            # tracer, which holds its target only weakly).
            self._ending = weakref.finalize(target, instrument.run_or_defer, self._end)
        self.trace.started()
        self.trace.meta.update(_model_facts(target))
        if self.live:
            self._add_live(target)
        return self.trace

    def _add_live(self, trainer: pl.Trainer) -> None:
        """live=True: the live view's callback joins the trainer's callbacks for the trace (traced as any callback),
        and the trainer's progress bar, if any, shows its metrics."""
        from loopviz.adapters.lightning.live import LoopvizLive, with_live_metrics
        from loopviz.trace.live import LiveStats

        self.live_callback = live = LoopvizLive(LiveStats(self.rec, _FINISH))
        trainer.callbacks.append(live)
        bar = trainer.progress_bar_callback
        if bar is not None:
            self.patches.put(bar, "get_metrics", with_live_metrics(bar.get_metrics, live))

    def _remove_live(self) -> None:
        """The live view's callback leaves the trainer and leaves its last lines on screen."""
        live, self.live_callback = self.live_callback, None
        if live is None:
            return
        trainer = self.target_ref()
        try:
            if trainer is not None and live in trainer.callbacks:
                trainer.callbacks.remove(live)
        finally:
            live.close()

    def __exit__(self, *exc: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._ending is not None:
            self._ending()

    def _end(self) -> None:
        with instrument.guarded():
            if not self.active:
                return
            self.active = False
            if _ACTIVE.get(self.target_id) is self:
                del _ACTIVE[self.target_id]
                _sole()
            if not _ACTIVE:
                _uninstall()
        try:
            self._remove_live()
            if self.data_timing is not None:
                self.data_timing.finish(self.trace.data)
        finally:
            self.patches.restore()
        self.plans.clear()
        target = self.target_ref()
        if target is not None:
            self.trace.meta.update(_loader_facts(target))
        pending, self.pending = self.pending, None
        while self.open:
            firing = self.open.pop()
            self.rec.end_firing(firing[_INDEX], 0 if firing is pending else ERROR, end=firing[_END] or None)
        self.rec.end_loops()
        self.trace.finish(**_FINISH)

    def settle(self) -> None:
        """Close the pending firing, if any (no dispatch of the same hook joined it)."""
        firing = self.pending
        if firing is not None:
            self.pending = None
            self.open.pop()
            self.rec.end_firing(firing[_INDEX], 0, end=firing[_END])
            if firing[_HOOK] == "on_sanity_check_end" and not self.open:
                self.rec.end_loop(firing[_END])  # the sanity check's loop (see _make_begin)

    def _make_begin(self) -> Callable[[Any, str], list[Any]]:
        """`begin(trainer, hook)`: open a firing of `hook` for a dispatch that joins no pending firing (the dispatch
        wrapper joins those); the pending firing, of another hook, is closed first. Returns the new firing. A closure
        bound once that opens and closes rows by the recorder's `HotPath` (nearly every firing of a fit)."""
        open_, rec, plans, wrap, by_module = self.open, self.rec, self.plans, self._wrap_handlers, self.by_module
        hot = rec.hot_path()
        now, count, limit, cur, marks, values, add_values = (
            hot.now, hot.count, hot.limit, hot.cur, hot.marks, hot.values, hot.add_values)
        begin_firing, end_firing = rec.begin_firing, rec.end_firing

        def begin(trainer: Any, hook: str) -> list[Any]:
            top = self.pending
            if top is not None:  # settle(), written out: nearly every firing closes the one before it
                self.pending = None
                open_.pop()
                at, end = top[_AT], top[_END]
                if at >= 0:  # the recorder's end_firing, written out (`HotPath`)
                    parent = values[at + 4]
                    cur[0] = parent
                    marks[0] = end
                    marks[1] = top[_INDEX]
                    if parent < 0:
                        marks[3] = end
                    values[at + 8] = end - values[at]
                else:  # (on_sanity_check_end's firings are begun here: see _wrap_handlers)
                    end_firing(top[_INDEX], 0, end)
                    if top[_HOOK] == "on_sanity_check_end" and not open_:
                        rec.end_loop(end)  # the sanity check's loop (see below)
            plan = plans.get(hook)
            if plan is None or plan[_CALLBACKS] != trainer.callbacks or (by_module and plan[_TRAINER]() is not trainer):
                # Plans are forgotten as each loop (each trainer.fit, validate...) begins and ends, so the first firing
                # outside any loop opens one, and so does on_sanity_check_start, once a fit
                if rec.loop < 0:
                    rec.begin_loop("lightning")
                if hook == "on_sanity_check_start" and not open_:
                    rec.begin_loop(SANITY_CHECK)  # a loop of its own inside fit: its validation is not fit's
                plan = wrap(trainer, hook)
            if trainer.state.stage is _TRAINING:  # nearly every firing of a fit: _where's first case, inlined
                fit_loop = trainer.fit_loop
                mode, epoch = plan[_MODE], fit_loop.epoch_progress.current.completed
                iteration = fit_loop.epoch_loop.batch_progress.current.ready - 1
            else:
                mode, epoch, iteration = _where(trainer, hook)
            index, eid = count[0], plan[_EID]
            if eid < 0 or index >= limit[0]:
                firing = [hook, begin_firing(hook, mode, epoch, iteration), 0, -1, plan[_HANDLED]]
            else:  # the recorder's begin_firing, written out (`HotPath`; the sibling mark may stay)
                count[0] = index + 1
                firing = [hook, index, 0, len(values), plan[_HANDLED]]
                add_values((now(), epoch, iteration, rec.loop, cur[0], eid, mode, 0, None))
                cur[0] = index
            open_.append(firing)
            return firing

        return begin

    def _time_loaders(self, trainer: Any) -> None:
        """With data=True: time the loaders each of the trainer's loops makes (see _DATA_LOOPS: wrapped on the loop
        instance; again when a loop reloads them), from the moment they are made."""
        from loopviz.adapters.torch_timer import timing_what_it_makes

        self.data_trainers.add(id(trainer))
        timing = self.data_timing
        for path, (method, name) in _DATA_LOOPS.items():
            loop = trainer
            for step in path:
                loop = getattr(loop, step, None)
            if loop is None or not callable(getattr(loop, method, None)):
                continue
            self.patches.put(loop, method, timing_what_it_makes(getattr(loop, method), timing, name,
                                                                lambda: self.active, _held_by(loop)))

    def failed(self, firing: list[Any], error: BaseException) -> None:
        """The dispatch of `firing` raised `error`: the firing ends with it."""
        if not self.active:
            return
        self.settle()
        if self.open and self.open[-1] is firing:
            self.open.pop()
            self.rec.end_firing(firing[_INDEX], outcome(error, _CANCELS))

    def _wrap_handlers(self, trainer: Any, hook: str) -> tuple[Any, ...]:
        """Time the handlers of `hook` by an attribute on each callback and module instance; returns the hook's plan,
        kept until the trainer's callbacks change or a loop starts. With data=True, the loaders a loop is about to
        iterate are timed from its start hook on (their first iteration follows it)."""
        if self.data_timing is not None and id(trainer) not in self.data_trainers:
            self._time_loaders(trainer)
        module = trainer.lightning_module
        callbacks = [] if hook_owners(hook) == MODULE else list(trainer.callbacks)
        handlers = list(handler_objects(callbacks, module, hook, trainer.datamodule))
        for obj in handlers:
            if (id(obj), hook) in self.patches:
                continue
            fn = getattr(obj, hook)
            position = trainer.callbacks.index(obj) if obj in trainer.callbacks else len(trainer.callbacks)
            info = callback_info(obj, order=lambda o, p=position: p, base=owner_base(obj))
            cid = self.rec.callback_id(id(obj), lambda info=info: callback_facts(info))
            self.patches.put(obj, hook, self._timed(fn, cid))
        # on_sanity_check_end's firings take the recorder's own path, on which `begin` looks for the end of the
        # sanity check's loop
        eid = -1 if hook == "on_sanity_check_end" else self.rec.short_id(hook)
        plan = self.plans[hook] = (weakref.ref(trainer), list(trainer.callbacks), eid, 0 if hook in RUN_HOOKS else 1,
                                   bool(handlers))
        return plan

    def _timed(self, fn: Callable[..., Any], cid: int) -> Callable[..., Any]:
        now, call, stack = self.rec.now, self.rec.call, _DISPATCHING
        hot = self.rec.hot_path()
        cur, calls, add_call, call_limit = hot.cur, hot.calls, hot.add_call, hot.call_limit

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            tracers = stack.inside
            if not tracers or tracers[-1] is not self or not self.active:  # another trainer's call, or none traced
                return fn(*args, **kwargs)
            start = now()
            try:
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except BaseException as error:
                if self.active:
                    self.settle()
                    call(cid, start, now(), outcome(error, _CANCELS))
                raise
            if self.active:
                if self.pending is not None:
                    self.settle()  # a hook dispatched inside this handler (optimizer_step's closure) ends before it
                end = now()
                if len(calls) < call_limit[0]:  # inside its dispatch, a firing is open: it has a row (`HotPath`)
                    add_call((start, cur[0], cid, end - start, RAN))
                else:
                    call(cid, start, end, RAN)
            return result

        timed.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
        return invisible(timed, fn)
