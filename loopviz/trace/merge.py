"""Traces of several processes (the ranks of a distributed fit) merged into one view.

Each rank records its own trace, with no collective and no extra synchronisation; each trace carries
its rank, world size and host, and the wall clock read together with the host's monotonic clock at
its start. `merge` lines them up on the wall clock: on one machine every process reads the same
clock, so the timelines agree to within the microseconds it takes to read it twice
(`meta["origin_error_ns"]`); across machines they agree as well as the machines' clocks do (NTP:
typically a millisecond or better), which is why per-rank durations, not cross-machine timestamps,
back the straggler report.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from loopviz.checks import check_type, got
from loopviz.errors import LoopvizError
from loopviz.trace.chrome import chrome_trace
from loopviz.trace.files import write_json
from loopviz.trace.reports import origin_ns
from loopviz.trace.trace import Trace

__all__ = ["merge", "MergedTrace"]


class MergedTrace:
    """One trace per rank, lined up: summaries across ranks, stragglers, and one Chrome/Perfetto file."""

    def __init__(self, traces: list[Trace]):
        self.traces = sorted(traces, key=lambda t: int(t.meta.get("rank", 0)))
        self.ranks = [int(t.meta.get("rank", 0)) for t in self.traces]

    def per_rank(self) -> pd.DataFrame:
        """Each rank's summary rows, with a `rank` column."""
        frames = []
        for rank, t in zip(self.ranks, self.traces):
            frame = t.summary()
            frame.insert(0, "rank", rank)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Per event/work and phase, total ms across ranks: min, median, max, and the slowest rank."""
        per = self.per_rank()
        rows = []
        for (kind, name, phase), group in per.groupby(["kind", "name", "phase"], sort=False):
            totals = group.set_index("rank")["total_ms"]
            rows.append((kind, name, phase, int(group["count"].max()), len(group), totals.min(), totals.median(),
                         totals.max(), int(totals.idxmax()), totals.max() - totals.min()))
        df = pd.DataFrame(rows, columns=["kind", "name", "phase", "count", "ranks", "min_ms", "median_ms", "max_ms",
                                         "slowest_rank", "spread_ms"])
        return df.sort_values("max_ms", ascending=False, ignore_index=True)

    def callbacks(self) -> pd.DataFrame:
        """Which callbacks each rank ran at which event: rank-dependent callbacks show up as missing cells."""
        frames = []
        for rank, t in zip(self.ranks, self.traces):
            frame = t.by_callback()[["callback", "event", "phase", "ran", "total_ms"]].copy()
            frame.insert(0, "rank", rank)
            frames.append(frame)
        df = pd.concat(frames, ignore_index=True)
        return df.pivot_table(index=["callback", "event", "phase"], columns="rank", values="ran", aggfunc="sum").reset_index()

    def stragglers(self, event: str = "after_backward", before: str = "before_backward") -> pd.DataFrame:
        """Per rank: how long it waited in the work from `before` to `event` for the slowest rank to arrive.

        With DistributedDataParallel the gradient all-reduce inside backward makes every rank wait for the
        last one: for each batch, the rank that began backward first waits longest. Waits are computed
        per batch from each rank's own start times on the merged (wall-clock) timeline.
        """
        starts = []
        for rank, t in zip(self.ranks, self.traces):
            f = t.firings_df()
            begin = f[f["event"].astype(str) == before]
            done = f[f["event"].astype(str) == event]
            if not len(begin) or not len(done):
                raise LoopvizError(f"rank {rank}'s trace has no {before}/{event} firings to compare.")
            n = min(len(begin), len(done))
            begin, done = begin.iloc[:n], done.iloc[:n]
            keyed = pd.DataFrame({"loop": begin["loop_index"].to_numpy(), "epoch": begin["epoch"].to_numpy(),
                                  "iter": begin["iter"].to_numpy(), "rank": rank,
                                  "start": t.to_unix_ns(begin["end"].to_numpy()),
                                  "work": done["start"].to_numpy() - begin["end"].to_numpy()})
            starts.append(keyed)
        df = pd.concat(starts, ignore_index=True)
        latest = df.groupby(["loop", "epoch", "iter"])["start"].transform("max")
        df["wait_ns"] = (latest - df["start"]).clip(lower=0)
        out = df.groupby("rank").agg(batches=("iter", "size"), backward_ms=("work", lambda v: v.sum() / 1e6),
                                     wait_ms=("wait_ns", lambda v: v.sum() / 1e6),
                                     max_wait_ms=("wait_ns", lambda v: v.max() / 1e6)).reset_index()
        return out

    def chrome(self) -> dict[str, Any]:
        """One Chrome/Perfetto trace as JSON-ready data: a process track per rank, on one wall-clock timeline."""
        origin = min(int(t.to_unix_ns(origin_ns(t.data))) for t in self.traces if t.n_firings)
        events: list[dict[str, Any]] = []
        for rank, t in zip(self.ranks, self.traces):
            title = f"rank {rank} of {t.meta.get('world_size', len(self.traces))} ({t.meta.get('host', '?')})"
            one = chrome_trace(t, origin_unix_ns=origin, pid=rank, title=title)
            events += one["traceEvents"]
            events.append({"ph": "M", "name": "process_sort_index", "pid": rank, "args": {"sort_index": rank}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"baseTimeNanoseconds": origin, "ranks": self.ranks}}

    def to_chrome(self, path: str | Path) -> Path:
        """Write `chrome()` to a file (gzip-compressed when the name ends in .gz)."""
        return write_json(self.chrome(), path)

    def __str__(self) -> str:
        from loopviz.trace.display import merged_text

        return merged_text(self)

    __repr__ = __str__


def merge(sources: Iterable[str | Path | Trace]) -> MergedTrace:
    """Merge the traces of a distributed run (paths or `Trace`s, one per rank) into one view."""
    traces = [_trace(i, source) for i, source in enumerate(_listed(sources))]
    if not traces:
        raise LoopvizError("merge needs at least one trace (one per rank).")
    ranks = [int(t.meta.get("rank", 0)) for t in traces]
    if len(set(ranks)) != len(ranks):
        raise LoopvizError(f"these traces do not come from distinct ranks (ranks {ranks}); merge one trace per rank.")
    sizes = {int(t.meta.get("world_size", 1)) for t in traces}
    if len(sizes) > 1:
        raise LoopvizError(f"these traces come from runs of different sizes (world sizes {sorted(sizes)}).")
    frameworks = {t.framework for t in traces}
    if len(frameworks) > 1:
        raise LoopvizError(f"these traces come from different loops ({sorted(frameworks)}).")
    return MergedTrace(traces)


def _listed(sources: Any) -> list[Any]:
    """The sources as a list; a clear error for one path (a string is iterable too) or anything not iterable."""
    wanted = "a list of traces (paths or Traces, one per rank), e.g. merge(['trace.rank0.json', 'trace.rank1.json'])"
    if isinstance(sources, (str, bytes, os.PathLike, Trace)):
        one = "one Trace" if isinstance(sources, Trace) else f"one path, {got(sources)}"
        raise LoopvizError(f"sources must be {wanted}, not {one}.")
    try:
        return list(sources)
    except TypeError:
        raise LoopvizError(f"sources must be {wanted}, not {got(sources)}.") from None


def _trace(index: int, source: Any) -> Trace:
    """A trace given to merge, loaded if it is a path."""
    if isinstance(source, Trace):
        return source
    return Trace.load(check_type(f"sources[{index}]", source, (str, os.PathLike), "a path or a Trace"))
