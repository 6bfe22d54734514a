"""Two traces compared row by row: each row of the summary and of the per-callback table side by side, and
whether its change is beyond the noise (a rank test of the two traces' own durations, Holm-adjusted over the rows).

Analysis, like `reports`: pure functions of the two traces' tables and raw durations, which `loopviz.diff.TraceDiff`
shows and judges against its minimum change.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Side", "ALPHA", "MIN_SAMPLES", "side_by_side", "assess", "run_totals", "holm_adjust", "rank_test",
           "recording_differences", "count_column"]

ALPHA = 0.001  # beyond the noise: a two-sided Mann-Whitney U p-value, Holm-adjusted over the rows, under this
MIN_SAMPLES = 8  # fewer occurrences a side: no verdict (8 vs 8 is the fewest whose rank test can reach p < 0.001)


class Side(NamedTuple):
    """What a trace diff reads of one trace: its tables, run time (ms), raw durations and recording options."""

    summary: "pd.DataFrame"
    by_callback: "pd.DataFrame"
    run_ms: float
    durations: Any  # reports.RowDurations
    data: Any  # TraceData


def count_column(df: "pd.DataFrame") -> str:
    """The name of a table's count column: 'count' (events and work) or 'calls' (callbacks)."""
    return "count" if "count_before" in df.columns else "calls"


def side_by_side(before: "pd.DataFrame", after: "pd.DataFrame", keys: list[str]) -> "pd.DataFrame":
    """Per key, count, total and mean per occurrence before and after, the change (ms) and ratio of the totals;
    the biggest change first, whichever its sign."""
    count = "count" if "count" in before.columns else "calls"

    def per_key(df: "pd.DataFrame") -> "pd.DataFrame":
        cols = df.assign(p95=df["p95_ms"] if "p95_ms" in df.columns else df["p95_us"] / 1e3,
                         p50=df["p50_ms"] if "p50_ms" in df.columns else float("nan"),
                         ran=df["ran"] if "ran" in df.columns else df[count])
        return cols.groupby(keys, as_index=False, sort=False).agg(
            **{count: (count, "sum"), "total_ms": ("total_ms", "sum"), "p50": ("p50", "max"), "p95": ("p95", "max"),
               "ran": ("ran", "sum")})

    merged = per_key(before).merge(per_key(after), on=keys, how="outer", suffixes=("_before", "_after"))
    numbers = [c for c in merged.columns if c not in keys]
    merged[numbers] = merged[numbers].fillna({c: 0 for c in numbers if not c.startswith("p50")})
    for side in ("before", "after"):
        n = merged[f"{count}_{side}"]
        merged[f"{count}_{side}"] = n.astype("int64")
        merged[f"mean_ms_{side}"] = (merged[f"total_ms_{side}"] / n.where(n > 0)).fillna(0.0)
    merged["change_ms"] = merged["total_ms_after"] - merged["total_ms_before"]
    merged["ratio"] = merged["total_ms_after"] / merged["total_ms_before"].where(merged["total_ms_before"] > 0)
    order = merged["change_ms"].abs().sort_values(ascending=False, kind="stable").index
    return merged.loc[order].reset_index(drop=True)


def assess(df: "pd.DataFrame", old: dict[Any, Any], new: dict[Any, Any], run_ms: float) -> None:
    """Add to `df` each row's test, raw p-value, whether it is beyond the noise (rank-tested rows: once adjusted),
    the direction the ranks moved, the change in % (per occurrence, or of the run) and a note."""
    keys = list(df.columns[:3])
    assessed = [_assess_row(row, old.get(key), new.get(key), run_ms, count_column(df))
                for key, row in zip(zip(*(df[k] for k in keys)), df.to_dict("records"))]
    for column, values in zip(_Assessed._fields, zip(*assessed) if assessed else [[]] * len(_Assessed._fields)):
        df[column] = list(values)
    df["beyond_noise"] = df["beyond_noise"].astype(bool)
    spread = ["p50_before", "p50_after", "p95_before", "p95_after"]
    df.drop(columns=spread + (["ran_before", "ran_after"] if "calls_before" not in df.columns else []), inplace=True)


class _Assessed(NamedTuple):
    """One row's comparison (see `_assess`)."""

    test: str  # 'rank test', 'aggregates', 'one side', 'too few' or 'skipped'
    p: float  # the rank test's p-value (Holm-adjusted later), nan where not tested
    beyond_noise: bool
    direction: int  # +1: the ranks moved up (slower), -1 down, 0: not known
    change_pct: float  # the change per occurrence in % of the mean before; a row on one side only: % of the run
    note: str


def _assess_row(row: dict[str, Any], old: Any, new: Any, run_ms: float, count: str) -> _Assessed:
    """Compare one row's two sides: by ranks, by aggregates, or not at all (see `TraceDiff`)."""
    import numpy as np

    n_old, n_new = row[f"{count}_before"], row[f"{count}_after"]
    mean_old, mean_new = row["mean_ms_before"], row["mean_ms_after"]
    if min(row["ran_before"], row["ran_after"]) == 0 and max(n_old, n_new) > 0 and min(n_old, n_new) > 0:
        return _Assessed("skipped", float("nan"), False, 0, _pct(mean_new - mean_old, mean_old), "skipped")
    if n_old == 0 or n_new == 0:
        skipped = row["ran_before"] + row["ran_after"] == 0
        note = "skipped" if skipped else "only after" if n_old == 0 else "only before"
        return _Assessed("skipped" if skipped else "one side", float("nan"), not skipped, 0,
                         _pct(row["change_ms"], run_ms), note)
    pct = _pct(mean_new - mean_old, mean_old)
    notes = [f"n {n_old:,} -> {n_new:,}"] if n_old != n_new else []
    old = old if old is not None else np.zeros(0)
    new = new if new is not None else np.zeros(0)
    if min(len(old), len(new)) >= MIN_SAMPLES:
        if len(old) < n_old or len(new) < n_new:
            notes.append(f"raw {len(old):,} vs {len(new):,}")
        p, direction = rank_test(old, new)
        return _Assessed("rank test", p, False, direction, pct, "; ".join(notes))
    if min(n_old, n_new) >= MIN_SAMPLES:  # past the raw-record cap: the aggregates only
        # the bulk moved past both traces' spread: their ranges, median +- (p95 - median), do not overlap (medians
        # and p95s, not means: a mean moves with a few outliers)
        low_old, low_new = (2 * row[f"p50_{side}"] - row[f"p95_{side}"] for side in ("before", "after"))
        slower = low_new > row["p95_before"] and pct > 0
        faster = low_old > row["p95_after"] and pct < 0
        return _Assessed("aggregates", float("nan"), bool(slower or faster), int(np.sign(pct)), pct,
                         "; ".join([*notes, "aggregates"]))
    return _Assessed("too few", float("nan"), False, 0, pct, "; ".join([*notes, f"too few: {n_old}/{n_new}"]))


def _pct(change: float, of: float) -> float:
    """`change` in % of `of` (inf where `of` is 0 and the change is not)."""
    if of > 0:
        return 100 * change / of
    return 0.0 if change == 0 else float("inf") if change > 0 else float("-inf")


def rank_test(old: Any, new: Any) -> tuple[float, int]:
    """Two-sided Mann-Whitney U test of `new` against `old` (the normal approximation with the tie and continuity
    corrections, as scipy's method='asymptotic'; numpy only, so `loopviz diff` starts fast): its p-value and which
    way the ranks moved (+1: `new` ranks higher, -1: lower, 0: neither)."""
    import math

    import numpy as np

    both = np.concatenate([np.asarray(new, float), np.asarray(old, float)])
    n_new, n_old, n = len(new), len(old), len(both)
    _, inverse, ties = np.unique(both, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(ties) - ties + 1
    ranks = (first_rank + (ties - 1) / 2)[inverse]  # tied values share their average rank
    u = float(ranks[:n_new].sum()) - n_new * (n_new + 1) / 2
    mean = n_new * n_old / 2
    variance = n_new * n_old / 12 * ((n + 1) - float((ties ** 3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:  # every duration the same on both sides
        return 1.0, 0
    z = max(abs(u - mean) - 0.5, 0.0) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2))), int(np.sign(u - mean))


def run_totals(old: Side, new: Side) -> "pd.DataFrame":
    """The run, events and work, and all callbacks, before and after; the run's test is on its batch step times
    (compared by ranks as the rows are), all callbacks have none (no per-batch distribution; their rows have one)."""
    import numpy as np
    import pandas as pd

    work = [float(s.loc[s["kind"].isin(["event", "work"]), "total_ms"].sum()) for s in (old.summary, new.summary)]
    rows = [("run", old.run_ms, new.run_ms), ("events and work", *work),
            ("callbacks", float(old.by_callback["total_ms"].sum()), float(new.by_callback["total_ms"].sum()))]
    totals = pd.DataFrame(rows, columns=["total", "total_ms_before", "total_ms_after"])
    totals["change_ms"] = totals["total_ms_after"] - totals["total_ms_before"]
    totals["ratio"] = totals["total_ms_after"] / totals["total_ms_before"].where(totals["total_ms_before"] > 0)
    totals["change_pct"] = 100 * totals["change_ms"] / totals["total_ms_before"].where(totals["total_ms_before"] > 0)
    steps_old, steps_new = old.durations.steps, new.durations.steps
    tested = min(len(steps_old), len(steps_new)) >= MIN_SAMPLES
    p, direction = rank_test(steps_old, steps_new) if tested else (np.nan, 0)
    totals["test"] = ["rank test" if tested else "too few", "", ""]
    totals["p"] = [p, np.nan, np.nan]
    totals["direction"] = [direction, 0, 0]
    totals["beyond_noise"] = False
    totals["note"] = ["" if tested else f"too few batches: {len(steps_old)}/{len(steps_new)}", "", ""]
    return totals


def holm_adjust(*tables: "pd.DataFrame") -> int:
    """Holm-adjust the rank tests' p-values over every table at once, then mark the rows beyond the noise (adjusted
    p < ALPHA, ranks moving as the mean does); returns how many rows were tested."""
    import numpy as np

    tested = [(t, t.index[t["test"] == "rank test"]) for t in tables]
    raw = np.concatenate([t.loc[rows, "p"].to_numpy(float) for t, rows in tested]) if tested else np.zeros(0)
    order = np.argsort(raw, kind="stable")
    adjusted = np.empty(len(raw))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(raw[order] * (len(raw) - np.arange(len(raw)))))
    start = 0
    for table, rows in tested:
        table.loc[rows, "p"] = adjusted[start:start + len(rows)]
        start += len(rows)
        moved = np.sign(table.loc[rows, "change_pct"].to_numpy(float)) == table.loc[rows, "direction"].to_numpy()
        significant = table.loc[rows, "p"].to_numpy(float) < ALPHA
        table.loc[rows, "beyond_noise"] = significant & moved
        against = rows[significant & ~moved]  # a few outliers moved the mean one way, the bulk went the other
        table.loc[against, "note"] = ["; ".join(filter(None, (note, "ranks disagree")))
                                      for note in table.loc[against, "note"]]
    return len(raw)


def recording_differences(before: Any, after: Any) -> list[str]:
    """How two traces (their TraceData) were recorded differently, one sentence each: options (changes, tensors,
    waits, ranges, data), clock, framework, and which loops ran. Options a trace did not record are not compared."""
    from loopviz.trace.reports import outermost_spans

    def options(data: Any) -> dict[str, Any]:
        meta = data.meta if isinstance(data.meta, dict) else {}
        found = {"changes": data.tracked_changes, "tensors": meta.get("tensors"), "waits": data.tracked_waits,
                 "ranges": meta.get("ranges"), "data": meta.get("data"), "clock": data.clock}
        return {k: v for k, v in found.items() if isinstance(v, (bool, str))}

    old, new = options(before), options(after)
    differ = [f"{k}={old[k]!r} vs {new[k]!r}" for k in old if k in new and old[k] != new[k]]
    lines = [f"the traces were recorded with different options ({', '.join(differ)}): their costs differ by that "
             "alone; trace both alike"] if differ else []
    if before.framework != after.framework:
        lines.append(f"the traces are of different frameworks or versions ({before.framework!r} vs "
                     f"{after.framework!r})")
    loops = [[data.loops[i] for i, _ in outermost_spans(data)] for data in (before, after)]
    if loops[0] != loops[1]:
        lines.append(f"the traces ran different loops ({', '.join(loops[0]) or 'none'} vs "
                     f"{', '.join(loops[1]) or 'none'}): their rows are not the same work")
    return lines
