"""Differences: between two loops (which callbacks were added, removed or moved at each event) and
between two traces (what got slower or faster)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from loopviz.checks import check_type
from loopviz.errors import LoopvizError
from loopviz.model import Event, Handler, LoopSpec, Phase

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["diff", "diff_traces", "TraceDiff", "DEFAULT_MIN_CHANGE", "parse_min_change", "recording_differences"]


def _index(spec: LoopSpec) -> dict[tuple[str, str | None, int], Event]:
    """Events by (name, mode, how many times that pair came before): how events of two loops are matched."""
    seen: dict[tuple[str, str | None], int] = {}
    out = {}
    for event in [*spec.events(), *spec.custom_events]:
        n = seen.get((event.name, event.mode), 0)
        seen[(event.name, event.mode)] = n + 1
        out[(event.name, event.mode, n)] = event
    return out


def _merge(old: Event | None, new: Event) -> Event:
    """`new`'s handlers marked added, or moved (its `order` changed), against `old`'s; `old`'s missing ones
    are put back, marked removed, where they were."""
    before = {h.callback.cls: h for h in old.handlers} if old else {}
    after = {h.callback.cls for h in new.handlers}
    merged: list[Handler] = []
    for handler in new.handlers:
        cls = handler.callback.cls
        if cls not in before:
            merged.append(replace(handler, diff="added"))
        elif before[cls].callback.order != handler.callback.order:
            merged.append(replace(handler, diff="moved", was_order=before[cls].callback.order))
        else:
            merged.append(handler)
    for position, handler in enumerate(old.handlers if old else []):
        if handler.callback.cls not in after:
            merged.insert(min(position, len(merged)), replace(handler, diff="removed"))
    return replace(new, handlers=merged)


def diff(a: LoopSpec, b: LoopSpec) -> LoopSpec:
    """Loop `b` with every callback marked as added, removed (put back from `a`) or moved, compared with `a`."""
    for argument, spec in (("a", a), ("b", b)):
        check_type(argument, spec, LoopSpec, "a LoopSpec (learn.loop_spec())")
    if a.loop != b.loop:
        raise LoopvizError(f"cannot diff a {a.loop!r} loop with a {b.loop!r} loop; compare two loops of one kind.")
    old = _index(a)
    seen: dict[tuple[str, str | None], int] = {}

    def event(ev: Event, phase: Phase | None) -> Event:
        n = seen.get((ev.name, ev.mode), 0)
        seen[(ev.name, ev.mode)] = n + 1
        return _merge(old.get((ev.name, ev.mode, n)), ev)

    merged = b.map(event=event)
    b_classes = {c.cls for c in b.callbacks}
    removed = [c for c in a.callbacks if c.cls not in b_classes]
    added = [c.cls for c in b.callbacks if c.cls not in {x.cls for x in a.callbacks}]
    summary = (f"compared with the loop before: added {', '.join(added) or 'none'}; "
               f"removed {', '.join(c.cls for c in removed) or 'none'}")
    return replace(merged, callbacks=[*b.callbacks, *removed], compared=summary)


DEFAULT_MIN_CHANGE = "5%"  # a change smaller than 5% of its time before is noise, not a regression
_UNITS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_VERDICTS = ("regression", "improvement", "")  # "": unchanged, or a change under the threshold (noise)


def parse_min_change(value: Any) -> tuple[float, float]:
    """The noise threshold `(ms, fraction)` from `min_change`: None or 0 (none), a number of ms, a string
    '5%', '0.5ms', '200us', '1s' or '2' (ms), or a list of these (a change must pass every one given)."""
    if value is None:
        return 0.0, 0.0
    if isinstance(value, (list, tuple)):
        parts = [parse_min_change(v) for v in value]
        return max([0.0, *(p[0] for p in parts)]), max([0.0, *(p[1] for p in parts)])
    wanted = "a number of ms, or a string such as '5%', '0.5ms', '200us' or '1s'"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoopvizError(f"min_change must be {wanted}; got {value!r}.")
    text = str(value).strip().lower()
    unit = next((u for u in ("%", "ms", "us", "µs", "s") if text.endswith(u)), "")
    try:
        number = float(text[: len(text) - len(unit)].strip())
    except ValueError:
        number = float("nan")
    if not number >= 0 or number == float("inf"):
        raise LoopvizError(f"min_change must be {wanted}, at least 0; got {value!r}.")
    return (0.0, number / 100) if unit == "%" else (number * _UNITS.get(unit or "ms", 1.0), 0.0)


def describe_min_change(min_ms: float, min_fraction: float) -> str:
    """The threshold in words: '5%', '0.5 ms', '5% and 0.5 ms' or 'none'."""
    parts = [f"{min_fraction * 100:g}%"] if min_fraction else []
    parts += [f"{min_ms:g} ms"] if min_ms else []
    return " and ".join(parts) or "none"


class _Side(NamedTuple):
    """What a trace diff reads of one trace: its tables, run time (ms), raw durations and recording options."""

    summary: "pd.DataFrame"
    by_callback: "pd.DataFrame"
    run_ms: float
    durations: Any  # reports.RowDurations
    data: Any  # TraceData


class TraceDiff:
    """Two traces side by side: per event/work and per callback, time before and after, the change, and a verdict:
    'regression' or 'improvement' where the change passes the minimum `min_change` AND the noise, '' where not.

    Noise is judged from the two traces' distributions: each row's raw durations per occurrence (a firing, a piece
    of work, a call; one per batch for batch events and work) are compared with a two-sided Mann-Whitney U test,
    its p-values Holm-adjusted over all the rows tested; a change is beyond the noise when p < `ALPHA` (0.001) and the
    ranks move the way the mean does. The minimum applies per occurrence ('5%' of the mean before), so a row whose
    count changed (more batches) is compared per occurrence, and its `note` says so. No verdict for a row with
    fewer than `MIN_SAMPLES` occurrences a side or whose calls were all skipped (their time is dispatch noise). A row
    on one side only (a callback added or removed) has nothing to compare per occurrence: its verdict needs its total
    to pass the minimum taken of the run. A row past the raw-record cap with too few raw records is judged from its
    aggregates: the two sides' ranges, median +- (p95 - median), must not overlap (callbacks' rows, which have no
    median, get no verdict there). The run is judged on its batch step times, one test at p < `ALPHA`. Rows are ordered by
    the size of their change, biggest first, whichever its sign.

    `min_change`: '5%', '0.5ms', a number (ms), or a list of these (a change must pass every one). `totals`: the run,
    events and work, and all callbacks. `warnings`: how the two traces were recorded differently (options, clock,
    framework, loops). `labels` name the two traces in errors."""

    def __init__(self, before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE,
                 labels: tuple[str, str] = ("before", "after")):
        from loopviz.trace.trace import check_trace

        check_trace("before", before)
        check_trace("after", after)
        self.min_change_ms, self.min_change_fraction = parse_min_change(min_change)
        old, new = (_side(label, trace) for label, trace in zip(labels, (before, after)))
        self.warnings = recording_differences(old.data, new.data)
        events = _side_by_side(old.summary, new.summary, ["kind", "name", "phase"])
        callbacks = _side_by_side(old.by_callback, new.by_callback, ["callback", "event", "phase"])
        for df, samples_old, samples_new in ((events, old.durations.summary, new.durations.summary),
                                             (callbacks, old.durations.by_callback, new.durations.by_callback)):
            _assess(df, samples_old, samples_new, old.run_ms)
        totals = _totals(old, new)
        self.tested = _holm_adjust(events, callbacks)
        self.events = self._judge(events)
        self.callbacks = self._judge(callbacks)
        self.steps = (len(old.durations.steps), len(new.durations.steps))
        self.totals = self._judge_totals(totals)

    def _passes_minimum(self, df: "pd.DataFrame") -> "pd.Series":
        """Whether each row's change passes `min_change`: per occurrence (at the count after), or of the run for a
        row on one side only."""
        one_side = df["test"] == "one side"
        per_occurrence = (df["mean_ms_after"] - df["mean_ms_before"]) * df[_count(df) + "_after"]
        absolute = per_occurrence.where(~one_side, df["change_ms"]).abs()
        relative = df["change_pct"].abs() >= 100 * self.min_change_fraction
        return (absolute > 0) & (absolute >= self.min_change_ms) & relative

    def _judge(self, df: "pd.DataFrame") -> "pd.DataFrame":
        """`df` with its `verdict`: where the change passes the minimum and is beyond the noise."""
        counts = self._passes_minimum(df) & df["beyond_noise"]
        df["verdict"] = ""
        df.loc[counts & (df["change_pct"] > 0), "verdict"] = _VERDICTS[0]
        df.loc[counts & (df["change_pct"] < 0), "verdict"] = _VERDICTS[1]
        return df.drop(columns=["direction"])

    def _judge_totals(self, totals: "pd.DataFrame") -> "pd.DataFrame":
        """The totals with their verdicts: 'events and work' tiles the run, so it has the run's test."""
        import numpy as np

        moved = np.sign(totals.loc[0, "change_pct"]) == totals.loc[0, "direction"]
        totals.loc[0, "beyond_noise"] = bool(totals.loc[0, "p"] < ALPHA and moved)  # the run: one test, unadjusted
        for column in ("test", "p", "beyond_noise", "direction"):
            totals.loc[1, column] = totals.loc[0, column]
        passes = (totals["change_ms"].abs() >= self.min_change_ms) & (totals["change_ms"] != 0) & (
            totals["change_pct"].abs() >= 100 * self.min_change_fraction)
        counts = passes & totals["beyond_noise"].astype(bool)
        totals["verdict"] = ""
        totals.loc[counts & (totals["change_ms"] > 0), "verdict"] = _VERDICTS[0]
        totals.loc[counts & (totals["change_ms"] < 0), "verdict"] = _VERDICTS[1]
        return totals.drop(columns=["direction"])

    @property
    def threshold(self) -> str:
        """The minimum change in words ('5%', '0.5 ms', '5% and 0.5 ms' or 'none')."""
        return describe_min_change(self.min_change_ms, self.min_change_fraction)

    @property
    def method(self) -> str:
        """How the verdicts were reached, in one paragraph (the line under the tables)."""
        old, new = self.steps
        minimum = "any change" if self.threshold == "none" else f"a change of at least {self.threshold}"
        return (f"verdicts: {minimum} per occurrence, beyond the noise: Mann-Whitney U p < {ALPHA:g} (two-sided, "
                f"Holm-adjusted over the {self.tested} rows tested); the run: its {old} vs {new} batch step times, p < "
                f"{ALPHA:g}. No verdict: fewer than {MIN_SAMPLES} occurrences a side, or calls all skipped. A row "
                f"on one side only: its total against the run. Past the record cap without raw records: the ranges "
                f"median +- (p95 - median) apart.")

    def regressions(self, pct: float | None = None) -> "pd.DataFrame":
        """The regressions (the run and every row with that verdict) of at least `pct` percent (None: all): where
        (run, events or callbacks), which row, its change (ms, %: per occurrence; of the run for a row on one side
        only), the adjusted p-value and its note."""
        import pandas as pd

        parts = [self.totals[self.totals["total"] == "run"].assign(table="run", row="run")]
        for table, df, sep in (("events", self.events, " "), ("callbacks", self.callbacks, ".")):
            names = [f"{a}{sep}{b}" + (f" ({phase})" if phase else "") for a, b, phase in df.iloc[:, :3].itertuples(
                index=False)]
            parts.append(df.assign(table=table, row=names))
        rows = pd.concat([part[["table", "row", "change_ms", "change_pct", "p", "note", "verdict"]] for part in parts],
                         ignore_index=True)
        rows = rows[rows["verdict"] == _VERDICTS[0]]
        if pct is not None:
            rows = rows[rows["change_pct"] >= pct]
        return rows.drop(columns="verdict").reset_index(drop=True)

    def tables(self, limit: int | None = 15, more: str = "see .events / .callbacks") -> Any:
        """The diff as rich renderables: a summary line, any warnings, both tables (at most `limit` rows each, None:
        all) each ending with its total, and how the verdicts were reached; `more` follows 'N more rows:'."""
        from rich.console import Group
        from rich.text import Text

        from loopviz.renderers.sanitise import one_line
        from loopviz.trace import display

        parts: list[Any] = [self._head(), *(Text(f"warning: {one_line(line)}") for line in self.warnings)]
        for df, title, keys, total in (
                (self.events, "Events and work: before / after", {"kind": "kind", "name": "name", "phase": "phase"},
                 "events and work"),
                (self.callbacks, "Callbacks: before / after", {"callback": "callback", "event": "event", "phase": "phase"},
                 "callbacks")):
            shown = len(df) if limit is None else limit
            table = display.rows_table(_for_display(df), title, {**keys, **_COLUMNS}, shown, more)
            row = _for_display(self.totals[self.totals["total"] == total]).iloc[0]
            table.add_section()
            table.add_row(*[Text("total" if i == 0 else total if i == 1 else "") for i in range(len(keys))],
                          *[Text(display.cell(row[key]), style="bold") for key in _COLUMNS])
            parts.append(table)
        parts.append(Text(self.method))
        return Group(*parts)

    def _head(self) -> Any:
        """The first line: the run before and after, and how many regressions and improvements."""
        import pandas as pd
        from rich.text import Text

        n = {v: int((self.events["verdict"] == v).sum() + (self.callbacks["verdict"] == v).sum()) for v in _VERDICTS[:2]}
        run = self.totals.iloc[0]
        ratio = "" if pd.isna(run["ratio"]) else f", x{run['ratio']:.3f}"
        verdict = f": {run['verdict']}" if run["verdict"] else ""
        return Text.assemble(("Diff", "bold"), f": run {run['total_ms_before']:,.1f} ms -> {run['total_ms_after']:,.1f} "
                             f"ms ({run['change_ms']:+,.1f} ms{ratio}{verdict}); {n['regression']} regression(s), "
                             f"{n['improvement']} improvement(s) in the rows")

    def text(self, limit: int | None = 15, more: str = "see .events / .callbacks", width: int = 120) -> str:
        """The diff as plain text (see `tables`)."""
        from loopviz.trace.display import as_text

        return as_text(self.tables(limit, more), width)

    def __str__(self) -> str:
        return self.text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from loopviz.trace.display import as_html

        return as_html(self.tables())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, str]:
        """What a notebook shows: the tables as text and HTML in one bundle, made once."""
        from loopviz.trace.display import bundle

        return bundle(self.tables())


ALPHA = 0.001  # beyond the noise: a two-sided Mann-Whitney U p-value, Holm-adjusted over the rows, under this
MIN_SAMPLES = 8  # fewer occurrences a side: no verdict (8 vs 8 is the fewest whose rank test can reach p < 0.001)
_COLUMNS = {"total_ms_before": "before ms", "total_ms_after": "after ms", "change_ms": "change ms",
            "change_pct_text": "change %", "noise": "noise test", "verdict": "verdict"}


def _side(label: str, trace: Any) -> _Side:
    """What a diff reads of one trace; an error naming `label` if it cannot be summarised."""
    from loopviz.trace.reports import row_durations

    try:
        return _Side(trace.summary(), trace.by_callback(), trace.total_ns() / 1e6, row_durations(trace.data),
                     trace.data)
    except Exception as e:
        raise LoopvizError(f"{label}: cannot compare this trace ({type(e).__name__}: {e})") from e


def _count(df: "pd.DataFrame") -> str:
    """The name of a table's count column: 'count' (events and work) or 'calls' (callbacks)."""
    return "count" if "count_before" in df.columns else "calls"


def _side_by_side(before: "pd.DataFrame", after: "pd.DataFrame", keys: list[str]) -> "pd.DataFrame":
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


def _assess(df: "pd.DataFrame", old: dict[Any, Any], new: dict[Any, Any], run_ms: float) -> None:
    """Add to `df` each row's test, raw p-value, whether it is beyond the noise (rank-tested rows: once adjusted),
    the direction the ranks moved, the change in % (per occurrence, or of the run) and a note."""
    keys = list(df.columns[:3])
    assessed = [_assess_row(row, old.get(key), new.get(key), run_ms, _count(df))
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
        p, direction = _rank_test(old, new)
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


def _rank_test(old: Any, new: Any) -> tuple[float, int]:
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


def _totals(old: _Side, new: _Side) -> "pd.DataFrame":
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
    p, direction = _rank_test(steps_old, steps_new) if tested else (np.nan, 0)
    totals["test"] = ["rank test" if tested else "too few", "", ""]
    totals["p"] = [p, np.nan, np.nan]
    totals["direction"] = [direction, 0, 0]
    totals["beyond_noise"] = False
    totals["note"] = ["" if tested else f"too few batches: {len(steps_old)}/{len(steps_new)}", "", ""]
    return totals


def _holm_adjust(*tables: "pd.DataFrame") -> int:
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


def _for_display(df: "pd.DataFrame") -> "pd.DataFrame":
    """`df` with its change in % and p-value as the tables show them, and an empty note where it has none."""
    def pct(v: float) -> str:
        return "" if v != v else ("+" if v > 0 else "") + (f"{v:,.1f}%" if abs(v) != float("inf") else "inf")

    def noise(p: float, note: str) -> str:
        shown = "" if p != p else "p<0.001" if p < 0.001 else f"p={p:.3f}"
        return "; ".join(part for part in (shown, note) if part)

    notes = df["note"] if "note" in df.columns else [""] * len(df)
    return df.assign(change_pct_text=[pct(v) for v in df["change_pct"]],
                     noise=[noise(p, note) for p, note in zip(df["p"], notes)])


def recording_differences(before: Any, after: Any) -> list[str]:
    """How two traces (their TraceData) were recorded differently, one sentence each: options (changes, tensors,
    waits, ranges), clock, framework, and which loops ran. Options a trace did not record are not compared."""
    from loopviz.trace.reports import outermost_spans

    def options(data: Any) -> dict[str, Any]:
        meta = data.meta if isinstance(data.meta, dict) else {}
        found = {"changes": data.tracked_changes, "tensors": meta.get("tensors"), "waits": data.tracked_waits,
                 "ranges": meta.get("ranges"), "clock": data.clock}
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


def diff_traces(before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE) -> TraceDiff:
    """Compare two traces (e.g. before and after a data-loader change), the biggest change first, with totals; a
    verdict where a change passes `min_change` ('5%' of the time before, per occurrence; '0.5ms', a number of ms, or
    a list of these; 0 or None: any change) and the noise (a rank test of the two traces' durations)."""
    return TraceDiff(before, after, min_change=min_change)
