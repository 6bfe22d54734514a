"""`Trace`: what a traced run did and what it cost — framework-free data plus its reports.

A trace holds event firings and callback calls as flat integer arrays (see `loopviz.trace.record`),
the names they refer to, and any aggregates kept past the raw-record cap. Reports are pandas
DataFrames; `save`/`load` round-trip through JSON (gzip for `.gz`); `to_chrome` writes a trace that
ui.perfetto.dev and chrome://tracing open, correctly nested.
"""
from __future__ import annotations

import gzip
import json
import os
import socket
import time
from array import array
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from loopviz.errors import LoopvizError
from loopviz.trace.record import CALL_FIELDS, FIRING_FIELDS, MODES, NC, NF, STATUS, Recorder, _Aggregate

__all__ = ["Trace", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_WORK_FALLBACK = "between events"


class Trace:
    """One traced run: event firings, callback calls, the work between events, and reports on them."""

    def __init__(self) -> None:
        self.framework = ""
        self.clock = "host"
        self.events: list[str] = []
        self.callbacks: list[dict[str, Any]] = []
        self.loops: list[str] = []
        self.firings = array("q")
        self.calls = array("q")
        self.dropped_firings = 0
        self.dropped_calls = 0
        self.no_handler_calls = 0
        self.overflow_firings: dict[tuple[int, int], _Aggregate] = {}
        self.overflow_calls: dict[tuple[int, int, int, int], _Aggregate] = {}
        self.work_names: dict[tuple[str, str], str] = {}
        self.attrs: list[str] = []
        self.change_agg: dict[tuple[int, int, int, int], list[int]] = {}
        self.change_log = array("q")
        self.dropped_changes = 0
        self.tracked_changes = False
        self.meta: dict[str, Any] = {}
        self._recorder: Recorder | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def recording(cls, recorder: Recorder) -> "Trace":
        """A trace that `recorder` fills; usable once `finish()` is called."""
        trace = cls()
        trace._recorder = recorder
        trace.clock = recorder.clock.name
        trace.meta = {"pid": os.getpid(), "host": socket.gethostname(), **_process_identity(), **_clock_origin()}
        return trace

    def finish(self, framework: str = "", work_names: dict[tuple[str, str], str] | None = None) -> None:
        """Take over the recorder's data (resolving any deferred clock times)."""
        rec = self._recorder
        if rec is None:
            return
        rec.drain()
        self.framework = framework
        self.events, self.callbacks, self.loops = rec.events, rec.callbacks, rec.loops
        self.firings, self.calls = rec.firings, rec.calls
        self.dropped_firings, self.dropped_calls = rec.dropped_firings, rec.dropped_calls
        self.no_handler_calls = rec.no_handler_calls
        self.overflow_firings, self.overflow_calls = rec.overflow_firings, rec.overflow_calls
        self.attrs, self.change_agg, self.change_log = rec.attrs, rec.change_agg, rec.change_log
        self.dropped_changes = rec.dropped_changes
        self.work_names = dict(work_names or {})
        self.meta["max_calls"], self.meta["max_firings"] = rec.max_calls, rec.max_firings
        self._recorder = None

    def _check(self) -> None:
        if self._recorder is not None:
            raise LoopvizError("this trace is still recording; read it after the `with learn.trace()` block ends.")

    # -- raw tables ---------------------------------------------------------------------------

    @property
    def n_firings(self) -> int:
        """Event firings recorded raw (not counting dropped ones)."""
        return len(self.firings) // NF

    @property
    def n_calls(self) -> int:
        """Callback calls recorded raw (not counting dropped ones)."""
        return len(self.calls) // NC

    def _firing_matrix(self) -> np.ndarray:
        return np.frombuffer(self.firings, dtype=np.int64).reshape(-1, NF) if self.firings else np.zeros((0, NF), np.int64)

    def _call_matrix(self) -> np.ndarray:
        return np.frombuffer(self.calls, dtype=np.int64).reshape(-1, NC) if self.calls else np.zeros((0, NC), np.int64)

    def firings_df(self) -> pd.DataFrame:
        """One row per event firing: event, phase, epoch, iter, loop, start/end (ns), duration, status."""
        self._check()
        m = self._firing_matrix()
        df = pd.DataFrame(m, columns=list(FIRING_FIELDS))
        df["event"] = pd.Categorical.from_codes(m[:, 0], categories=self.events) if len(m) else pd.Series([], dtype=str)
        df["phase"] = _names(MODES, m[:, 1])
        df["loop"] = _names(self.loops, m[:, 4])
        df["dur"] = df["end"] - df["start"]
        df["status"] = _names(("ok", *STATUS[1:]), m[:, 8])
        df["loop_index"] = m[:, 4]
        return df

    def calls_df(self) -> pd.DataFrame:
        """One row per callback call: the firing it is in, callback, start (ns), duration, status."""
        self._check()
        m = self._call_matrix()
        firings = self._firing_matrix()
        df = pd.DataFrame(m, columns=list(CALL_FIELDS))
        df["callback"] = _names([c["cls"] for c in self.callbacks], m[:, 1])
        df["status"] = _names(STATUS, m[:, 4])
        df["event"] = _names(self.events, firings[m[:, 0], 0])
        df["phase"] = _names(MODES, firings[m[:, 0], 1])
        return df

    def work_df(self) -> pd.DataFrame:
        """The work between consecutive firings of one loop and nesting level (draw, forward, loss...)."""
        self._check()
        m = self._firing_matrix()
        columns = ["work", "after", "before", "phase", "epoch", "iter", "loop", "start", "dur"]
        if len(m) < 2:
            return pd.DataFrame(columns=columns)
        start = np.where(m[:, 9] >= 0, m[:, 9], m[:, 6])
        end = np.where(m[:, 10] >= 0, m[:, 10], m[:, 7])
        order = np.lexsort((np.arange(len(m)), m[:, 5], m[:, 4]))  # by loop, then parent, then firing order
        a, b = order[:-1], order[1:]
        keep = (m[a, 4] == m[b, 4]) & (m[a, 5] == m[b, 5])
        a, b = a[keep], b[keep]
        n = len(self.events)
        names = np.full(n * n, _WORK_FALLBACK, dtype=object)
        for (before, after), work in self.work_names.items():
            if before in self.events and after in self.events:
                names[self.events.index(before) * n + self.events.index(after)] = work
        frame = pd.DataFrame({
            "work": names[m[a, 0] * n + m[b, 0]], "after": _names(self.events, m[a, 0]),
            "before": _names(self.events, m[b, 0]), "phase": _names(MODES, m[b, 1]), "epoch": m[b, 2], "iter": m[b, 3],
            "loop": _names(self.loops, m[b, 4]), "start": end[a], "dur": start[b] - end[a],
        }, columns=columns)
        return frame.sort_values("start", kind="stable", ignore_index=True)


    # -- reports ------------------------------------------------------------------------------

    def total_ns(self) -> int:
        """Wall time covered by the traced loops: first firing's start to last firing's end, per loop, summed."""
        m = self._firing_matrix()
        if not len(m):
            return sum(a.total for a in self.overflow_firings.values())
        top = m[m[:, 5] == -1]
        frame = pd.DataFrame({"loop": top[:, 4], "start": top[:, 6], "end": top[:, 7]})
        spans = frame.groupby("loop").agg(start=("start", "min"), end=("end", "max"))
        return int((spans["end"] - spans["start"]).sum())

    def summary(self) -> pd.DataFrame:
        """Per event and phase, and per kind of work: count, total, mean, p50, p95, max (ms) and % of the run."""
        self._check()
        firings = self.firings_df()
        rows = []
        for (event, phase), group in firings.groupby(["event", "phase"], observed=True, sort=False):
            extra = self.overflow_firings.get((self.events.index(str(event)), MODES.index(phase)))
            rows.append(("event", str(event), phase, *_stats(group["dur"].to_numpy(), extra)))
        for (eid, mode), agg in self.overflow_firings.items():
            if not ((firings["event"] == self.events[eid]) & (firings["phase"] == MODES[mode])).any():
                rows.append(("event", self.events[eid], MODES[mode], *_stats(np.zeros(0, np.int64), agg)))
        work = self.work_df()
        for (name, phase), group in work.groupby(["work", "phase"], sort=False):
            rows.append(("work", name, phase, *_stats(group["dur"].to_numpy(), None)))
        dispatch = self._dispatch_ns(firings)
        if len(dispatch):
            rows.append(("work", "dispatch (fastai's own)" if self.framework.startswith("fastai") else "dispatch", "",
                         *_stats(dispatch, None)))
        df = pd.DataFrame(rows, columns=["kind", "name", "phase", "count", "total_ms", "mean_ms", "p50_ms", "p95_ms", "max_ms", "approx"])
        total = self.total_ns() / 1e6
        df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
        return df

    def _dispatch_ns(self, firings: pd.DataFrame) -> np.ndarray:
        """Per firing: time inside the event that no callback's call accounts for (the loop's own dispatch)."""
        calls = self._call_matrix()
        if not len(firings):
            return np.zeros(0, np.int64)
        direct = np.zeros(len(firings), np.int64)
        np.add.at(direct, calls[:, 0], calls[:, 3])
        # nested firings happen inside a callback's call, so they are already inside `direct`
        return firings["dur"].to_numpy() - direct

    def by_callback(self) -> pd.DataFrame:
        """Per callback, event and phase: calls, how many ran/skipped/cancelled/raised, total and mean time."""
        self._check()
        calls = self.calls_df()
        rows = []
        for (cb, event, phase), group in calls.groupby(["callback", "event", "phase"], sort=False):
            status = group["status"]
            dur = group["dur"].to_numpy()
            rows.append((cb, event, phase, len(group), int((status == "ran").sum()),
                         int(status.str.startswith("skipped").sum() + (status == "no_handler").sum()),
                         int((status == "cancelled").sum()), int((status == "error").sum()),
                         dur.sum() / 1e6, dur.mean() / 1e3, float(np.percentile(dur, 95)) / 1e3))
        for (eid, mode, cid, st), agg in self.overflow_calls.items():
            rows.append((self.callbacks[cid]["cls"], self.events[eid] if eid >= 0 else "", MODES[mode], agg.count,
                         agg.count if STATUS[st] == "ran" else 0,
                         agg.count if STATUS[st] in ("no_handler", "skipped_run", "skipped_run_train", "skipped_run_valid") else 0,
                         agg.count if STATUS[st] == "cancelled" else 0, agg.count if STATUS[st] == "error" else 0,
                         agg.total / 1e6, agg.total / agg.count / 1e3, _hist_percentile(agg.hist, 95) / 1e3))
        df = pd.DataFrame(rows, columns=["callback", "event", "phase", "calls", "ran", "skipped", "cancelled", "errors",
                                         "total_ms", "mean_us", "p95_us"])
        df = df.groupby(["callback", "event", "phase"], as_index=False, sort=False).agg(
            calls=("calls", "sum"), ran=("ran", "sum"), skipped=("skipped", "sum"), cancelled=("cancelled", "sum"),
            errors=("errors", "sum"), total_ms=("total_ms", "sum"), mean_us=("mean_us", "mean"), p95_us=("p95_us", "max"))
        total = self.total_ns() / 1e6
        df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
        return df.sort_values("total_ms", ascending=False, ignore_index=True)

    def to_df(self) -> pd.DataFrame:
        """Every span (event firings, callback calls, work between events) in one DataFrame, times in ms from the start."""
        self._check()
        firings, calls, work = self.firings_df(), self.calls_df(), self.work_df()
        origin = int(firings["start"].min()) if len(firings) else 0
        fm = self._firing_matrix()
        frames = [
            pd.DataFrame({"kind": "event", "name": firings["event"].astype(str), "callback": "", "phase": firings["phase"],
                          "epoch": firings["epoch"], "iter": firings["iter"], "loop": firings["loop"],
                          "start_ms": (firings["start"] - origin) / 1e6, "dur_ms": firings["dur"] / 1e6,
                          "status": firings["status"]}),
            pd.DataFrame({"kind": "callback", "name": calls["event"], "callback": calls["callback"], "phase": calls["phase"],
                          "epoch": fm[calls["firing"].to_numpy(), 2], "iter": fm[calls["firing"].to_numpy(), 3],
                          "loop": _names(self.loops, fm[calls["firing"].to_numpy(), 4]),
                          "start_ms": (calls["start"] - origin) / 1e6, "dur_ms": calls["dur"] / 1e6, "status": calls["status"]}),
            pd.DataFrame({"kind": "work", "name": work["work"], "callback": "", "phase": work["phase"], "epoch": work["epoch"],
                          "iter": work["iter"], "loop": work["loop"], "start_ms": (work["start"] - origin) / 1e6,
                          "dur_ms": work["dur"] / 1e6, "status": "ok"}),
        ]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=["kind", "name", "callback", "phase", "epoch", "iter", "loop", "start_ms", "dur_ms", "status"])
        return pd.concat(frames, ignore_index=True).sort_values("start_ms", kind="stable", ignore_index=True)

    def changes(self) -> pd.DataFrame:
        """Which learner state each callback changed, per event and phase: how often, first and last (epoch, iter)."""
        self._check()
        if not self.tracked_changes:
            raise LoopvizError("this trace did not record state changes; trace with learn.trace(changes=True).")
        rows = [(self.callbacks[cid]["cls"], self.events[eid] if eid >= 0 else "", MODES[mode], self.attrs[aid], *agg)
                for (eid, mode, cid, aid), agg in self.change_agg.items()]
        df = pd.DataFrame(rows, columns=["callback", "event", "phase", "attribute", "count", "first_epoch", "first_iter",
                                         "last_epoch", "last_iter"])
        return df.sort_values(["event", "phase", "callback", "attribute"], ignore_index=True)

    def who_changed(self, attribute: str) -> pd.DataFrame:
        """Every recorded change of one attribute, in time order: when, at which event, by which callback.

        `attribute` is a full name ('learn.opt.hypers.lr') or its last part ('lr').
        """
        self._check()
        if not self.tracked_changes:
            raise LoopvizError("this trace did not record state changes; trace with learn.trace(changes=True).")
        matches = [i for i, name in enumerate(self.attrs) if name == attribute or name.split(".")[-1] == attribute
                   or name == f"learn.{attribute}"]
        if not matches:
            known = ", ".join(sorted(self.attrs)) or "none"
            raise LoopvizError(f"no callback changed {attribute!r} in this trace; changed attributes: {known}.")
        log = np.frombuffer(self.change_log, dtype=np.int64).reshape(-1, 3) if self.change_log else np.zeros((0, 3), np.int64)
        log = log[np.isin(log[:, 2], matches)]
        firings = self._firing_matrix()
        return pd.DataFrame({
            "epoch": firings[log[:, 0], 2], "iter": firings[log[:, 0], 3], "phase": _names(MODES, firings[log[:, 0], 1]),
            "event": _names(self.events, firings[log[:, 0], 0]), "callback": _names([c["cls"] for c in self.callbacks], log[:, 1]),
            "attribute": _names(self.attrs, log[:, 2]), "loop": _names(self.loops, firings[log[:, 0], 4]),
        })

    def select(self, loops: Iterable[str | int]) -> "Trace":
        """A trace of only the given loops (labels such as 'fit' or indices into `loops`); aggregates kept past
        the raw-record cap cannot be split by loop, so they are left out (and said so in the notes)."""
        self._check()
        wanted = {i for i, label in enumerate(self.loops) for key in loops if key == i or key == label}
        m = self._firing_matrix()
        keep = np.isin(m[:, 4], list(wanted)) if len(m) else np.zeros(0, bool)
        new_index = np.cumsum(keep) - 1
        firings = m[keep].copy()
        firings[:, 5] = np.where(firings[:, 5] >= 0, np.where(keep[firings[:, 5]], new_index[firings[:, 5]], -1), -1)
        calls = self._call_matrix()
        calls = calls[keep[calls[:, 0]]].copy() if len(calls) else calls
        if len(calls):
            calls[:, 0] = new_index[calls[:, 0]]
        t = Trace()
        t.framework, t.clock, t.meta = self.framework, self.clock, {**self.meta, "selected_loops": sorted(wanted)}
        t.events, t.callbacks, t.loops, t.work_names = self.events, self.callbacks, self.loops, self.work_names
        t.firings, t.calls = array("q", firings.ravel().tolist()), array("q", calls.ravel().tolist())
        t.no_handler_calls = self.no_handler_calls
        t.tracked_changes, t.attrs = self.tracked_changes, self.attrs
        log = np.frombuffer(self.change_log, dtype=np.int64).reshape(-1, 3) if self.change_log else np.zeros((0, 3), np.int64)
        log = log[keep[log[:, 0]]].copy() if len(log) else log
        if len(log):
            log[:, 0] = new_index[log[:, 0]]
        t.change_log = array("q", log.ravel().tolist())
        t.change_agg = {k: v for k, v in self.change_agg.items()}  # per (event, callback) over all loops
        return t

    def to_unix_ns(self, host_ns: Any) -> Any:
        """Host-clock times of this trace (ns, scalar or array) as wall-clock ns since the epoch."""
        origin = self.meta.get("perf_origin_ns")
        if origin is None:  # a trace without a recorded origin: anchor its first firing at its start time
            origin = int(self._firing_matrix()[:, 6].min()) if self.n_firings else 0
        return host_ns - origin + int(self.meta.get("start_unix_ns", 0))

    def notes(self) -> list[str]:
        """What a reader of the reports should know: dropped records, the clock used."""
        out = []
        if self.dropped_changes:
            out.append(f"{self.dropped_changes:,} state changes past the raw-record cap are in .changes() but not in .who_changed().")
        if self.no_handler_calls:
            out.append(f"{self.no_handler_calls:,} calls to callbacks with no handler for the event (the loop calls every "
                       "callback at every event) are counted, not timed one by one: their cost is in 'dispatch'.")
        if self.dropped_firings or self.dropped_calls:
            out.append(f"{self.dropped_firings:,} firings and {self.dropped_calls:,} callback calls dropped past the "
                       f"raw-record cap (max_firings={self.meta.get('max_firings')}, max_calls={self.meta.get('max_calls')}); "
                       "their counts and totals are in the reports, percentiles from them are approximate, and work "
                       "between events covers the recorded firings only.")
        if self.clock == "host":
            out.append("clock: host (perf_counter_ns). On a GPU this is launch time, not GPU time; trace with clock='cuda'.")
        else:
            out.append(f"clock: {self.clock} (event boundaries and work on the GPU timeline; callback calls on the host clock).")
        return out

    # -- display ------------------------------------------------------------------------------

    def __rich__(self) -> Any:
        from loopviz.trace.display import trace_tables

        return trace_tables(self)

    def __str__(self) -> str:
        from loopviz.trace.display import trace_text

        return trace_text(self)

    def __repr__(self) -> str:
        if self._recorder is not None:
            return "<Trace: still recording>"
        return str(self)

    def _repr_html_(self) -> str:
        from loopviz.trace.display import trace_html

        return trace_html(self)

    # -- files --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything in the trace as JSON-ready data."""
        self._check()
        return {
            "format": "loopviz-trace", "version": FORMAT_VERSION, "framework": self.framework, "clock": self.clock,
            "meta": self.meta, "events": self.events, "callbacks": self.callbacks, "loops": self.loops,
            "firing_fields": list(FIRING_FIELDS), "call_fields": list(CALL_FIELDS),
            "firings": self.firings.tolist(), "calls": self.calls.tolist(),
            "dropped_firings": self.dropped_firings, "dropped_calls": self.dropped_calls,
            "no_handler_calls": self.no_handler_calls,
            "overflow_firings": [[list(k), a.to_json()] for k, a in self.overflow_firings.items()],
            "overflow_calls": [[list(k), a.to_json()] for k, a in self.overflow_calls.items()],
            "work_names": [[a, b, n] for (a, b), n in self.work_names.items()],
            "tracked_changes": self.tracked_changes, "attrs": self.attrs,
            "change_agg": [[list(k), v] for k, v in self.change_agg.items()],
            "change_log": self.change_log.tolist(), "dropped_changes": self.dropped_changes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Trace":
        """A trace from `to_json()` data; a clear error for anything else."""
        if not isinstance(data, dict) or data.get("format") != "loopviz-trace":
            raise LoopvizError("not a loopviz trace: the file has no 'format': 'loopviz-trace' field.")
        if data.get("version") != FORMAT_VERSION:
            raise LoopvizError(f"loopviz trace version {data.get('version')!r} is not supported; this loopviz reads version {FORMAT_VERSION}.")
        if data.get("firing_fields") != list(FIRING_FIELDS) or data.get("call_fields") != list(CALL_FIELDS):
            raise LoopvizError("this loopviz trace has different record fields than this loopviz version reads.")
        t = cls()
        t.framework, t.clock, t.meta = data["framework"], data["clock"], data["meta"]
        t.events, t.callbacks, t.loops = data["events"], data["callbacks"], data["loops"]
        t.firings, t.calls = array("q", data["firings"]), array("q", data["calls"])
        t.dropped_firings, t.dropped_calls = data["dropped_firings"], data["dropped_calls"]
        t.no_handler_calls = data["no_handler_calls"]
        t.overflow_firings = {tuple(k): _Aggregate.from_json(a) for k, a in data["overflow_firings"]}  # type: ignore[misc]
        t.overflow_calls = {tuple(k): _Aggregate.from_json(a) for k, a in data["overflow_calls"]}  # type: ignore[misc]
        t.work_names = {(a, b): n for a, b, n in data["work_names"]}
        t.tracked_changes, t.attrs = data["tracked_changes"], data["attrs"]
        t.change_agg = {tuple(k): v for k, v in data["change_agg"]}  # type: ignore[misc]
        t.change_log, t.dropped_changes = array("q", data["change_log"]), data["dropped_changes"]
        return t

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON (gzip-compressed when the name ends in .gz)."""
        path = Path(path)
        text = json.dumps(self.to_json(), separators=(",", ":"))
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode("utf-8")))
        else:
            path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Read a trace written by `save`."""
        path = Path(path)
        if not path.exists():
            raise LoopvizError(f"no trace file at {str(path)!r}.")
        raw = path.read_bytes()
        try:
            text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LoopvizError(f"{str(path)!r} is not a loopviz trace (not JSON: {e}).") from e
        return cls.from_json(data)

    def to_chrome(self, path: str | Path) -> Path:
        """Write a Chrome/Perfetto trace (JSON, `.gz` compressed): events, callback calls and work, nested."""
        from loopviz.trace.chrome import chrome_trace

        path = Path(path)
        text = json.dumps(chrome_trace(self), separators=(",", ":"))
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode("utf-8")))
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def plot(self, loop: int = 0) -> Any:
        """Matplotlib figure: time per batch (work and callbacks) over the batches of one loop, and one batch's timeline."""
        self._check()
        from loopviz.trace.plot import plot_trace

        return plot_trace(self, loop)


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


def _names(names: Any, codes: np.ndarray) -> np.ndarray:
    """Names for integer codes, vectorised; '' for a code of -1 (no loop, no firing)."""
    table = np.array([*names, ""], dtype=object)
    return table[np.where((codes >= 0) & (codes < len(names)), codes, len(names))]


def _stats(durations: np.ndarray, extra: _Aggregate | None) -> tuple[int, float, float, float, float, float, bool]:
    """count, total, mean, p50, p95, max (ms) and whether the percentiles are approximate."""
    count = len(durations) + (extra.count if extra else 0)
    total = int(durations.sum()) + (extra.total if extra else 0)
    biggest = max(int(durations.max()) if len(durations) else 0, extra.max if extra else 0)
    if extra is None or extra.count == 0:
        p50, p95 = (float(np.percentile(durations, 50)), float(np.percentile(durations, 95))) if len(durations) else (0.0, 0.0)
        approx = False
    else:
        hist = list(extra.hist)
        for d in durations:
            hist[min(int(d).bit_length(), len(hist) - 1)] += 1
        p50, p95, approx = _hist_percentile(hist, 50), _hist_percentile(hist, 95), True
    mean = total / count if count else 0.0
    return count, total / 1e6, mean / 1e6, p50 / 1e6, p95 / 1e6, biggest / 1e6, approx


def _hist_percentile(hist: list[int], q: float) -> float:
    """A percentile from a log2 histogram: the upper edge (2**bucket ns) of the bucket holding it."""
    total = sum(hist)
    if not total:
        return 0.0
    target = q / 100 * total
    seen = 0
    for bucket, n in enumerate(hist):
        seen += n
        if seen >= target:
            return float(2 ** bucket)
    return float(2 ** (len(hist) - 1))
