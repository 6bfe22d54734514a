"""Timing a loader's loop (`data=True`), whatever the framework: the state each timed loader carries into its worker
processes (`LoaderTimer`: the batch being made, per step its time and calls; rows written per batch to the trace, or
from a worker to the trace's spool), the wrapper of one stage, and the set of loaders one trace times (`DataTiming`),
which each adapter's subclass fills (`loopviz.adapters.fastai.datatimer`, `loopviz.adapters.torch_timer`).

Every wrapper is put on an instance (a loader, its dataset) through the instrumentation kernel and taken off when the
trace ends; once it has ended, any copy of a wrapper left (in a pickle, a worker) passes calls straight through.
"""
from __future__ import annotations

import os
from array import array
from time import perf_counter_ns
from typing import Any, Callable

from loopviz.trace import instrument
from loopviz.trace.datawork import BATCH, MAIN, MAX_DATA_ROWS, MOVE, ND, PASS
from loopviz.trace.spool import Spool

__all__ = ["LoaderTimer", "Wrapper", "TimedStage", "DataTiming", "add_to", "wrappers_on", "timed_loaders"]

_LOADERS: dict[int, list[instrument.Patch]] = {}  # id(loader) -> the wrappers a trace put for it
_KINDS: dict[int, type] = {}  # id(loader) -> the DataTiming subclass timing it


class LoaderTimer:
    """One loader's timing state, copied into each of its worker processes with the loader."""

    def __init__(self, name: str, spool: Spool, sink: array, register: Callable[[str, str, str], int],
                 overflow: list[int] | None = None):
        self.name = name
        self.spool = spool
        self.sink = sink  # the main process's rows (not pickled: a worker writes to the spool)
        self.overflow = overflow if overflow is not None else [0]  # [rows of the main process past MAX_DATA_ROWS], shared by a trace's timers
        self.register = register  # (stage, step, per) -> its step id (main process only)
        self.main_pid = os.getpid()
        self.active = True  # False once the trace ended: every wrapper passes straight through
        self.pass_no = -1
        self.open = False  # the main process is inside a pass of the loader
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
        state["sink"], state["register"], state["overflow"] = array("q"), None, [0]
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
        self.keep((self.pass_id, self.pass_no, MAIN, self.main_pid, -1, self.pass_start, end,
                   end - self.pass_start, self.given))
        self.open = self.making = False

    def give(self, start: int, end: int) -> None:
        """The main process's part of one batch is done (its after_batch returned): its rows."""
        rows = array("q")
        for step, (total, calls) in self.given_acc.items():
            rows.extend((step, self.pass_no, MAIN, self.main_pid, self.given, start, end, total, calls))
        self.keep(rows)
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

    def add(self, step: int, start: int, end: int, calls: int = 1) -> None:
        """A call of a step in the batch being made (`calls`: one call that did that many, a batch's items)."""
        entry = self.acc.get(step)
        if entry is None:
            self.acc[step] = [end - start, calls]
        else:
            entry[0] += end - start
            entry[1] += calls
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
            self.keep(rows)
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
            self.spool.write(rows) if self.worker >= 0 else self.keep(rows)
            self.acc.clear()
        self.making = False

    def keep(self, rows: Any) -> None:
        """Rows of the main process, kept while the trace holds fewer than MAX_DATA_ROWS (past it, counted)."""
        if len(self.sink) < MAX_DATA_ROWS * ND:
            self.sink.extend(rows)
        else:
            self.overflow[0] += len(rows) // ND


class Wrapper:
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


class TimedStage(Wrapper):
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


def add_to(acc: dict[int, list[int]], step: int, ns: int) -> None:
    entry = acc.get(step)
    if entry is None:
        acc[step] = [ns, 1]
    else:
        entry[0] += ns
        entry[1] += 1



class DataTiming:
    """The loaders one trace times: their wrappers, the step names (`steps`) and the main process's rows (`rows`).
    An adapter's subclass says which loaders it times (`refuses`), what it puts on one (`attach`) and what it patches
    while any loader of its kind is timed (`install_shared`, into `shared`)."""

    shared: instrument.PatchSet  # each subclass's own
    kind = "loader"

    def __init__(self) -> None:
        self.spool = Spool()
        self.steps: list[list[str]] = []  # [loader, stage, step, per] per step id
        self.ids: dict[tuple[str, str, str], int] = {}
        self.rows = array("q")
        self.overflow = [0]  # the main process's rows past the cap
        self.timers: list[LoaderTimer] = []
        self.patches = instrument.PatchSet()
        self.loaders: list[int] = []
        self.skipped: list[str] = []  # the loaders not timed, and why
        self.dropped = 0  # rows past MAX_DATA_ROWS, not kept

    def register(self, loader: str, stage: str, step: str, per: str) -> int:
        """The id of a step, given one the first time it is named."""
        key = (loader, stage, step)
        if key not in self.ids:
            self.ids[key] = len(self.steps)
            self.steps.append([loader, stage, step, per])
        return self.ids[key]

    def refuses(self, loader: Any) -> str | None:
        """Why this loader cannot be timed, or None."""
        raise NotImplementedError

    def attach(self, loader: Any, timer: LoaderTimer) -> list[tuple[Any, str, Any]]:
        """(owner, attribute, wrapper) to put for the loader."""
        raise NotImplementedError

    def install_shared(self) -> None:
        """Patch what every timed loader of this kind needs (into `self.shared`)."""

    def watch(self, loader: Any, name: str) -> LoaderTimer | None:
        """Time this loader's loop from now on; one that cannot be is noted (`skipped`) with the reason."""
        if id(loader) in self.loaders:  # timed by this trace already
            return next((timer for timer, key in zip(self.timers, self.loaders) if key == id(loader)), None)
        why = self.refuses(loader)
        if why is None and id(loader) in _LOADERS:
            why = "timed by another trace already"
        if why is not None:
            self.skipped.append(f"{name}: {why}")
            return None
        with instrument.guarded():
            if not len(self.shared):
                self.install_shared()
            timer = LoaderTimer(name, self.spool, self.rows,
                                lambda stage, step, per: self.register(name, stage, step, per), self.overflow)
            _LOADERS[id(loader)] = [self.patches.put(owner, attr, wrapper)
                                    for owner, attr, wrapper in self.attach(loader, timer)]
            _KINDS[id(loader)] = type(self)
            self.timers.append(timer)
            self.loaders.append(id(loader))
        return timer

    def finish(self, data: Any) -> None:
        """Stop timing and put the steps and rows into the trace's data (`TraceData`)."""
        steps, rows = self.stop()
        data.data_steps, data.data_work = steps, rows
        if self.dropped:
            data.meta["data_rows_dropped"] = self.dropped
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
                _KINDS.pop(key, None)
            self.patches.restore()
            if type(self) not in _KINDS.values():
                self.shared.restore()
        rows = array("q", self.rows)
        read, unread = self.spool.read(MAX_DATA_ROWS - len(rows) // ND)
        rows.extend(read)
        self.spool.remove()
        self.dropped = self.overflow[0] + unread
        return self.steps, rows


def wrappers_on(loader: Any) -> list[instrument.Patch]:
    """The patches a trace put for this loader (none when it is not timed)."""
    return _LOADERS.get(id(loader), [])


def timed_loaders() -> int:
    """How many loaders are timed right now (0 when no data wrapper is installed)."""
    return len(_LOADERS)
