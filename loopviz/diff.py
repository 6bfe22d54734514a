"""Differences: between two loops (which callbacks were added, removed or moved at each event) and
between two traces (what got slower or faster)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loopviz.checks import check_type
from loopviz.errors import LoopvizError
from loopviz.model import Event, Handler, LoopSpec, Phase
from loopviz.trace.compare import (
    ALPHA, MIN_SAMPLES, Side, assess, count_column, holm_adjust, recording_differences, run_totals, side_by_side,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["diff", "diff_traces", "TraceDiff", "DEFAULT_MIN_CHANGE", "parse_min_change"]


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
    events and work, and all callbacks. `data`: with a data loop timed (data=True) in either trace, its steps per
    loader, stage and transform, judged per batch in the same way (None otherwise). `warnings`: how the two traces were recorded differently (options, clock,
    framework, loops). `labels` name the two traces in errors."""

    def __init__(self, before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE,
                 labels: tuple[str, str] = ("before", "after")):
        from loopviz.trace.notes import check_recorded_a_loop
        from loopviz.trace.trace import check_trace

        check_trace("before", before)
        check_trace("after", after)
        self.min_change_ms, self.min_change_fraction = parse_min_change(min_change)
        old, new = (_side(label, trace) for label, trace in zip(labels, (before, after)))
        for label, side in zip(labels, (old, new)):
            check_recorded_a_loop(side.data, so="there is nothing to compare", name=f"the {label} trace")
        self.warnings = recording_differences(old.data, new.data)
        events = side_by_side(old.summary, new.summary, ["kind", "name", "phase"])
        callbacks = side_by_side(old.by_callback, new.by_callback, ["callback", "event", "phase"])
        for df, samples_old, samples_new in ((events, old.durations.summary, new.durations.summary),
                                             (callbacks, old.durations.by_callback, new.durations.by_callback)):
            assess(df, samples_old, samples_new, old.run_ms)
        totals = run_totals(old, new)
        data = _data_side_by_side(old, new)  # the data loop's steps, when either trace timed it (data=True)
        self.tested = holm_adjust(events, callbacks, *([data] if data is not None else []))
        self.events = self._judge(events)
        self.callbacks = self._judge(callbacks)
        self.data = self._judge(data) if data is not None else None
        self.steps = (len(old.durations.steps), len(new.durations.steps))
        self.totals = self._judge_totals(totals)

    def _passes_minimum(self, df: "pd.DataFrame") -> "pd.Series":
        """Whether each row's change passes `min_change`: per occurrence (at the count after), or of the run for a
        row on one side only."""
        one_side = df["test"] == "one side"
        per_occurrence = (df["mean_ms_after"] - df["mean_ms_before"]) * df[count_column(df) + "_after"]
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
        tables = [("events", self.events, " "), ("callbacks", self.callbacks, ".")]
        if self.data is not None:
            tables.append(("data loop", self.data.assign(phase=""), " "))
        for table, df, sep in tables:
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
        if self.data is not None and len(self.data):
            shown = len(self.data) if limit is None else limit
            parts.append(display.rows_table(_for_display(self.data), "Data loop: before / after (per batch)",
                                            {"loader": "loader", "stage": "stage", "step": "transform", **_COLUMNS},
                                            shown, "see .data"))
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


_COLUMNS = {"total_ms_before": "before ms", "total_ms_after": "after ms", "change_ms": "change ms",
            "change_pct_text": "change %", "noise": "noise test", "verdict": "verdict"}


def _side(label: str, trace: Any) -> Side:
    """What a diff reads of one trace; an error naming `label` if it cannot be summarised."""
    from loopviz.trace.reports import row_durations

    try:
        return Side(trace.summary(), trace.by_callback(), trace.total_ns() / 1e6, row_durations(trace.data),
                     trace.data)
    except Exception as e:
        raise LoopvizError(f"{label}: cannot compare this trace ({type(e).__name__}: {e})") from e


def _data_side_by_side(old: Side, new: Side) -> "pd.DataFrame | None":
    """The data loop's steps side by side and assessed (per batch), or None when neither trace timed it."""
    from loopviz.trace.datatiming import data_rows

    (before, old_samples), (after, new_samples) = data_rows(old.data), data_rows(new.data)
    if not len(before) and not len(after):
        return None
    table = side_by_side(before, after, ["loader", "stage", "step"])
    assess(table, old_samples, new_samples, old.run_ms)
    return table


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


def diff_traces(before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE) -> TraceDiff:
    """Compare two traces (e.g. before and after a data-loader change), the biggest change first, with totals; a
    verdict where a change passes `min_change` ('5%' of the time before, per occurrence; '0.5ms', a number of ms, or
    a list of these; 0 or None: any change) and the noise (a rank test of the two traces' durations)."""
    return TraceDiff(before, after, min_change=min_change)
