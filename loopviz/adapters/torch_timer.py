"""Timing a torch `DataLoader`'s loop while a Hugging Face Trainer (or another torch loop) is traced with `data=True`:
per batch the dataset's items (`__getitem__`, or its own `__getitems__`) and the collate function (the Trainer's data
collator), in the main process or the worker processes, and in the main process each batch's fetch (what the loop
waits: a worker's batch, or the making of it).

Where torch looks each up on an instance, a wrapper is put there for the trace (through the instrumentation kernel):
the loader's `collate_fn` and `_get_iterator` (a pass begins), and on each iterator the loader makes its `_next_data`
(one batch) and `_reset` (a persistent loader's next pass). torch's `_DatasetKind.create_fetcher` is wrapped while any
torch loader is timed: when the process that makes a pass's batches (a worker, or the main process without workers)
makes its fetcher, the worker learns its id and pass (a persistent worker makes a new fetcher every pass), and the
fetcher is given the dataset behind a thin view that times each item, as torch would fetch it: `dataset[i]` per
index, or the dataset's own `__getitems__`. The user's dataset is never changed. Workers started by fork (Linux's
default before Python 3.14) inherit that wrapper; workers started by spawn or forkserver do not, so only their
batches' fetch in the main process is timed, and the trace says so.
"""
from __future__ import annotations

import functools
import os
from time import perf_counter_ns
from typing import Any, Callable

from loopviz.adapters.loader_timer import DataTiming, LoaderTimer, TimedStage, Wrapper, add_to
from loopviz.trace import instrument
from loopviz.trace.datawork import FETCH

__all__ = ["TorchTiming", "timing_what_it_makes"]

try:
    from torch.utils.data import IterableDataset as _ITERABLE
except ImportError:  # (torch is a dependency of every framework loopviz traces)
    _ITERABLE = ()


class _TimedDataset:
    """The dataset as torch's fetcher of one pass sees it: each item timed (`dataset[i]`, or the dataset's own
    `__getitems__`, timed whole); the user's dataset object is never changed."""

    def __init__(self, dataset: Any, timer: LoaderTimer):
        self.dataset, self.timer, self.step = dataset, timer, timer.item_id
        own = getattr(dataset, "__getitems__", None)
        self.own = own if callable(own) else None

    def __getitem__(self, index: Any) -> Any:  # (a loader without automatic batching fetches one index at a time)
        start = perf_counter_ns()
        item = self.dataset[index]
        self.timer.add(self.step, start, perf_counter_ns())
        return item

    def __getitems__(self, indices: Any) -> Any:
        timer, step = self.timer, self.step
        if self.own is not None:
            start = perf_counter_ns()
            items = self.own(indices)
            timer.add(step, start, perf_counter_ns(), len(indices))
            return items
        return [self[index] for index in indices]

    def __len__(self) -> int:
        return len(self.dataset)


class _Collate(TimedStage):
    """The loader's collate function: a batch is made when it returns."""

    def __init__(self, timer: LoaderTimer, original: Any, owner: Any, step: int):
        super().__init__(timer, original, owner, "collate_fn", step)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = super().__call__(*args, **kwargs)
        if self.timer.making and self.timer.active:
            self.timer.end_batch(perf_counter_ns())
        return result


class _Iterators(Wrapper):
    """The loader's `_get_iterator`: a pass begins (in the main process); the iterator's `_next_data` and `_reset` are
    timed too (put through `put`, so taken off with the rest)."""

    def __init__(self, timer: LoaderTimer, original: Any, owner: Any, fetch: int,
                 put: Callable[[Any, str, Any], Any]):
        super().__init__(timer, original, owner, "_get_iterator")
        self.fetch, self.put = fetch, put

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.timer
        if not timer.active or os.getpid() != timer.main_pid:
            return self.run(*args, **kwargs)
        timer.begin_pass()
        iterator = self.run(*args, **kwargs)
        if hasattr(iterator, "_next_data"):
            self.put(iterator, "_next_data", _Fetch(timer, iterator._next_data, self.fetch))
        if hasattr(iterator, "_reset"):
            self.put(iterator, "_reset", _Reset(timer, iterator._reset))
        return iterator


class _Fetch:
    """One batch fetched by the main process (waiting for a worker's, or making it): a row; the pass ends with it
    when there is none left."""

    __loopviz_wrapper__ = True

    def __init__(self, timer: LoaderTimer, original: Callable[[], Any], step: int):
        self.timer, self.original, self.step = timer, original, step

    def __call__(self) -> Any:
        timer = self.timer
        if not (timer.open and timer.active):
            return self.original()
        start = perf_counter_ns()
        try:
            batch = self.original()
        except StopIteration:
            timer.end_pass()
            raise
        end = perf_counter_ns()
        add_to(timer.given_acc, self.step, end - start)
        timer.give(start, end)
        return batch


class _Reset:
    """A persistent loader's next pass: its workers make a new fetcher each (and so learn the pass)."""

    __loopviz_wrapper__ = True

    def __init__(self, timer: LoaderTimer, original: Callable[..., Any]):
        self.timer, self.original = timer, original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.timer.active and os.getpid() == self.timer.main_pid:
            self.timer.begin_pass()
        return self.original(*args, **kwargs)


def _wrap_create_fetcher(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch's `_DatasetKind.create_fetcher`: the process (a worker, or the main one without workers) starts making
    a pass's batches; a persistent worker's later fetchers are its later passes."""

    def create_fetcher(kind: Any, dataset: Any, auto_collation: Any, collate_fn: Any, drop_last: Any) -> Any:
        timer = getattr(collate_fn, "timer", None) if isinstance(collate_fn, _Collate) else None
        if timer is None or not timer.active:
            return original(kind, dataset, auto_collation, collate_fn, drop_last)
        if os.getpid() != timer.main_pid and timer.making:  # this worker's next pass
            timer.pass_no += 1
        timer.begin_making()
        timer.making = True
        if not isinstance(dataset, _ITERABLE):
            dataset = _TimedDataset(dataset, timer)
        return original(kind, dataset, auto_collation, collate_fn, drop_last)

    create_fetcher.__wrapped__ = original  # type: ignore[attr-defined]
    create_fetcher.__loopviz_wrapper__ = True  # type: ignore[attr-defined]
    return create_fetcher


class TorchTiming(DataTiming):
    """The torch loaders one trace times."""

    shared = instrument.PatchSet()  # torch's `_DatasetKind.create_fetcher`, while any torch loader is timed

    def refuses(self, loader: Any) -> str | None:
        import torch

        if not isinstance(loader, torch.utils.data.DataLoader):
            return f"a {type(loader).__name__}, not a torch DataLoader"
        return None

    def install_shared(self) -> None:
        from torch.utils.data.dataloader import _DatasetKind

        self.shared.install(_DatasetKind, "create_fetcher", _wrap_create_fetcher)

    def attach(self, loader: Any, timer: LoaderTimer) -> list[tuple[Any, str, Any]]:
        method = _start_method(loader)
        if loader.num_workers > 0 and method != "fork":
            self.skipped.append(f"{timer.name}: its workers start by {method}, which does not carry the timing into "
                                "them: only each batch's fetch in the main process is timed")
        register = timer.register
        timer.item_id = register("create_item", "", "item")
        collate = register("create_batch", "", "batch")
        fetch = register(FETCH, "", "batch")
        out: list[tuple[Any, str, Any]] = [
            (loader, "collate_fn", _Collate(timer, loader.collate_fn, loader, collate)),
            (loader, "_get_iterator", _Iterators(timer, loader._get_iterator, loader, fetch,
                                                 lambda owner, name, value: self.patches.put(owner, name, value))),
        ]
        return out

    def watch(self, loader: Any, name: str) -> LoaderTimer | None:
        """Time the loader's loop, under `name` (or 'name 2', 'name 3'... when a loader of that name is timed already:
        a Trainer makes a new evaluation loader at every evaluate). accelerate's loader is timed by the torch loader
        it wraps (its `base_dataloader`)."""
        loader = vars(loader).get("base_dataloader", loader) if hasattr(loader, "__dict__") else loader
        if id(loader) in self.loaders:
            return super().watch(loader, name)
        taken = {timer.name for timer in self.timers}
        unique, number = name, 1
        while unique in taken:
            number += 1
            unique = f"{name} {number}"
        return super().watch(loader, unique)


def timing_what_it_makes(original: Callable[..., Any], timing: TorchTiming, name: str, active: Callable[[], bool],
                         made: Callable[[Any], list[Any]]) -> Callable[..., Any]:
    """`original` (a trainer's `get_*_dataloader`, a loop's method that makes its loaders) wrapped: once it returns,
    the loaders `made(its result)` names are timed as `name`, while the trace records (`active()`)."""

    @functools.wraps(original)
    def making(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if active():
            for loader in made(result):
                timing.watch(loader, name)
        return result

    return making


def _start_method(loader: Any) -> str:
    """How the loader's worker processes start: 'fork', 'spawn' or 'forkserver'."""
    import multiprocessing

    context = loader.multiprocessing_context
    if context is None:
        return multiprocessing.get_start_method(allow_none=False)
    return context if isinstance(context, str) else context.get_start_method()
