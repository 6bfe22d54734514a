"""Timing a fastai loader's loop while a learner is traced with `data=True`: every stage and every transform of every
batch, in the main process and inside the loader's worker processes (`loopviz.trace.datawork` has the records).

fastai's `DataLoader` looks each stage up on the instance (`self.create_item(s)`, `self.after_item(...)`,
`self.do_batch(b)`...: the stages a loader may be given as functions), so each is timed by a wrapper put on the
loader instance for the trace, through the instrumentation kernel, and taken off when it ends; the class, other
loaders and the loader's pipelines are left alone. A `Pipeline` stage is timed transform by transform by a
`TimedPipeline`, a `Pipeline` that applies the real pipeline's transforms as `Pipeline.__call__` does (each with the
pipeline's `split_idx`) and forwards everything else (its `fs`, `split_idx`, `decode`...) to the real one, so fastai's
`TfmdDL.before_iter` still sets the real pipeline's split. A `Datasets`' type transforms (what `create_item` runs) are
timed the same way, on each of its `TfmdLists`. The move to the device is `fastai.data.load.to_device`, timed while
any such trace runs.

The wrappers travel to the workers with the loader (forked, or pickled: each holds the plain function and its
loader, never a bound method, which would unpickle as the wrapper itself). In a worker they record every batch it
makes and append the rows to the trace's `Spool`; in the main process rows go straight to the trace. `DataLoader.new`
(`dls.test_dl`, `learn.export`) runs with the loader's own stages, so a loader made from a traced one never inherits
a wrapper.
"""
from __future__ import annotations

import os
import sys
import threading
from array import array
from time import perf_counter_ns
from typing import Any, Callable

import fastai.data.load as fastai_load
from fastai.data.load import DataLoader
from fasttransform.transform import Pipeline

from loopviz.adapters.fastai.dataloop import overrides, transform_step
from loopviz.trace import instrument
from loopviz.trace.datawork import BATCH, MAIN, MOVE, PASS
from loopviz.trace.spool import Spool

__all__ = ["DataTiming", "LoaderTimer", "TimedPipeline", "timed_loaders"]

_PIPELINE_CALL = Pipeline.__call__  # what a pipeline does when called; a subclass that replaces it is timed whole
_MOVES = threading.local()  # the last move to a device in this thread: (start, end), taken by the next after_batch
_SHARED = instrument.PatchSet()  # `DataLoader.new` and `to_device`, while any loader is timed
_LOADERS: dict[int, list[instrument.Patch]] = {}  # id(loader) -> the wrappers on it


class LoaderTimer:
    """One loader's timing state, copied into each of its worker processes with the loader."""

    def __init__(self, name: str, spool: Spool, sink: array, register: Callable[[str, str, str], int]):
        self.name = name
        self.spool = spool
        self.sink = sink  # the main process's rows (not pickled: a worker writes to the spool)
        self.register = register  # (stage, step, per) -> its step id (main process only)
        self.main_pid = os.getpid()
        self.active = True  # False once the trace ended: every wrapper passes straight through
        self.pass_no = -1
        self.open = False  # the main process is inside a pass of the loader (before_iter to after_iter)
        self.making = False  # this process is making a batch of the pass (inside its create_batches generator)
        self.worker, self.workers, self.pid = MAIN, 1, self.main_pid
        self.made = 0  # batches made in this process in this pass
        self.given = 0  # batches the main process has given out in this pass
        self.acc: dict[int, list[int]] = {}  # step id -> [ns, calls] in the batch being made
        self.given_acc: dict[int, list[int]] = {}  # the same for the main process's part of the batch given next
        self.batch_start = 0  # when the batch being made began (0: not yet)
        self.pass_start = 0
        self.batch_id = register(BATCH, "", "batch")
        self.pass_id = register(PASS, "", "pass")
        self.move_id = register(MOVE, "", "batch")
        self.item_id = -1  # the step whose calls count the items of a batch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["sink"], state["register"] = array("q"), None
        return state

    # -- the main process: passes and the batches it gives ---------------------------------------------

    def begin_pass(self) -> None:
        """A pass begins (before_iter): workers started from now copy this state."""
        if self.open:  # the last pass was left without after_iter (one_batch, a loop broken off)
            self.end_pass()
        self.open, self.making = True, False
        self.pass_no += 1
        self.made = self.given = 0
        self.acc.clear()
        self.given_acc.clear()
        self.batch_start = 0
        self.pass_start = perf_counter_ns()

    def end_pass(self) -> None:
        """The pass ended (after_iter): one row for it."""
        end = perf_counter_ns()
        self.sink.extend((self.pass_id, self.pass_no, MAIN, self.main_pid, -1, self.pass_start, end,
                          end - self.pass_start, self.given))
        self.open = self.making = False

    def give(self, start: int, end: int) -> None:
        """The main process's part of one batch is done (its after_batch returned): its rows."""
        rows = self.sink
        for step, (total, calls) in self.given_acc.items():
            rows.extend((step, self.pass_no, MAIN, self.main_pid, self.given, start, end, total, calls))
        self.given_acc.clear()
        self.given += 1

    # -- whichever process makes the batches ----------------------------------------------------------

    def begin_making(self) -> None:
        """This process starts making the pass's batches (create_batches, in a worker or the main process)."""
        if os.getpid() != self.main_pid:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            self.worker, self.workers = (info.id, info.num_workers) if info is not None else (0, 1)
            self.pid = os.getpid()
        self.made = 0
        self.acc.clear()
        self.batch_start = 0

    def add(self, step: int, start: int, end: int) -> None:
        """One call of a step in the batch being made."""
        entry = self.acc.get(step)
        if entry is None:
            self.acc[step] = [end - start, 1]
        else:
            entry[0] += end - start
            entry[1] += 1
        if not self.batch_start:
            self.batch_start = start

    def end_batch(self, end: int) -> None:
        """The batch being made is done (do_batch returned): its rows, to the trace or the spool."""
        batch = self.made * self.workers + self.worker if self.worker >= 0 else self.made
        start = self.batch_start or end
        items = self.acc.get(self.item_id, (0, 0))[1]
        rows = array("q")
        for step, (total, calls) in self.acc.items():
            rows.extend((step, self.pass_no, self.worker, self.pid, batch, start, end, total, calls))
        rows.extend((self.batch_id, self.pass_no, self.worker, self.pid, batch, start, end, end - start, items))
        if self.worker >= 0:
            self.spool.write(rows)
        else:
            self.sink.extend(rows)
        self.acc.clear()
        self.batch_start = 0
        self.made += 1

    def end_making(self) -> None:
        """This process made its last batch of the pass: the items it made for none (batch -1), if any."""
        if self.acc and self.batch_start:
            rows = array("q")
            end = perf_counter_ns()
            for step, (total, calls) in self.acc.items():
                rows.extend((step, self.pass_no, self.worker, self.pid, -1, self.batch_start or end, end, total, calls))
            self.spool.write(rows) if self.worker >= 0 else self.sink.extend(rows)
            self.acc.clear()
        self.making = False

    def recording(self) -> bool:
        """True while this process makes batches of a pass of the traced loader."""
        return self.making and self.active


class _Wrapper:
    """A stage of a loader, called as the loader would call it: `func` with `owner` first when it was a method. A
    method is pickled as the name of its class's attribute (fastai makes its no-op stages with `exec`: they cannot be
    pickled by reference) and looked up again on first use."""

    def __init__(self, timer: LoaderTimer, original: Any, owner: Any, attr: str):
        self.timer = timer
        bound = getattr(original, "__self__", None) is owner and hasattr(original, "__func__")
        self.func = original.__func__ if bound else original
        self.owner = owner if bound else None
        self.attr = attr if bound and getattr(type(owner), attr, None) is self.func else None
        self.__doc__ = getattr(original, "__doc__", None)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        if state["attr"] is not None:
            state["func"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        if self.func is None:
            vars(self).pop("func")  # looked up on first use (`__getattr__`): the owner may not be unpickled yet

    def __getattr__(self, name: str) -> Any:
        if name == "func" and vars(self).get("attr") is not None and vars(self).get("owner") is not None:
            self.func = getattr(type(self.owner), self.attr)
            return self.func
        raise AttributeError(name)

    __loopviz_wrapper__ = True

    @property
    def original(self) -> Any:
        """The stage as the loader had it: its bound method, or the function it was given."""
        return self.func if self.owner is None else self.func.__get__(self.owner)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs) if self.owner is None else self.func(self.owner, *args, **kwargs)


class TimedStage(_Wrapper):
    """A stage timed as a whole, per call, while the process makes batches."""

    def __init__(self, timer: LoaderTimer, original: Any, owner: Any, attr: str, step: int):
        super().__init__(timer, original, owner, attr)
        self.step = step

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not (timer.making and timer.active):
            return self.run(*args, **kwargs)
        start = perf_counter_ns()
        try:
            return self.run(*args, **kwargs)
        finally:
            timer.add(self.step, start, perf_counter_ns())


class _MakingStart(_Wrapper):
    """`create_batches`: this process begins making the pass's batches; when they run out (or the pass is left),
    the items made for no batch (the last, short one that `drop_last` drops) are recorded too."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not (timer.active and (timer.open or os.getpid() != timer.main_pid)):
            return self.run(*args, **kwargs)
        timer.begin_making()
        return _drained(timer, self.run(*args, **kwargs))


def _drained(timer: LoaderTimer, batches: Any) -> Any:
    """The loader's batches, recorded only while the generator makes one: a stage called at any other time (fastai's
    `TfmdDL._one_pass`, run by `decode` from a callback in the middle of a pass) is not part of the loop."""
    made = iter(batches)
    try:
        while True:
            timer.making = True
            try:
                batch = next(made)
            except StopIteration:
                return
            finally:
                timer.making = False
            yield batch
    finally:
        if timer.active:
            timer.end_making()


class _BatchEnd(_Wrapper):
    """`do_batch`: a batch is made when it returns."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not (timer.making and timer.active):
            return self.run(*args, **kwargs)
        result = self.run(*args, **kwargs)
        timer.end_batch(perf_counter_ns())
        return result


class _PassEdge(_Wrapper):
    """`before_iter` / `after_iter`: a pass of the loader begins or ends, in the main process."""

    def __init__(self, timer: LoaderTimer, original: Any, owner: Any, attr: str, begins: bool):
        super().__init__(timer, original, owner, attr)
        self.begins = begins

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not timer.active or os.getpid() != timer.main_pid:
            return self.run(*args, **kwargs)
        if self.begins:
            result = self.run(*args, **kwargs)
            timer.begin_pass()
            return result
        if timer.open:
            timer.end_pass()
        return self.run(*args, **kwargs)


class _Given:
    """The main process's after_batch, timed whole (a function, not a pipeline), with the move before it."""

    def __init__(self, stage: Any, step: int):
        self.stage, self.step = stage, step

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.stage.timer
        if not (timer.open and timer.active and _from_iter()):
            return self.stage.run(*args, **kwargs)
        start = _take_move(timer)
        begin = perf_counter_ns()
        result = self.stage.run(*args, **kwargs)
        end = perf_counter_ns()
        _add(timer.given_acc, self.step, end - begin)
        timer.give(start or begin, end)
        return result


def _from_iter() -> bool:
    """True when the loader's `__iter__` called the main process's after_batch (its wrapper is the caller's callee):
    not `TfmdDL._one_pass`, which `decode` runs from a callback in the middle of a pass."""
    return sys._getframe(2).f_code.co_name == "__iter__"


def _take_move(timer: LoaderTimer) -> int:
    """The move to the device just before this after_batch, added to the batch's main-process rows: its start, or 0."""
    move = getattr(_MOVES, "last", None)
    if move is None:
        return 0
    _MOVES.last = None
    _add(timer.given_acc, timer.move_id, move[1] - move[0])
    return move[0]


def _add(acc: dict[int, list[int]], step: int, ns: int) -> None:
    entry = acc.get(step)
    if entry is None:
        acc[step] = [ns, 1]
    else:
        entry[0] += ns
        entry[1] += 1


class TimedPipeline(Pipeline):
    """A `Pipeline` whose call times each transform; every attribute read from, and written to, the real one."""

    def __init__(self, pipe: Pipeline, timer: LoaderTimer, stage: int, steps: list[tuple[type, int]], other: int,
                 main: bool = False):
        vars(self).update(pipe=pipe, timer=timer, stage=stage, steps=steps, other=other, main=main,
                          exact=type(pipe).__call__ is _PIPELINE_CALL)

    fs = property(lambda self: self.pipe.fs, lambda self, value: setattr(self.pipe, "fs", value))
    split_idx = property(lambda self: self.pipe.split_idx, lambda self, value: setattr(self.pipe, "split_idx", value))
    default = property(lambda self: self.pipe.default, lambda self, value: setattr(self.pipe, "default", value))

    def __getattr__(self, name: str) -> Any:
        pipe = vars(self).get("pipe")
        if pipe is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(pipe, name)

    def __getstate__(self) -> dict[str, Any]:
        return dict(vars(self))

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)

    def __repr__(self) -> str:
        return repr(self.pipe)

    def __call__(self, o: Any) -> Any:
        timer = self.timer
        if not timer.active or not ((timer.open and _from_iter()) if self.main else timer.making):
            return self.pipe(o)
        acc = timer.given_acc if self.main else None
        moved = _take_move(timer) if self.main else 0
        begin = perf_counter_ns()
        if self.exact:
            split, steps, add = self.pipe.split_idx, self.steps, timer.add
            for index, tfm in enumerate(self.pipe.fs):
                start = perf_counter_ns()
                o = tfm(o, split_idx=split)
                end = perf_counter_ns()
                step = steps[index][1] if index < len(steps) and steps[index][0] is type(tfm) else self.other
                if acc is None:
                    add(step, start, end)
                else:
                    _add(acc, step, end - start)
        else:
            o = self.pipe(o)
        end = perf_counter_ns()
        if self.stage >= 0:
            if acc is None:
                timer.add(self.stage, begin, end)
            else:
                _add(acc, self.stage, end - begin)
        if self.main:
            timer.give(moved or begin, end)
        return o


def _name(tfm: Any) -> str:
    return transform_step(tfm, None).name


# -- putting the wrappers on a loader --------------------------------------------------------------------------


class DataTiming:
    """The loaders one trace times: their wrappers, the step names (`steps`) and the main process's rows (`rows`)."""

    def __init__(self) -> None:
        self.spool = Spool()
        self.steps: list[list[str]] = []  # [loader, stage, step, per] per step id
        self.ids: dict[tuple[str, str, str], int] = {}
        self.rows = array("q")
        self.timers: list[LoaderTimer] = []
        self.patches = instrument.PatchSet()
        self.loaders: list[int] = []
        self.skipped: list[str] = []  # the loaders not timed, and why

    def register(self, loader: str, stage: str, step: str, per: str) -> int:
        """The id of a step, given one the first time it is named."""
        key = (loader, stage, step)
        if key not in self.ids:
            self.ids[key] = len(self.steps)
            self.steps.append([loader, stage, step, per])
        return self.ids[key]

    def watch(self, dl: Any, name: str) -> None:
        """Time this loader's loop from now on (a fastai DataLoader; anything else is noted as not timed)."""
        if not isinstance(dl, DataLoader):
            self.skipped.append(f"{name}: a {type(dl).__name__}, not a fastai DataLoader")
            return
        if id(dl) in _LOADERS:
            self.skipped.append(f"{name}: timed by another trace already")
            return
        with instrument.guarded():
            if not _SHARED:
                _SHARED.install(DataLoader, "new", _wrap_new)
                _SHARED.install(fastai_load, "to_device", _wrap_move)
            timer = LoaderTimer(name, self.spool, self.rows,
                                lambda stage, step, per: self.register(name, stage, step, per))
            patches = [self.patches.put(dl, attr, wrapper) for attr, wrapper in _wrappers(dl, timer)]
            patches += [self.patches.put(tl, "tfms", timed) for tl, timed in _item_pipelines(dl, timer)]
            _LOADERS[id(dl)] = patches
            self.timers.append(timer)
            self.loaders.append(id(dl))

    def finish(self, data: Any) -> None:
        """Stop timing and put the steps and rows into the trace's data (`TraceData`)."""
        steps, rows = self.stop()
        data.data_steps, data.data_work = steps, rows
        if self.skipped:
            data.meta["data_not_timed"] = list(self.skipped)

    def stop(self) -> tuple[list[list[str]], array]:
        """Take every wrapper off and gather the rows (the workers' from the spool): (steps, rows)."""
        with instrument.guarded():
            for timer in self.timers:
                if timer.open:
                    timer.end_pass()
                timer.active = False
            for key in self.loaders:
                _LOADERS.pop(key, None)
            self.patches.restore()
            if not _LOADERS:
                _SHARED.restore()
        rows = array("q", self.rows)
        rows.extend(self.spool.read())
        self.spool.remove()
        return self.steps, rows


def _wrappers(dl: DataLoader, timer: LoaderTimer) -> list[tuple[str, Any]]:
    """(attribute, wrapper) for each stage of the loader that its loop looks up on the instance."""
    register = timer.register
    out: list[tuple[str, Any]] = [
        ("before_iter", _PassEdge(timer, dl.before_iter, dl, "before_iter", True)),
        ("after_iter", _PassEdge(timer, dl.after_iter, dl, "after_iter", False)),
        ("create_batches", _MakingStart(timer, dl.create_batches, dl, "create_batches")),
        ("do_batch", _BatchEnd(timer, dl.do_batch, dl, "do_batch")),
    ]
    if overrides(dl, "do_item"):  # a tabular loader: an item is its index, do_item reads nothing yet
        timer.item_id = register("do_item", "", "item")
        out.append(("do_item", TimedStage(timer, dl.do_item, dl, "do_item", timer.item_id)))
        stages = (("before_batch", "batch"), ("create_batch", "batch"), ("retain", "batch"))
    else:
        timer.item_id = register("create_item", "", "item")
        out.append(("create_item", TimedStage(timer, dl.create_item, dl, "create_item", timer.item_id)))
        stages = (("after_item", "item"), ("before_batch", "batch"), ("create_batch", "batch"), ("retain", "batch"))
    for stage, per in stages:
        out.append((stage, _timed(dl, timer, stage, per)))
    after = _timed(dl, timer, "after_batch", "batch", main=True)
    out.append(("after_batch", after if isinstance(after, TimedPipeline) else _Given(after, after.step)))
    return out


def _timed(dl: DataLoader, timer: LoaderTimer, stage: str, per: str, main: bool = False) -> Any:
    """A stage's wrapper: a TimedPipeline for a Pipeline, else the stage timed whole."""
    original = getattr(dl, stage)
    stage_id = timer.register(stage, "", per)
    if isinstance(original, Pipeline):
        return _timed_pipeline(original, timer, stage, per, stage_id, main)
    return TimedStage(timer, original, dl, stage, stage_id)


def _timed_pipeline(pipe: Pipeline, timer: LoaderTimer, stage: str, per: str, stage_id: int, main: bool = False,
                    label: str = "{}") -> TimedPipeline:
    steps = [(type(tfm), timer.register(stage, label.format(_name(tfm)), per)) for tfm in pipe.fs]
    other = timer.register(stage, label.format("(transforms added during the trace)"), per)
    return TimedPipeline(pipe, timer, stage_id, steps, other, main)


def _item_pipelines(dl: DataLoader, timer: LoaderTimer) -> list[tuple[Any, TimedPipeline]]:
    """The type transforms a Datasets' (or TfmdLists') items go through, per element, as create_item's steps."""
    if overrides(dl, "do_item") or overrides(dl, "create_item"):
        return []
    dataset = dl.dataset
    lists = list(enumerate(dataset.tls)) if hasattr(dataset, "tls") else (
        [(None, dataset)] if hasattr(dataset, "tfms") and hasattr(dataset, "items") else [])
    out = []
    for index, tl in lists:
        pipe = vars(tl).get("tfms")
        if isinstance(pipe, Pipeline) and not isinstance(pipe, TimedPipeline):
            label = "{}" if index is None else f"{{}} (element {index})"
            out.append((tl, _timed_pipeline(pipe, timer, "create_item", "item", -1, label=label)))
    return out


def _wrap_new(original: Callable[..., Any]) -> Callable[..., Any]:
    """`DataLoader.new` runs with the loader's own stages, so the new loader is made as without the trace."""

    def new(self: DataLoader, *args: Any, **kwargs: Any) -> Any:
        patches = _LOADERS.get(id(self))
        if not patches:
            return original(self, *args, **kwargs)
        held = [(patch, vars(patch.owner).get(patch.name, instrument.MISSING)) for patch in patches
                if patch.owner is not None]
        for patch, _ in held:
            _set(patch.owner, patch.name, patch.before)
        try:
            return original(self, *args, **kwargs)
        finally:
            for patch, value in held:
                _set(patch.owner, patch.name, value)

    new.__wrapped__ = original  # type: ignore[attr-defined]
    new.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return new


def _set(owner: Any, name: str, value: Any) -> None:
    if value is instrument.MISSING:
        vars(owner).pop(name, None)
    else:
        vars(owner)[name] = value


def _wrap_move(original: Callable[..., Any]) -> Callable[..., Any]:
    """fastai.data.load's `to_device` (the move of a batch in `DataLoader.__iter__`), timed for the next after_batch."""

    def to_device(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter_ns()
        result = original(*args, **kwargs)
        _MOVES.last = (start, perf_counter_ns())
        return result

    to_device.__wrapped__ = original  # type: ignore[attr-defined]
    to_device.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return to_device


def timed_loaders() -> int:
    """How many loaders are timed right now (0 when no data wrapper is installed)."""
    return len(_LOADERS)
