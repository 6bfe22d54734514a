"""The interactive HTML report of a trace: one self-contained file (inline CSS, JS and SVG, no network).

It holds the observed loop (`loopviz.trace.observed`) drawn by the loop diagram's own renderer
(`loopviz.renderers.dot`, the one DOT writer, which escapes what reaches DOT), heat-coloured by measured time,
with each event's and work's count, total, mean and percentiles on hover; sortable tables of events, work and
callbacks; a stacked chart of time per batch for each loop with batches, and the slowest batch's timeline. It
reads only the trace's analysis; every string that reaches the page is escaped here, at the sink.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from loopviz.errors import LoopvizError
from loopviz.renderers.palette import PALETTE
from loopviz.renderers.sanitise import cut, json_island, one_line, visible
from loopviz.trace.display import (
    APPROX, CALLBACK_HEADERS, DATA_HEADERS, SUMMARY_HEADERS, checked_line, cost_line, duration, loader_line, share_of, short_name,
)

__all__ = ["html_report", "MAX_BARS"]

MAX_BARS = 400  # bars per batch chart: more batches than this are shown as means of consecutive batches
CHART_WIDTH, CHART_HEIGHT, TIMELINE_ROW = 960, 240, 26
OTHER = "other"


def html_report(trace: Any, loop: Any = None) -> str:
    """The whole report as one HTML document; `loop` picks the loop of the diagram and the slowest batch
    (an index or a label; None: the loop with the most training batches)."""
    from loopviz.trace.batches import resolve_loop

    index = resolve_loop(trace.data, loop)
    summary, by_callback = trace.summary(), trace.by_callback()
    sections = [
        _header(trace),
        _findings_section(trace, summary, by_callback),
        _section("The loop, heat-coloured by time", _diagram(trace, index),
                 "Loop " + _text(f"{index} {trace.loops[index]!r}") + " as it ran: each box is an event (with the "
                 "callbacks that ran there), each green box the work before the event it leads to, each cluster a "
                 "phase or a stretch the loop repeated; the darker, the larger its share of the run. "
                 "Hover for count, total, mean and percentiles."),
        _section("Where the time went", _table(_slowest_first(summary, SUMMARY_HEADERS), "summary"),
                 "Every event and kind of work, over all loops, slowest first. Click a column to sort."),
        _section("Callbacks", _table(_slowest_first(by_callback, CALLBACK_HEADERS), "callbacks"),
                 "Per callback, event and phase, slowest first."),
    ]
    if trace.tracked_changes:
        sections.append(_section("State changes", _table(trace.changes(), "changes"),
                                 "Which learner state each callback changed."))
    if trace.tracked_waits:
        sections.append(_waits_section(trace))
    sections += _batch_sections(trace, index)
    sections += _data_sections(trace)
    notes = "".join(f"<li>{_text(n)}</li>" for n in trace.notes())
    if notes:
        sections.append(_section("Notes", f"<ul>{notes}</ul>", ""))
    title = _text(f"loopviz: {trace.framework or 'trace'} ({', '.join(dict.fromkeys(trace.loops)) or 'no loop'})")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body><main>{''.join(sections)}</main>"
            f'<aside id="details" hidden></aside><script>{_JS}</script></body></html>')


def _slowest_first(table: pd.DataFrame, headers: dict[str, str]) -> pd.DataFrame:
    """A report table sorted by total time, largest first, its columns named for people."""
    return table.sort_values("total_ms", ascending=False, kind="stable").rename(columns=headers)


def _findings_section(trace: Any, summary: pd.DataFrame, by_callback: pd.DataFrame) -> str:
    """What slows the run (`t.diagnose()`, from the report's own `summary` and `by_callback` tables): each finding
    with its evidence, the culprit, the fix and the most it could save; what was checked when nothing was found."""
    from loopviz.trace.diagnose import diagnose

    d = diagnose(trace.data, (summary, by_callback))
    caption = ("From t.diagnose(): each finding's figures come from the tables below; its saving is the most the fix "
               "could take away (the time the culprit took), not a promise.")
    tracing = f'<p class="tracing">{_text(cost_line(d.tracing, capital=True), 2000)}.</p>'
    if not d.findings:
        return _section("What slows this run", f"<p>Nothing found. Checked: {_text(checked_line(d.checked))}.</p>"
                                               f"{tracing}", caption)
    items = []
    for f in d.findings:
        evidence = "".join(f"<li>{_text(line, 2000)}</li>" for line in f.evidence)
        fix = html.escape(cut(visible(f.fix), 4000), quote=False)
        items.append(f'<li class="finding {_text(f.severity)}"><b>{_text(f.severity)}</b>: {_text(f.title)}'
                     f"<ul>{evidence}</ul><p>at fault: <code>{_text(f.culprit)}</code></p><pre>{fix}</pre>"
                     f"<p>saves at most {duration(f.saving_ms)} ({share_of(f.saving_ms, d.run_ms)} of the run)"
                     "</p></li>")
    return _section("What slows this run", f'<ol class="findings">{"".join(items)}</ol>{tracing}', caption)


def _waits_section(trace: Any) -> str:
    """Who makes the host wait for the GPU: the costliest in words, then the table."""
    from loopviz.trace.reports import wait_lines

    waits = trace.gpu_waits()
    if not len(waits):
        return _section("Waits for the GPU", "<p>No traced callback call or work synchronised with the GPU.</p>", "")
    lines = "".join(f"<li>{_text(line)}</li>" for line in wait_lines(waits))
    return _section("Waits for the GPU", f"<ul>{lines}</ul>{_table(waits, 'waits')}",
                    "Callback calls and work that synchronised with the GPU (.item(), .cpu(), printing a tensor, a "
                    "copy from pageable memory), and the GPU work each waited out.")


# -- text -----------------------------------------------------------------------------------------


def _text(value: Any, limit: int = 400) -> str:
    """Any value as HTML text: control characters escaped, cut to `limit` characters, markup escaped."""
    return html.escape(cut(one_line(str(value)), limit), quote=True)


def _section(title: str, body: str, caption: str, anchor: str = "") -> str:
    opening = f'<section id="{html.escape(anchor)}">' if anchor else "<section>"
    return f'{opening}<h2>{html.escape(title)}</h2><p class="caption">{caption}</p>{body}</section>'


def _header(trace: Any) -> str:
    loops = trace.loops_df()
    run_ms = float(loops.loc[loops["outermost"], "dur_ms"].sum()) if len(loops) else 0.0
    facts = [("framework", short_name(trace.framework) or "unknown"), ("clock", short_name(trace.clock)),
             ("run", duration(run_ms)),
             ("event firings", f"{trace.n_firings + trace.dropped_firings:,}"),
             ("callback calls with a handler", f"{trace.n_calls + trace.dropped_calls:,}"),
             ("loops", ", ".join(f"{i}: {short_name(label)}" for i, label in enumerate(trace.loops)) or "none")]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_text(v, 2000)}</td></tr>" for k, v in facts)
    return f'<header><h1>Where the time went</h1><table class="facts">{rows}</table></header>'


# -- the diagram ----------------------------------------------------------------------------------


def _diagram(trace: Any, index: int) -> str:
    """The observed loop, drawn by the loop diagram's renderer, and what the hover panel shows for each step."""
    from loopviz.diagram import LoopDiagram
    from loopviz.renderers.dot import step_ids
    from loopviz.trace.observed import observed_spec

    spec = observed_spec(trace.data, index)
    if not spec.events():
        return '<p class="empty">This loop recorded no event firing.</p>'
    svg = LoopDiagram(spec, ids=True).svg()
    svg = svg[svg.index("<svg"):]  # without the XML prolog and doctype: it sits inside HTML
    placed = _placed(spec, index)
    summaries: dict[int, Any] = {}
    details = {}
    for key, step in step_ids(spec):
        if step.timing is None or id(step) not in placed:
            continue
        loop, mode = placed[id(step)]
        if loop not in summaries:
            summaries[loop] = trace.select([loop]).summary()
        details[key] = _facts(step, mode, summaries[loop])
    data = json_island(details)
    return f'<div class="diagram">{svg}</div><script type="application/json" id="diagram-details">{data}</script>'


def _placed(spec: Any, index: int) -> dict[int, tuple[int, str]]:
    """Per event and piece of work (by id()), the loop it ran in and its phase (train, valid or '')."""
    from loopviz.model import Phase
    from loopviz.trace.observed import loop_of_phase

    out: dict[int, tuple[int, str]] = {}

    def walk(phase: Phase, loop: int, mode: str) -> None:
        loop = loop_of_phase(phase, loop)
        for step in phase.steps:
            if isinstance(step, Phase):
                walk(step, loop, step.mode or mode)
            else:
                out[id(step)] = (loop, getattr(step, "mode", None) or mode)

    for top in spec.phases:
        walk(top, index, top.mode or "")
    return out


def _facts(step: Any, mode: str, summary: pd.DataFrame) -> dict[str, Any]:
    """What the hover panel shows for one step: its timing, its percentiles from the summary, its callbacks."""
    from loopviz.model import Event

    timing = step.timing
    kinds = ("event", "nested event") if isinstance(step, Event) else ("work", "nested work")
    row = summary[summary["kind"].isin(kinds) & (summary["name"] == step.name) & (summary["phase"] == mode)]
    rows = [["count", f"{timing.count:,}"], ["total", duration(timing.total_ms)], ["mean", duration(timing.mean_ms)]]
    if len(row) == 1 and int(row["count"].iloc[0]) == timing.count:
        mark = f" {APPROX}" if bool(row["approx"].iloc[0]) else ""
        rows += [["p50", duration(float(row["p50_ms"].iloc[0])) + mark],
                 ["p95", duration(float(row["p95_ms"].iloc[0])) + mark]]
    rows.append(["share of the run", f"{timing.pct:.1f} %"])
    ran = sorted((h for h in getattr(step, "handlers", []) if h.timing is not None), key=lambda h: -h.timing.total_ms)
    callbacks = [f"{h.callback.cls}: {duration(h.timing.total_ms)} in {h.timing.count:,} calls" for h in ran]
    title = f"{step.name} ({mode})" if mode else step.name
    return {"title": one_line(title), "rows": [[k, one_line(v)] for k, v in rows],
            "callbacks": [one_line(c) for c in callbacks]}


# -- tables ---------------------------------------------------------------------------------------


def _table(df: pd.DataFrame, name: str) -> str:
    """A sortable table: numbers right-aligned, each cell's sort key in data-v."""
    if not len(df):
        return '<p class="empty">Nothing recorded.</p>'
    head = "".join(f'<th data-col="{i}">{_text(c)}</th>' for i, c in enumerate(df.columns))
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    marks = [c == "approx" for c in df.columns]  # percentiles from the sketch past the cap: 'approx.', else blank
    rows = []
    for values in df.itertuples(index=False):
        cells = []
        for value, is_number, is_mark in zip(values, numeric, marks):
            if is_mark:
                cells.append(f"<td>{APPROX if value else ''}</td>")
            elif is_number:
                number = float(value) if pd.notna(value) else float("nan")
                shown = "" if np.isnan(number) else (f"{number:,.0f}" if float(number).is_integer() and abs(number) >= 1000
                                                     else f"{number:,.3f}".rstrip("0").rstrip("."))
                cells.append(f'<td class="n" data-v="{"" if np.isnan(number) else repr(number)}">{shown}</td>')
            else:
                cells.append(f"<td>{_text(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="sortable" id="{name}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# -- batches --------------------------------------------------------------------------------------


def _batch_sections(trace: Any, main: int) -> list[str]:
    """A stacked chart of time per batch for each loop with batches, and the main loop's slowest batch."""
    from loopviz.trace.batches import loop_batches
    from loopviz.trace.families import folded_series, series_colours, series_kinds

    out = []
    for index, label in enumerate(trace.loops):
        try:
            batches = loop_batches(trace.data, index)
        except LoopvizError:
            continue  # a loop without batches (an lr_find that stopped at once, a bare validate of nothing)
        kinds = series_kinds(batches.spans)
        series = folded_series(batches.table, kinds)
        colours = series_colours(list(series.columns), kinds)
        caption = (f"Loop {index} {_text(repr(label))}: each bar is one {batches.what}, stacked by work and event, "
                   "coloured by family (data, model, optimizer, callbacks, waits, the rest: bottom to top); hover a "
                   "bar for its figures.")
        if len(series) > MAX_BARS:
            caption += f" {len(series):,} of them are shown as {MAX_BARS} bars, each the mean of consecutive ones."
        body = _stacked_svg(series, batches.table, colours) + _legend(list(series.columns), colours)
        out.append(_section(f"Time per {batches.what}: loop {index}", body, caption))
        if index == main:
            worst = int(series.sum(axis=1).to_numpy().argmax())
            spans = batches.spans[batches.spans["batch"] == worst]
            epoch, iteration = batches.table.loc[worst, ["epoch", "iter"]]
            took = duration(float(series.iloc[worst].sum()))
            out.append(_section(f"The slowest {batches.what} of loop {index}", _timeline_svg(spans, colours),
                                f"#{worst} (epoch {epoch}, iter {iteration}): {took}. "
                                "Rows: the work between events, the events, and the callbacks called in them."))
    return out


def _data_sections(trace: Any) -> list[str]:
    """The data loop (data=True): a sentence per loader, each loader's longest pass as lanes (the main process getting
    each batch, its move and batch transforms, each worker making its batches), and the table of stages and
    transforms."""
    if not trace.data_work:
        return []
    from loopviz.trace.datatiming import MAIN_LANE, WAIT_LANE, pass_lanes

    timings = trace.loader_timing()
    lines = "".join(f"<li>{_text(loader_line(timing), 1000)}</li>" for timing in timings)
    out = [_section("The data loop: what draw does", f"<ul>{lines}</ul>" + _table(trace.data_summary().rename(columns=DATA_HEADERS), "data"),
                    "Each loader's stages and transforms, in the order its loop runs them, where they ran, and "
                    "their share of the loader's work (a stage's row holds its transforms' rows).", "data-loop")]
    for index, timing in enumerate(timings):
        pass_no, spans = pass_lanes(trace.data, timing.loader)
        if not len(spans):
            continue
        lanes = [WAIT_LANE, MAIN_LANE, *sorted(set(spans["lane"]) - {WAIT_LANE, MAIN_LANE})]
        out.append(_section(f"The {timing.loader} loader's pass {pass_no}, lane by lane", _lanes_svg(spans, lanes),
                            "Each bar a batch: made in a worker (or the main process), then in the main process "
                            "its move to the device and batch transforms; the first lane is the main process "
                            "getting it, from the moment the loop asked (waiting, when workers make it). Hover a "
                            "bar for its figures.", f"data-lanes-{index}"))
    return out


def _lanes_svg(spans: pd.DataFrame, lanes: list[str]) -> str:
    extent = float((spans["start"] + spans["dur"]).max()) or 1.0
    low = min(0.0, float(spans["start"].min()))
    extent -= low
    colours = {lane: PALETTE[i % len(PALETTE)] for i, lane in enumerate(lanes)}
    parts = []
    for lane, batch, begin, dur in spans[["lane", "batch", "start", "dur"]].itertuples(index=False):
        x, w = (begin - low) / extent * CHART_WIDTH, max(dur / extent * CHART_WIDTH, 0.5)
        y = lanes.index(lane) * TIMELINE_ROW
        tip = html.escape(f"{one_line(str(lane))}: batch {batch}, {duration(dur)} at {duration(begin)}")
        parts.append(f'<rect x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{TIMELINE_ROW - 4}" '
                     f'fill="{colours[lane]}" stroke="white" stroke-width="0.3"><title>{tip}</title></rect>')
        if w > 9 * len(str(batch)) + 4:
            parts.append(f'<text x="{x + w / 2:.2f}" y="{y + TIMELINE_ROW / 2 + 4}" text-anchor="middle" '
                         f'class="inbar">{batch}</text>')
    names = "".join(f'<text x="-6" y="{r * TIMELINE_ROW + TIMELINE_ROW / 2 + 4}" text-anchor="end" class="axis">'
                    f"{_text(lane, 40)}</text>" for r, lane in enumerate(lanes))
    axis = f'<text x="{CHART_WIDTH}" y="{TIMELINE_ROW * len(lanes) + 12}" text-anchor="end" class="axis">' \
           f"{duration(extent + low)}</text>"
    return (f'<svg class="timeline" viewBox="-190 0 {CHART_WIDTH + 190} {TIMELINE_ROW * len(lanes) + 16}" '
            f'width="100%" role="img">{names}{"".join(parts)}{axis}</svg>')


def _binned(series: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """At most MAX_BARS bars: each the mean of a run of consecutive batches, with the run's first and last."""
    values = series.to_numpy()
    edges = np.linspace(0, len(values), min(len(values), MAX_BARS) + 1).astype(int)
    bars = np.array([values[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])])
    return bars, [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])]


def _stacked_svg(series: pd.DataFrame, table: pd.DataFrame, colours: dict[str, str]) -> str:
    bars, runs = _binned(series)
    top = float(bars.sum(axis=1).max()) or 1.0
    width = CHART_WIDTH / len(bars)
    parts = []
    for i, (bar, (first, last)) in enumerate(zip(bars, runs)):
        x, y = i * width, CHART_HEIGHT
        for name, value in zip(series.columns, bar):
            h = value / top * (CHART_HEIGHT - 10)
            y -= h
            parts.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(width - 0.3, 0.5):.2f}" height="{h:.2f}" '
                         f'fill="{colours[name]}"/>')
        which = f"#{first}" if first == last else f"#{first}–#{last} (mean)"
        epoch, iteration = table["epoch"].iloc[first], table["iter"].iloc[first]
        figures = "; ".join(f"{one_line(str(n))} {duration(v)}" for n, v in zip(series.columns, bar) if v > 0)
        tip = html.escape(f"{which}, epoch {epoch} iter {iteration}: {duration(float(bar.sum()))} ({figures})")
        parts.append(f'<rect class="hit" x="{x:.2f}" y="0" width="{width:.2f}" height="{CHART_HEIGHT}">'
                     f"<title>{tip}</title></rect>")
    axis = f'<text x="2" y="10" class="axis">{duration(top)}</text>'
    return (f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="100%" '
            f'preserveAspectRatio="none" role="img">{"".join(parts)}{axis}</svg>')


def _timeline_svg(spans: pd.DataFrame, colours: dict[str, str]) -> str:
    rows = {"work": 0, "event": 1, "callback": 2}
    start = spans["start"] - spans["start"].min()
    extent = float((start + spans["dur"]).max()) or 1.0
    parts = []
    for (kind, name, callback), begin, dur in zip(spans[["kind", "name", "callback"]].itertuples(index=False),
                                                  start, spans["dur"]):
        x, w = begin / extent * CHART_WIDTH, max(dur / extent * CHART_WIDTH, 0.5)
        y = rows[kind] * TIMELINE_ROW
        colour = colours.get(name, PALETTE[7])
        label = f"{callback}.{name}" if kind == "callback" else name
        tip = html.escape(f"{one_line(str(label))} ({kind}): {duration(dur / 1e6)} at {duration(begin / 1e6)}")
        parts.append(f'<rect x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{TIMELINE_ROW - 4}" fill="{colour}" '
                     f'stroke="white" stroke-width="0.3"><title>{tip}</title></rect>')
        if w > 7 * len(str(label)):
            parts.append(f'<text x="{x + w / 2:.2f}" y="{y + TIMELINE_ROW / 2 + 4}" text-anchor="middle" '
                         f'class="inbar">{_text(label, 60)}</text>')
    height = TIMELINE_ROW * len(rows)
    names = "".join(f'<text x="-6" y="{r * TIMELINE_ROW + TIMELINE_ROW / 2 + 4}" text-anchor="end" class="axis">'
                    f"{kind}</text>" for kind, r in rows.items())
    return (f'<svg class="timeline" viewBox="-70 0 {CHART_WIDTH + 70} {height}" width="100%" role="img">'
            f'{names}{"".join(parts)}</svg>')


def _legend(names: list[str], colours: dict[str, str]) -> str:
    items = "".join(f'<span><i style="background:{colours[n]}"></i>{_text(n, 80)}</span>' for n in names)
    return f'<div class="series">{items}</div>'


_CSS = """
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#666;--line:#ddd;--head:#f4f4f6}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8ea;--bg:#161618;--muted:#9a9aa0;--line:#333;--head:#222226}}
body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1060px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:17px;margin:28px 0 4px}
.caption{color:var(--muted);margin:0 0 10px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
td.n{text-align:right}thead th{background:var(--head);position:sticky;top:0;cursor:pointer;user-select:none}
thead th[aria-sort=ascending]::after{content:" ▲"}thead th[aria-sort=descending]::after{content:" ▼"}
table.facts th{background:none;cursor:default;color:var(--muted);font-weight:normal}
ol.findings li.finding{margin:.4em 0}ol.findings li.critical>b{color:#b00020}ol.findings li.warning>b{color:#a35200}
ol.findings pre{background:#f4f4f4;padding:.4em .6em;overflow-x:auto;white-space:pre}
.diagram{overflow:auto;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
.diagram svg{max-width:100%;height:auto}
.chart,.timeline{border:1px solid var(--line);border-radius:6px;background:#fff}
.chart .hit{fill:transparent}.chart .hit:hover{fill:rgba(0,0,0,.12)}
.axis{font-size:11px;fill:#666}.inbar{font-size:10px;fill:#fff;pointer-events:none}
.series{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin:6px 0}
.series i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
#details{position:fixed;right:16px;top:16px;max-width:360px;background:var(--bg);color:var(--fg);
border:1px solid var(--line);border-radius:8px;padding:10px 12px;box-shadow:0 4px 16px rgba(0,0,0,.18);font-size:12.5px}
#details h3{margin:0 0 6px;font-size:13.5px}#details ul{margin:6px 0 0;padding-left:18px}
.empty{color:var(--muted)}
"""

_JS = """
(function(){
  function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent.toLowerCase():(v===''?-Infinity:parseFloat(v));}
  document.querySelectorAll('table.sortable thead th').forEach(function(th){
    th.addEventListener('click',function(){
      var table=th.closest('table'),body=table.tBodies[0],col=+th.getAttribute('data-col');
      var down=th.getAttribute('aria-sort')!=='descending';
      table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',down?'descending':'ascending');
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);return (x<y?-1:x>y?1:0)*(down?-1:1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  var data=document.getElementById('diagram-details'),panel=document.getElementById('details');
  if(!data||!panel)return;
  var details=JSON.parse(data.textContent);
  function show(id){
    var d=details[id];if(!d)return;
    panel.textContent='';
    var h=document.createElement('h3');h.textContent=d.title;panel.appendChild(h);
    var t=document.createElement('table');
    d.rows.forEach(function(r){var tr=t.insertRow(),a=tr.insertCell(),b=tr.insertCell();a.textContent=r[0];b.textContent=r[1];});
    panel.appendChild(t);
    if(d.callbacks.length){var ul=document.createElement('ul');
      d.callbacks.forEach(function(c){var li=document.createElement('li');li.textContent=c;ul.appendChild(li);});
      panel.appendChild(ul);}
    panel.hidden=false;
  }
  document.querySelectorAll('.diagram g.node, .diagram g.edge').forEach(function(g){
    g.addEventListener('mouseenter',function(){show(g.id);});
    g.addEventListener('mouseleave',function(){panel.hidden=true;});
  });
})();
"""
