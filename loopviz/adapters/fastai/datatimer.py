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
from time import perf_counter_ns
from typing import Any, Callable

import fastai.data.load as fastai_load
from fastai.data.load import DataLoader
from fasttransform.transform import Pipeline

from loopviz.adapters.fastai.dataloop import overrides, transform_step
from loopviz.adapters.loader_timer import DataTiming, LoaderTimer, TimedStage, Wrapper, add_to, wrappers_on
from loopviz.trace import instrument

__all__ = ["FastaiTiming", "TimedPipeline"]

_PIPELINE_CALL = Pipeline.__call__  # what a pipeline does when called; a subclass that replaces it is timed whole
_MOVES = threading.local()  # the last move to a device in this thread: (start, end), taken by the next after_batch


class _MakingStart(Wrapper):
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


class _BatchEnd(Wrapper):
    """`do_batch`: a batch is made when it returns."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not (timer.making and timer.active):
            return self.run(*args, **kwargs)
        result = self.run(*args, **kwargs)
        timer.end_batch(perf_counter_ns())
        return result


class _PassEdge(Wrapper):
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
        add_to(timer.given_acc, self.step, end - begin)
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
    add_to(timer.given_acc, timer.move_id, move[1] - move[0])
    return move[0]


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
                    add_to(acc, step, end - start)
        else:
            o = self.pipe(o)
        end = perf_counter_ns()
        if self.stage >= 0:
            if acc is None:
                timer.add(self.stage, begin, end)
            else:
                add_to(acc, self.stage, end - begin)
        if self.main:
            timer.give(moved or begin, end)
        return o


def _name(tfm: Any) -> str:
    return transform_step(tfm, None).name


# -- putting the wrappers on a loader --------------------------------------------------------------------------


class FastaiTiming(DataTiming):
    """The fastai loaders one trace times (`learn.trace(data=True)`)."""

    shared = instrument.PatchSet()  # `DataLoader.new` and `to_device`, while any fastai loader is timed

    def refuses(self, loader: Any) -> str | None:
        return None if isinstance(loader, DataLoader) else f"a {type(loader).__name__}, not a fastai DataLoader"

    def install_shared(self) -> None:
        self.shared.install(DataLoader, "new", _wrap_new)
        self.shared.install(fastai_load, "to_device", _wrap_move)

    def attach(self, loader: Any, timer: LoaderTimer) -> list[tuple[Any, str, Any]]:
        return ([(loader, attr, wrapper) for attr, wrapper in _wrappers(loader, timer)]
                + [(tl, "tfms", timed) for tl, timed in _item_pipelines(loader, timer)])


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
        patches = wrappers_on(self)
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
