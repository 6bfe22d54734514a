"""`Trace`: what a traced run did and what it cost — a `TraceData` plus its reports, files and views.

The data (names, flat records, aggregates past the cap, state changes, metadata) is one `TraceData`
(`loopviz.trace.data`); every one of its fields reads and writes as an attribute of the trace
(`t.events`, `t.loops`, `t.dropped_calls` ...). Reports (`loopviz.trace.reports`) are pandas
DataFrames; `save`/`load` round-trip through JSON (gzip for `.gz`, `loopviz.trace.files`); `to_chrome`
writes a trace that ui.perfetto.dev and chrome://tracing open, correctly nested.

numpy, pandas and the report, chrome and plot modules are imported by the methods that need them, so
importing this module stays cheap.
"""
from __future__ import annotations

import html
import os
import socket
import time
from dataclasses import fields, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable

from loopviz.checks import check_output_path, check_str, check_type
from loopviz.errors import LoopvizError
from loopviz.trace import files
from loopviz.trace.data import TraceData
from loopviz.trace.files import FORMAT_VERSION
from loopviz.trace.notes import trace_notes
from loopviz.trace.record import Recorder

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Trace", "FORMAT_VERSION", "check_trace", "finished"]

_RECORDING = "<Trace: still recording; its reports are ready when the `with` block ends or after t.stop()>"
_NOT_STARTED = ("this trace was never started: it records what runs between t.start() and t.stop() (t = learn.trace(); "
                "t.start(); learn.fit(1); t.stop()), or inside `with learn.trace() as t:`")


def finished(data: TraceData, framework: str = "", work_names: dict[tuple[str, str], str] | None = None,
             batch_events: tuple[str, str] | None = None, advice: dict[str, Any] | None = None) -> TraceData:
    """A recorder's closed data with what its adapter says of the loop (`Trace.finish`'s arguments)."""
    meta = {**data.meta, "batch_events": list(batch_events)} if batch_events else data.meta
    if advice:
        meta = {**meta, "advice": advice}
    return replace(data, framework=framework, work_names=dict(work_names or {}), meta=meta)


def _reports() -> ModuleType:
    """The reports module, imported on first use (it imports numpy and pandas)."""
    from loopviz.trace import reports

    return reports


class Trace:
    """One traced run: event firings, callback calls, the work between events, and reports on them.

    Every field of `TraceData` is also an attribute of the trace, read from and written to `data`.
    """

    def __init__(self, data: TraceData | None = None) -> None:
        self.data = data if data is not None else TraceData()
        self._recorder: Recorder | None = None
        self._stop: Callable[[], None] | None = None
        self._start: Callable[[], Any] | None = None  # starts the recording, while the trace waits to be started
        self._measure_cost: Callable[[], dict[str, Any]] | None = None

    if TYPE_CHECKING:  # the TraceData fields, added as properties below, for type checkers
        def __getattr__(self, name: str) -> Any: ...

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def recording(cls, recorder: Recorder, stop: Callable[[], None] | None = None,
                  measure_cost: Callable[[], dict[str, Any]] | None = None,
                  start: Callable[[], Any] | None = None) -> Trace:
        """A trace that `recorder` fills; usable once `finish()` is called. `stop` ends the recording (what leaving
        the `with` block does), for `stop()`; `start` starts it (what entering the tracer does, which then calls
        `started()`), for `start()`; `measure_cost` measures what the tracer adds per firing and per handler call
        (`loopviz.trace.cost`), called once, when the trace is first read."""
        trace = cls(recorder.data)
        trace._recorder = recorder
        trace._stop = stop
        trace._start = start
        trace._measure_cost = measure_cost
        trace.meta.update(pid=os.getpid(), host=socket.gethostname(), **_process_identity(), **_clock_origin())
        return trace

    def finish(self, framework: str = "", work_names: dict[tuple[str, str], str] | None = None,
               batch_events: tuple[str, str] | None = None, advice: dict[str, Any] | None = None) -> None:
        """Take over the recorder's data (resolving any deferred clock times). `batch_events`: the events that open
        and close a batch in this loop, if not fastai's before_batch and after_batch (the per-batch charts use them);
        `advice`: what a diagnosis says in the framework's words (`loopviz.trace.diagnose.ADVICE_KEYS`)."""
        rec = self._recorder
        if rec is None:
            return
        self.data = finished(rec.close(), framework, work_names, batch_events, advice)
        self._recorder = None
        self._stop = None

    @property
    def recording_now(self) -> bool:
        """True while the trace is still recording (inside its `with` block, before `stop()`)."""
        return self._recorder is not None and self._start is None

    def start(self) -> Trace:
        """Start recording, as entering `with learn.trace() as t:` does, where a `with` block does not fit (a
        notebook's cells): `t = learn.trace(); t.start()`, then the fit, then `t.stop()`. Returns the trace."""
        start = self._start
        if start is None:
            state = "is recording already" if self.recording_now else "has ended"
            raise LoopvizError(f"this trace {state}: a trace records once; start a new one with learn.trace() (or "
                               "loopviz.tracing(obj)).")
        start()
        return self

    def started(self) -> None:
        """Said by the tracer as it starts recording (by `start()` or its own `with`): `start()` is used up."""
        self._start = None

    def __enter__(self) -> Trace:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> Trace:
        """End the recording now, as leaving the `with` block does, and return the trace; nothing happens to a trace
        that has ended. For a trace entered without `with` (or a block that never ends), this puts fastai back."""
        if self._start is not None:
            raise LoopvizError(f"{_NOT_STARTED}.")
        if self._stop is not None:
            self._stop()
        self.finish()
        return self

    def _check(self) -> None:
        if self._start is not None:
            raise LoopvizError(f"{_NOT_STARTED}.")
        if self._recorder is not None:
            raise LoopvizError("this trace is still recording; read it after the `with learn.trace()` block ends, "
                               "or end it now with `t.stop()`.")
        if self._measure_cost is not None:
            self._measure()

    def _measure(self) -> None:
        """Measure, once, what recording cost (after the run: measuring during it would change what it measures)."""
        from loopviz.trace.cost import COST_KEY, unmeasured

        measure, self._measure_cost = self._measure_cost, None
        if measure is None or COST_KEY in self.meta:
            return
        try:
            self.meta[COST_KEY] = measure()
        except Exception as exc:  # the views still show the trace, saying why its cost is unknown
            self.meta[COST_KEY] = unmeasured(f"measuring it failed ({type(exc).__name__}: {exc})")
        except BaseException:  # Ctrl-C while measuring: measured at the next read instead
            self._measure_cost = measure
            raise

    def tracing_cost(self) -> Any:
        """What recording this trace added to its run, about: a `TracingCost` (ms added, share of the run, per firing
        and per handler call, measured once per process on a stand-in loop with this trace's options), or None when
        it was not measured (`loopviz.trace.cost.why_unmeasured(t.data)` says why)."""
        self._check()
        from loopviz.trace.cost import tracing_cost

        return tracing_cost(self.data)

    def select(self, loops: str | int | Iterable[str | int]) -> Trace:
        """A trace of only the given loops (a label such as 'fit' or an index into `loops`, or a list of them), with
        those loops' aggregates past the raw-record cap; aggregates whose loop is unknown (version-1 files) are kept
        whole, and the notes say so."""
        self._check()
        from loopviz.trace.select import select_loops

        return Trace(select_loops(self.data, loops))

    # -- raw tables ---------------------------------------------------------------------------

    @property
    def n_firings(self) -> int:
        """Event firings recorded raw (not counting dropped ones)."""
        return self.data.n_firings

    @property
    def n_calls(self) -> int:
        """Callback calls recorded raw (not counting dropped ones)."""
        return self.data.n_calls

    def _firing_matrix(self) -> np.ndarray:
        return _reports().firing_matrix(self.data)

    def _call_matrix(self) -> np.ndarray:
        return _reports().call_matrix(self.data)

    def firings_df(self) -> pd.DataFrame:
        """One row per event firing: event, phase, epoch, iter, loop, start/end (ns), duration, status."""
        self._check()
        return _reports().firings_df(self.data)

    def calls_df(self) -> pd.DataFrame:
        """One row per callback call: the firing it is in, callback, start (ns), duration, status."""
        self._check()
        return _reports().calls_df(self.data)

    def work_df(self) -> pd.DataFrame:
        """The work between consecutive firings of one loop and nesting level (draw, forward, loss...)."""
        self._check()
        return _reports().work_df(self.data)

    # -- reports ------------------------------------------------------------------------------

    def loops_df(self) -> pd.DataFrame:
        """One row per loop: index, label, start/end (ns), duration (ms), the loop and event it ran inside."""
        self._check()
        return _reports().loops_df(self.data)

    def total_ns(self) -> int:
        """Wall time of the run: each outermost loop from its entry point's call to its return, summed (exact past
        the record caps)."""
        return _reports().total_ns(self.data)

    def summary(self) -> pd.DataFrame:
        """Per event and phase, and per kind of work: count, total, mean, p50, p95, max (ms) and % of the run; rows of
        kind 'event' and 'work' tile the run, 'nested event', 'nested work' and 'dispatch' break down events."""
        self._check()
        return _reports().summary(self.data)

    def by_callback(self) -> pd.DataFrame:
        """Per callback, event and phase: calls, how many ran/skipped/cancelled/raised, total and mean time."""
        self._check()
        return _reports().by_callback(self.data)

    def to_df(self) -> pd.DataFrame:
        """Every span (event firings, callback calls, work between events) in one DataFrame, times in ms from the start."""
        self._check()
        return _reports().to_df(self.data)

    def changes(self) -> pd.DataFrame:
        """Which learner state each callback changed, per event and phase: how often, first and last (epoch, iter)."""
        self._check()
        return _reports().changes(self.data)

    def who_changed(self, attribute: str) -> pd.DataFrame:
        """Every recorded change of one attribute, in time order: when, at which event, by which callback.

        `attribute` is a full name ('learn.opt.hypers.lr') or its last part ('lr').
        """
        self._check()
        check_str("attribute", attribute)
        return _reports().who_changed(self.data, attribute)

    def diagnose(self) -> Any:
        """What slows this run, named, with the fix for its framework: a `Diagnosis` (most severe finding first; an
        empty one when nothing does). Reads only the trace's tables, so a loaded trace is diagnosed as it was."""
        self._check()
        from loopviz.trace.diagnose import diagnose
        from loopviz.trace.diagnosis import Diagnosis

        found = diagnose(self.data)
        return Diagnosis(found.framework, found.run_ms, found.findings, found.checked, found.tracing)

    def data_summary(self) -> pd.DataFrame:
        """The data loop's work (trace with `data=True`): per loader, stage and transform, where it ran (worker
        processes or the main process), batches, calls, total ms, ms per batch, µs per call and % of the loader's work,
        in the order the loop runs them."""
        self._check()
        from loopviz.trace.datatiming import data_summary

        return data_summary(self.data)

    def loader_timing(self) -> list[Any]:
        """Per loader timed (`data=True`): who made its batches and how fast, against what the loop consumed and what
        the main process waited (`LoaderTiming`: batches, workers, busy and wait times, batches per second delivered
        and consumed, each pass's first batch, each worker's busy share, the slowest step)."""
        self._check()
        from loopviz.trace.datatiming import loader_timing

        return loader_timing(self.data)

    def gpu_waits(self) -> pd.DataFrame:
        """The callback calls and work that made the host wait for the GPU (trace with `waits=True`), most waited
        first: how many synchronised, of how many, the GPU work they waited out (ms) and where."""
        self._check()
        return _reports().gpu_waits(self.data)

    def to_unix_ns(self, host_ns: Any) -> Any:
        """Host-clock times of this trace (ns, scalar or array) as wall-clock ns since the epoch."""
        return _reports().to_unix_ns(self.data, host_ns)

    def notes(self) -> list[str]:
        """What a reader of the reports should know: dropped records, what could not be split by loop, the clock."""
        return trace_notes(self.data)

    # -- display ------------------------------------------------------------------------------

    def __rich__(self) -> Any:
        if self.recording_now:
            return _RECORDING
        self._check()
        from loopviz.trace.display import trace_tables

        return trace_tables(self)

    def __str__(self) -> str:
        if self._start is not None:
            return f"<Trace: {_NOT_STARTED}>"
        if self.recording_now:
            return _RECORDING
        self._check()
        from loopviz.trace.display import trace_text

        return trace_text(self)

    def __repr__(self) -> str:
        return _RECORDING if self.recording_now else str(self)

    def _repr_html_(self) -> str:
        if self._start is not None or self.recording_now:
            return f"<p><code>{html.escape(str(self))}</code></p>"
        self._check()
        from loopviz.trace.display import trace_html

        return trace_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, str]:
        """What a notebook shows for a cell ending in the trace: its tables as text and HTML in one bundle, made
        once (IPython then calls neither `_repr_html_` nor `__repr__`, nor rich's pretty-printer if installed)."""
        if self._start is not None or self.recording_now:
            return {"text/plain": str(self), "text/html": self._repr_html_()}
        self._check()
        from loopviz.trace.display import bundle, trace_tables

        return bundle(trace_tables(self))

    # -- files --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything in the trace as JSON-ready data, with its diagnosis (`diagnosis`: what `t.diagnose().to_json()`
        gives, for readers of the file without loopviz; loopviz diagnoses a loaded trace again from its tables)."""
        self._check()
        from loopviz.trace.diagnose import diagnose

        return {**files.to_json(self.data), "diagnosis": diagnose(self.data).to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        """A trace from `to_json()` data (this version's or an earlier one's), every field checked; a clear error
        for anything else."""
        return cls(files.from_json(data))

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON (gzip-compressed when the name ends in .gz)."""
        return _write(lambda: self.to_json(), path)

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int | None = None, max_json_bytes: int | None = None) -> Trace:
        """Read a trace written by `save`, checked field by field. At most `max_bytes` are read from disk and
        `max_json_bytes` of JSON text (after gzip); None: the LOOPVIZ_MAX_TRACE_BYTES / LOOPVIZ_MAX_TRACE_JSON_BYTES
        environment variables, else 512 MiB each. A clear error, naming the file and field, for anything else."""
        return cls(files.read_trace(path, max_bytes=max_bytes, max_json_bytes=max_json_bytes))

    def to_chrome(self, path: str | Path) -> Path:
        """Write a Chrome/Perfetto trace (JSON, `.gz` compressed): events, callback calls and work, nested."""
        from loopviz.trace.chrome import chrome_text

        self._check()
        return _write(lambda: chrome_text(self), path)

    def to_perfetto_with(self, profiler: Any, path: str | Path) -> Path:
        """Write one Chrome/Perfetto trace of this trace and a torch.profiler trace of the same fit (the `profile`
        object, or the JSON it exported): loopviz's loop, events, callbacks and work above the profiler's operators
        and kernels, on one clock (exact when traced with `ranges=True`)."""
        from loopviz.trace.profiler import merged_with_profiler

        self._check()
        return _write(lambda: merged_with_profiler(self, profiler), path)

    def to_html(self, path: str | Path, loop: int | str | None = None) -> Path:
        """Write an interactive HTML report: one self-contained file (no network) with the loop heat-coloured by
        time, sortable tables, time per batch and the slowest batch. `loop` picks the loop of the diagram (an
        index or a label; None: the one with the most training batches)."""
        from loopviz.trace.html import html_report

        self._check()
        return _write(lambda: html_report(self, loop), path)

    def plot(self, loop: int | str | None = None, path: str | Path | None = None) -> Any:
        """A matplotlib Figure of one loop: time per training batch stacked by work and event, coloured by family
        (data, model, optimizer, callbacks, waits), and its slowest batch as a timeline. `loop` is an index into
        `loops`, a label that names one loop, or None for the loop with the most training batches; `path` (or a
        file name as the only argument, `t.plot('fit.png')`) also saves it there (.png, .svg, .pdf). The figure is
        pyplot's current one (`plt.savefig`, `plt.show`); a notebook shows it once."""
        self._check()
        if path is None and isinstance(loop, (str, Path)) and Path(str(loop)).suffix.lower() in _FIGURE_FILES:
            loop, path = None, loop  # t.plot('fit.png')
        target = check_output_path("path", path) if path is not None else None
        if target is not None and target.suffix.lower() not in _FIGURE_FILES:
            raise LoopvizError(f"path={str(path)!r}: a plot is saved as {', '.join(sorted(_FIGURE_FILES))}; "
                               "name the file with one of these endings.")
        from loopviz.trace.plot import plot_trace

        fig = plot_trace(self, loop)
        if target is not None:
            _write_figure(fig, target)
        return fig


_FIGURE_FILES = frozenset({".png", ".svg", ".pdf"})


def _write_figure(fig: Any, path: Path) -> None:
    """Save a figure, a clear error if writing fails."""
    try:
        fig.savefig(path)
    except OSError as error:
        raise LoopvizError(f"could not write {str(path)!r}: {error.strerror or error}.") from None


def _write(make: Callable[[], Any], path: Any) -> Path:
    """Write what `make` makes (JSON data, or JSON text) to `path`, checked before anything is made; a clear error if
    writing fails."""
    path = check_output_path("path", path)
    try:
        made = make()
        return files.write_text(made, path) if isinstance(made, str) else files.write_json(made, path)
    except OSError as e:
        raise LoopvizError(f"cannot write {str(path)!r}: {e.strerror or e}.") from e


def _data_attribute(name: str, doc: str) -> property:
    """An attribute of the trace that is the field `name` of its data."""
    def get(trace: Trace) -> Any:
        return getattr(trace.data, name)

    def set_(trace: Trace, value: Any) -> None:
        setattr(trace.data, name, value)

    return property(get, set_, doc=doc)


for _field in fields(TraceData):
    setattr(Trace, _field.name, _data_attribute(_field.name, _field.metadata["doc"]))
del _field


def _process_identity() -> dict[str, int]:
    """Rank, local rank and world size of this process in a distributed run (torchrun/accelerate set them)."""
    def env(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    return {"rank": env("RANK", 0), "local_rank": env("LOCAL_RANK", 0), "world_size": env("WORLD_SIZE", 1)}


def _clock_origin() -> dict[str, int]:
    """The wall clock and the host's monotonic clock read together, so traces of several processes line up."""
    before = time.perf_counter_ns()
    wall = time.time_ns()
    after = time.perf_counter_ns()
    return {"start_unix_ns": wall, "perf_origin_ns": (before + after) // 2, "origin_error_ns": after - before}


def check_trace(argument: str, value: Any, optional: bool = False) -> Any:
    """`value` when it is a finished-or-recording `Trace` (or None, when `optional`)."""
    if value is None and optional:
        return None
    wanted = "a Trace (`with learn.trace() as t: ...`, or Trace.load(path))" + (" or None" if optional else "")
    return check_type(argument, value, Trace, wanted)
