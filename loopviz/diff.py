"""Differences: between two loops (which callbacks were added, removed or moved at each event) and
between two traces (what got slower or faster)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loopviz.checks import check_type
from loopviz.errors import LoopvizError
from loopviz.model import Event, Handler, LoopSpec, Phase

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
    """Two traces side by side: per event/work and per callback, time before, after, their change and ratio, and a
    verdict: 'regression' or 'improvement' when the change passes the noise threshold `min_change`, '' when not.

    `min_change`: a change smaller than it is noise; '5%' (of the time before), '0.5ms', a number (ms), or a list
    of these (a change must pass every one). `totals`: the whole run, events and work, and all callbacks, before
    and after. `labels` name the two traces in errors (a trace that cannot be summarised says which it is)."""

    def __init__(self, before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE,
                 labels: tuple[str, str] = ("before", "after")):
        from loopviz.trace.trace import check_trace

        check_trace("before", before)
        check_trace("after", after)
        self.min_change_ms, self.min_change_fraction = parse_min_change(min_change)
        sides = [_tables(label, trace) for label, trace in zip(labels, (before, after))]
        (summary_b, by_cb_b, run_b), (summary_a, by_cb_a, run_a) = sides
        self.events = self._judge(_side_by_side(summary_b, summary_a, ["kind", "name", "phase"]))
        self.callbacks = self._judge(_side_by_side(by_cb_b, by_cb_a, ["callback", "event", "phase"]))
        import pandas as pd

        rows = [("run", run_b, run_a),
                ("events and work", *(float(s.loc[s["kind"].isin(["event", "work"]), "total_ms"].sum())
                                      for s in (summary_b, summary_a))),
                ("callbacks", float(by_cb_b["total_ms"].sum()), float(by_cb_a["total_ms"].sum()))]
        totals = pd.DataFrame(rows, columns=["total", "total_ms_before", "total_ms_after"])
        totals["change_ms"] = totals["total_ms_after"] - totals["total_ms_before"]
        totals["ratio"] = totals["total_ms_after"] / totals["total_ms_before"].where(totals["total_ms_before"] > 0)
        self.totals = self._judge(totals, sort=False)

    def _judge(self, df: "pd.DataFrame", sort: bool = True) -> "pd.DataFrame":
        """`df` with its verdict column: a change counts when it passes both the absolute and relative threshold."""
        change = df["change_ms"].abs()
        before = df["total_ms_before"]
        relative = (change >= self.min_change_fraction * before) | (before <= 0)
        counts = (change > 0) & (change >= self.min_change_ms) & relative
        df["verdict"] = ""
        df.loc[counts & (df["change_ms"] > 0), "verdict"] = _VERDICTS[0]
        df.loc[counts & (df["change_ms"] < 0), "verdict"] = _VERDICTS[1]
        return df

    @property
    def threshold(self) -> str:
        """The noise threshold in words ('5%', '0.5 ms', '5% and 0.5 ms' or 'none')."""
        return describe_min_change(self.min_change_ms, self.min_change_fraction)

    def tables(self, limit: int | None = 15, more: str = "see .events / .callbacks") -> Any:
        """The diff as rich renderables: a summary line, then both tables (at most `limit` rows each, None: all),
        each ending with its total; `more` follows 'N more rows:' under a cut table."""
        from rich.console import Group
        from rich.text import Text

        import pandas as pd

        from loopviz.trace import display

        n = {v: int((self.events["verdict"] == v).sum() + (self.callbacks["verdict"] == v).sum()) for v in _VERDICTS[:2]}
        run = self.totals.iloc[0]
        ratio = "" if pd.isna(run["ratio"]) else f", x{run['ratio']:.3f}"
        head = Text.assemble(("Diff", "bold"), f": run {run['total_ms_before']:,.1f} ms -> {run['total_ms_after']:,.1f} ms "
                             f"({run['change_ms']:+,.1f} ms{ratio}); {n['regression']} regression(s), "
                             f"{n['improvement']} improvement(s); " + (f"changes under {self.threshold} are noise (no verdict)"
                             if self.threshold != "none" else "no noise threshold: every change has a verdict"))
        cols = {"total_ms_before": "before ms", "total_ms_after": "after ms", "change_ms": "change ms", "ratio": "ratio",
                "verdict": "verdict"}
        parts: list[Any] = [head]
        for df, title, keys, total in (
                (self.events, "Events and work: before / after", {"kind": "kind", "name": "name", "phase": "phase"},
                 "events and work"),
                (self.callbacks, "Callbacks: before / after", {"callback": "callback", "event": "event", "phase": "phase"},
                 "callbacks")):
            shown = len(df) if limit is None else limit
            table = display.rows_table(df, title, {**keys, **cols}, shown, more)
            row = self.totals[self.totals["total"] == total].iloc[0]
            table.add_section()
            table.add_row(*[Text("total" if i == 0 else total if i == 1 else "") for i in range(len(keys))],
                          *[Text(display.cell(row[key]), style="bold") for key in cols])
            parts.append(table)
        return Group(*parts)

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


def _tables(label: str, trace: Any) -> tuple["pd.DataFrame", "pd.DataFrame", float]:
    """A trace's summary, per-callback table and run time (ms); an error naming `label` if it has none."""
    try:
        return trace.summary(), trace.by_callback(), trace.total_ns() / 1e6
    except Exception as e:
        raise LoopvizError(f"{label}: cannot compare this trace ({type(e).__name__}: {e})") from e


def _side_by_side(before: "pd.DataFrame", after: "pd.DataFrame", keys: list[str]) -> "pd.DataFrame":
    """Totals before and after per key, the change in ms and the ratio, biggest regression first."""
    count = "count" if "count" in before.columns else "calls"
    left = before[[*keys, count, "total_ms"]].groupby(keys, as_index=False).sum()
    right = after[[*keys, count, "total_ms"]].groupby(keys, as_index=False).sum()
    merged = left.merge(right, on=keys, how="outer", suffixes=("_before", "_after")).fillna(0)
    merged["change_ms"] = merged["total_ms_after"] - merged["total_ms_before"]
    merged["ratio"] = merged["total_ms_after"] / merged["total_ms_before"].where(merged["total_ms_before"] > 0)
    return merged.sort_values("change_ms", ascending=False, ignore_index=True)


def diff_traces(before: Any, after: Any, min_change: Any = DEFAULT_MIN_CHANGE) -> TraceDiff:
    """Compare two traces (e.g. before and after a data-loader change): the top regressions first, with totals.
    A change smaller than `min_change` ('5%' of the time before, '0.5ms', a number of ms, or a list of these;
    0 or None: every change counts) is noise: listed, but not as a regression or an improvement."""
    return TraceDiff(before, after, min_change=min_change)
