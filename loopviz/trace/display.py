"""How a `Trace` shows itself: rich tables in a terminal, the same as text, and HTML in notebooks.

Names from the traced code (callbacks, events, loops) are shown with control characters escaped
(`loopviz.renderers.sanitise`), so none reaches a terminal or the HTML raw.

Every console here writes to a string and is told it is not in Jupyter (`force_jupyter=False`): inside a
notebook rich would otherwise also send what it prints to the notebook as a display, whatever its `file`, so
`_repr_html_` and `__repr__` each added a copy of the tables to the cell. `bundle` gives text and HTML in one
mime bundle, what `_repr_mimebundle_` returns, so IPython shows an object once per cell."""
from __future__ import annotations

import html
import io
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from loopviz.renderers.sanitise import TEXT_LIMIT, cut, cut_words, one_line, visible

__all__ = ["as_text", "as_html", "pre_html", "bundle", "diagnosis_renderable", "diagnosis_text", "first_look",
           "checked_line", "cost_line", "duration", "share_of", "PRE_STYLE", "PYTHON_MORE", "CALLBACK_COLUMNS",
           "CHANGE_COLUMNS", "SUMMARY_HEADERS", "CALLBACK_HEADERS", "short_name", "rows_table", "cell", "with_approx",
           "APPROX", "trace_tables", "data_parts", "loader_line", "DATA_COLUMNS", "DATA_HEADERS", "trace_text", "trace_html", "merged_tables", "merged_text"]


PYTHON_MORE = "see .summary() / .by_callback()"  # where the rows a cut table leaves out are, from Python


def rows_table(df: pd.DataFrame, title: str, columns: dict[str, str], limit: int | None, more: str = PYTHON_MORE) -> Table:
    """A rich table of the first `limit` rows of `df` (None: all), with the given column headers; a cut table's
    caption says how many rows it left out and, after a colon, `more` (where to see them)."""
    limit = len(df) if limit is None else limit
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for key, header in columns.items():
        table.add_column(header, justify="right" if df[key].dtype.kind in "if" else "left")
    head = df.head(limit)
    for i in range(len(head)):  # by column, so each cell keeps its column's type (iterrows would upcast ints)
        table.add_row(*[Text(cell(head[key].iloc[i])) for key in columns])
    if len(df) > limit:
        table.caption = f"{len(df) - limit} more rows: {more}"
    return table


def cell(value: Any) -> str:
    """One value as a table shows it: ints with thousands separators, floats to 3 places, names on one line."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:,.3f}"
    return one_line(str(value))


CALLBACK_COLUMNS = {"callback": "callback", "event": "event", "phase": "phase", "calls": "calls", "ran": "ran",
                    "skipped": "skipped", "total_ms": "total ms", "mean_us": "mean µs", "pct": "% of run"}
# every column of the summary and the callbacks' table, named for people (the HTML report shows them all)
SUMMARY_HEADERS = {"kind": "kind", "name": "name", "phase": "phase", "count": "count", "total_ms": "total ms",
                   "mean_ms": "mean ms", "p50_ms": "p50 ms", "p95_ms": "p95 ms", "max_ms": "max ms", "pct": "% of run"}
CALLBACK_HEADERS = {**CALLBACK_COLUMNS, "cancelled": "cancelled", "errors": "errors", "p95_us": "p95 µs"}
CHANGE_COLUMNS = {"callback": "callback", "event": "event", "phase": "phase", "attribute": "attribute",
                  "count": "times", "first": "first (epoch, iter)", "last": "last (epoch, iter)"}


def short_name(text: str) -> str:
    """A name on one line, cut as every name a view prints is (cut first: a name can be megabytes long)."""
    return cut(one_line(cut(text)))


def trace_tables(trace: Any, limit: int | None = 25, callbacks: int | None = 10, more: str = PYTHON_MORE,
                 changes: bool = False, findings: str = "t.diagnose()") -> Group:
    """A header line, the run's largest shares and its findings (`first_look`), the summary (slowest first), the
    costliest callbacks, with `changes` the state changes (most frequent first) when the trace recorded them, and
    notes. `limit`/`callbacks`: rows shown (None: all); `more`: where a cut table's other rows are; `findings`: where
    the findings are in full."""
    summary = trace.summary().sort_values("total_ms", ascending=False)
    by_cb = trace.by_callback()
    table = trace.loops_df()
    outer = table[table["outermost"].astype(bool)]  # astype: an empty column is of dtype object, not a mask
    loops = ", ".join(short_name(label) for label in dict.fromkeys(outer["label"])) or "none"
    nested = f", {len(table) - len(outer)} nested" if len(table) > len(outer) else ""
    head = Text.assemble(
        ("Trace", "bold"),
        f" of {short_name(trace.framework) or 'a loop'}: {trace.n_firings + trace.dropped_firings:,} event firings, ",
        f"{trace.n_calls + trace.dropped_calls:,} callback calls, {trace.total_ns() / 1e6:,.1f} ms in {len(outer)} "
        f"loop(s){nested} ({loops})",
    )
    title = "Events and work (event and work rows add up to the run; nested and dispatch rows are inside events)"
    summary, summary_columns = with_approx(summary, {key: header for key, header in SUMMARY_HEADERS.items()
                                                     if key != "max_ms"})  # (the text view leaves out the max)
    parts: list[Any] = [head, *first_look(trace, summary, by_cb, findings),
                        rows_table(summary, title, summary_columns, limit, more)]
    if len(by_cb):
        parts.append(rows_table(by_cb, "Callbacks (costliest first)", CALLBACK_COLUMNS, callbacks, more))
    if changes and trace.tracked_changes:
        parts.append(_changes_table(trace.changes(), limit, more))
    if trace.tracked_waits:
        parts += _waits_parts(trace.gpu_waits(), limit, more)
    parts += data_parts(trace, limit, more)
    parts += [Text(cut_words(cut(visible(cut(note, TEXT_LIMIT)), TEXT_LIMIT)), style="dim") for note in trace.notes()]
    return Group(*parts)


DATA_COLUMNS = {"loader": "loader", "stage": "stage", "step": "transform", "where": "where", "calls": "calls",
                "ms_per_batch": "ms/batch", "us_per_call": "µs/call", "total_ms": "total ms", "pct": "% of loader"}
# every column of the data loop's table, named for people (the HTML report shows them all)
DATA_HEADERS = {"loader": "loader", "stage": "stage", "step": "transform", "where": "where", "per": "per",
                "batches": "batches", "calls": "calls", "total_ms": "total ms", "ms_per_batch": "ms per batch",
                "us_per_call": "µs per call", "pct": "% of loader's work"}


def loader_line(timing: Any) -> str:
    """One loader's loop in a sentence: who made its batches, how fast against the loop, and the slowest step."""
    makers = f"{timing.workers} worker processes" if timing.workers else "the main process"
    verdict = ("the loop waits for data" if timing.input_bound else "the makers keep up")
    stage, step, share = timing.slowest
    named = f"{short_name(step)} ({stage}, " if step else f"{stage} ("
    slowest = f"; slowest: {named}{100 * share:.0f} % of its work)" if stage else ""
    firsts = timing.first_batch_ms
    first = f"; first batch of a pass after {duration(max(firsts))} at most" if firsts else ""
    busy = (f"; its workers busy {', '.join(f'{100 * share:.0f} %' for share in timing.worker_busy)} of their passes"
            if timing.worker_busy else "")
    return (f"{short_name(timing.loader)}: {timing.batches:,} batches in {timing.passes} passes made by {makers}, "
            f"{duration(timing.batch_ms)} per batch each: {timing.delivered_per_s:,.1f} batches/s delivered against "
            f"{timing.consumed_per_s:,.1f} consumed ({verdict}); the main process spent {duration(timing.get_ms)} "
            f"getting them, {duration(timing.wait_ms)} a batch past a pass's first{first}{busy}{slowest}")


def data_parts(trace: Any, limit: int | None, more: str) -> list[Any]:
    """The data loop's timing (a trace with data=True): a line per loader and the table of its stages and transforms."""
    if not trace.data_work:
        return []
    parts: list[Any] = [Text.assemble(("Data loop: ", "bold"), line) for line in map(loader_line, trace.loader_timing())]
    table = trace.data_summary()
    if len(table):
        parts.append(rows_table(table, "Data loop: each stage (transform blank) and transform, in the order it runs",
                                DATA_COLUMNS, limit, "see .data_summary()"))
    return parts


APPROX = "approx."  # the mark of a row whose percentiles are from the sketch past the raw-record cap


def with_approx(df: pd.DataFrame, columns: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The table and its columns with an 'approx.' column after the last percentile column, marking the rows whose
    percentiles are from the sketch past the cap (`approx`), when any is; unchanged when none is."""
    if "approx" not in df or not df["approx"].astype(bool).any():
        return df, columns
    keys = list(columns)
    after = max((i for i, key in enumerate(keys) if key.startswith(("p50", "p95"))), default=len(keys) - 1)
    keys.insert(after + 1, "approx")
    marked = {**columns, "approx": APPROX}
    return df.assign(approx=np.where(df["approx"].astype(bool), APPROX, "")), {key: marked[key] for key in keys}


def _changes_table(changes: pd.DataFrame, limit: int | None, more: str) -> Any:
    """The state changes, most frequent first, with when each first and last happened."""
    if not len(changes):
        return Text("State changes: no callback changed the learner's state.")
    changes = changes.sort_values("count", ascending=False, kind="stable", ignore_index=True)
    for when in ("first", "last"):  # -1: before the first epoch (or batch) began
        changes[when] = [f"{e}, {i}" for e, i in zip(changes[f"{when}_epoch"], changes[f"{when}_iter"])]
    return rows_table(changes, "State changes (learner attributes each callback set; most frequent first)",
                      CHANGE_COLUMNS, limit, more)


WAIT_COLUMNS = {"who": "who", "phase": "phase", "calls": "synced", "of": "of", "syncs": "syncs",
                "wait_ms": "waited ms", "mean_ms": "mean ms", "max_ms": "max ms", "site": "first sync at"}


def _waits_parts(waits: pd.DataFrame, limit: int | None, more: str) -> list[Any]:
    """Who makes the host wait for the GPU: the costliest as sentences, then the table."""
    if not len(waits):
        return [Text("Waits for the GPU: no traced callback call or work synchronised with the GPU.")]
    from loopviz.trace.reports import wait_lines

    title = "Waits for the GPU (the GPU work each call or piece of work that synchronised waited out; most first)"
    lines = "\n".join(one_line(line) for line in wait_lines(waits))
    who = [name if kind == "callback" else f"work: {name}" for kind, name in zip(waits["kind"], waits["name"])]
    return [Text(lines, style="bold"), rows_table(waits.assign(who=who), title, WAIT_COLUMNS, limit, more)]


# A monospace font named outright: a bare <pre> takes the page's font in nbconvert's HTML (proportional there, so
# the columns did not line up); these fonts have the box-drawing characters and 'µ' at the same width.
PRE_STYLE = ("white-space:pre;overflow-x:auto;line-height:normal;font-size:12px;"
             "font-family:Menlo,'DejaVu Sans Mono',Consolas,'Liberation Mono','Courier New',monospace")


def as_text(renderable: Any, width: int = 120, soft_wrap: bool = False) -> str:
    """Any rich renderable as plain text (no colour); `soft_wrap`: each line whole, not broken at `width`."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, legacy_windows=False, force_jupyter=False)
    console.print(renderable, soft_wrap=soft_wrap)
    return out.getvalue().rstrip("\n")


def as_html(renderable: Any, width: int = 130) -> str:
    """Any rich renderable as HTML, for notebooks: a <pre> in a monospace font, so columns line up."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system="truecolor", force_jupyter=False)
    console.print(renderable)
    return console.export_html(inline_styles=True, code_format=f'<pre style="{PRE_STYLE}">{{code}}</pre>')


def pre_html(text: str) -> str:
    """Plain text as HTML, escaped, in the same <pre> as `as_html`."""
    return f'<pre style="{PRE_STYLE}">{html.escape(text, quote=False)}</pre>'


def bundle(renderable: Any, width: int = 120) -> dict[str, str]:
    """A rich renderable as one mime bundle, text and HTML: what a notebook shows once for an object."""
    return {"text/plain": as_text(renderable, width), "text/html": as_html(renderable)}


def trace_text(trace: Any, width: int = 120) -> str:
    """The tables as plain text."""
    return as_text(trace_tables(trace), width)


def trace_html(trace: Any) -> str:
    """The tables as HTML, for notebooks."""
    return as_html(trace_tables(trace))


# -- a diagnosis --------------------------------------------------------------------------------------------------


SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_CHECKED = {"data_share": ("waiting for data", "%"), "top_handler_share": ("the largest handler", "%"),
            "validation_share": ("validation", "%"), "dispatch_per_compute": ("the loop's own work per unit of the "
                                                                            "batches' compute", "x"),
            "full_precision_share": ("full-precision forward and backward on the GPU", "%")}


def duration(ms: float) -> str:
    """A duration for people: µs below a millisecond, ms below ten seconds, else s (every view's)."""
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    return f"{ms:.2f} ms" if ms < 10_000 else f"{ms / 1000:.2f} s"


def share_of(part: float, whole: float) -> str:
    """`part` as a percentage of `whole`, one decimal."""
    return f"{100 * part / whole:.1f} %" if whole else "0 %"


def checked_line(checked: dict[str, float]) -> str:
    """What each check of a diagnosis measured, as one line."""
    parts = [f"{label} {100 * checked[key]:.1f} %" if unit == "%" else f"{label} {checked[key]:.2f}x"
             for key, (label, unit) in _CHECKED.items() if key in checked]
    return ", ".join(parts) if parts else "no batches to check"


def cost_line(entry: dict[str, Any], capital: bool = False) -> str:
    """Tracing's own cost in words (`loopviz.trace.cost.cost_entry`): how much it added, and per firing and call."""
    if "added_ms" not in entry:
        line = f"tracing's own cost is unknown: {_line(str(entry.get('unmeasured', 'not measured')))}"
    else:
        setup = (f", and {duration(entry['setup_ms'])} for the first firing of {entry['events']} events and call of "
                 f"{entry['handlers']} handlers" if entry.get("setup_ms") else "")
        line = (f"tracing added about {duration(entry['added_ms'])} ({100 * entry['share']:.1f} % of the run): "
                f"{entry['firings']} firings at {entry['per_firing_us']:.1f} µs and {entry['calls']} handler calls at "
                f"{entry['per_call_us']:.1f} µs each{setup}, as measured on this machine after the run; rows near "
                f"those sizes are mostly tracing")
    return "T" + line[1:] if capital else line


def _line(text: str) -> str:
    return cut(one_line(text), TEXT_LIMIT)


def diagnosis_renderable(d: Any) -> Group:
    """A diagnosis in full: each finding's title, its evidence, the culprit, the fix (code, kept as written, one
    line each) and the most it could save; what each check measured when nothing was found."""
    tracing = Text(f"{cost_line(d.tracing, capital=True)}.", style="dim")
    if not d.findings:
        return Group(Text.assemble(("Nothing found", "bold"), f" to slow this run ({duration(d.run_ms)}). Checked: "
                                                              f"{checked_line(d.checked)}."), tracing)
    parts: list[Any] = [Text(f"{len(d.findings)} finding{'s' if len(d.findings) > 1 else ''} in this run "
                             f"({duration(d.run_ms)}):", style="bold")]
    for number, f in enumerate(d.findings, 1):
        parts.append(Text.assemble((f"{number}. [{f.severity}] ", SEVERITY_STYLE.get(f.severity, "")),
                                   (_line(f.title), "bold")))
        parts += [Text(f"   - {_line(line)}") for line in f.evidence]
        parts.append(Text(f"   at fault: {_line(f.culprit)}"))
        for i, line in enumerate(f.fix.splitlines() or [""]):  # code: one line each, never wrapped
            parts.append(Text(("   fix: " if i == 0 else "        ") + _line(line)))
        parts.append(Text(f"   saves at most {duration(f.saving_ms)} ({share_of(f.saving_ms, d.run_ms)} of the run)"))
    parts.append(tracing)
    return Group(*parts)


def diagnosis_text(d: Any, width: int = 120) -> str:
    """A diagnosis as plain text (`diagnosis_renderable`), each line whole (code and sentences are not broken)."""
    return as_text(diagnosis_renderable(d), width, soft_wrap=True)


def first_look(trace: Any, summary: pd.DataFrame, by_cb: pd.DataFrame, findings: str = "t.diagnose()") -> list[Any]:
    """What a reader looks at first: the run's three largest shares (of the event and work rows, which tile it;
    `summary` slowest first) and the findings of `t.diagnose()` (from `summary` and `by_cb`, the tables the view
    shows), one line each (`findings`: where they are in full; the tables follow)."""
    from loopviz.trace.diagnose import diagnose

    tiles = summary[summary["kind"].isin(["event", "work"])].head(3)
    costs = ", ".join(f"{short_name(str(row.name))}{f' ({row.phase})' if row.phase else ''} {row.pct:.1f} %"
                      for row in tiles.itertuples())
    d = diagnose(trace.data, (summary, by_cb))
    parts: list[Any] = [Text.assemble(("Largest shares of the run: ", "bold"), costs or "none"),
                        Text(f"{cost_line(d.tracing, capital=True)}.", style="dim")]
    if not d.findings:
        parts.append(Text.assemble(("Findings: ", "bold"), f"none; checked {checked_line(d.checked)}."))
        return parts
    table = Table(title=f"Findings ({findings} gives the evidence and each fix)", title_justify="left",
                  show_edge=False, header_style="bold")
    for header in ("", "finding", "at fault", "saves at most"):
        table.add_column(header, justify="right" if header == "saves at most" else "left")
    for f in d.findings:
        table.add_row(Text(f.severity, style=SEVERITY_STYLE.get(f.severity, "")), Text(_line(f.title)),
                      Text(_line(f.culprit)), f"{duration(f.saving_ms)} ({share_of(f.saving_ms, d.run_ms)})")
    parts.append(table)
    return parts


def merged_tables(m: Any, limit: int | None = 20, more: str = PYTHON_MORE) -> Group:
    """A merged distributed trace: across-rank summary, then stragglers in backward when known."""
    parts: list[Any] = [Text.assemble(("Merged trace", "bold"), f" of {len(m.ranks)} ranks ({', '.join(map(str, m.ranks))})")]
    parts.append(rows_table(m.summary(), "Events and work across ranks (total ms)", {
        "kind": "kind", "name": "name", "phase": "phase", "count": "count", "min_ms": "min", "median_ms": "median",
        "max_ms": "max", "slowest_rank": "slowest rank", "spread_ms": "spread"}, limit, more))
    try:
        parts.append(rows_table(m.stragglers(), "Waiting in backward for the slowest rank", {
            "rank": "rank", "batches": "batches", "backward_ms": "backward ms", "wait_ms": "wait ms",
            "max_wait_ms": "max wait ms"}, None if limit is None else max(limit, 64), more))
    except Exception:  # a loop without backward events (validation only): no straggler table
        pass
    return Group(*parts)


def merged_text(m: Any, width: int = 120) -> str:
    """A merged distributed trace as text (`merged_tables`)."""
    return as_text(merged_tables(m), width)
