"""Matplotlib views of one loop of a trace: where each batch's time goes, and its slowest batch as a timeline.

The figure is made by pyplot and closed at once, so pyplot does not hold it: a notebook shows it once, as
the cell's value (through the inline backend's formatter for figures), and scripts save it with `savefig`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopviz.renderers.palette import PALETTE, pick_colours, rgb
from loopviz.renderers.sanitise import one_line
from loopviz.trace.batches import loop_batches, resolve_loop

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_trace", "series_colours", "folded_series"]

OTHER = "other"
GREY = "#7f7f7f"  # PALETTE's grey, kept for 'other'
NEAR = 60  # colours closer than this (RGB distance, 0-255) are hard to tell apart in a stack
ROWS = {"work": 2, "event": 1, "callback": 0}  # the timeline's row (y) per kind of span
FONT = 7


# -- colours --------------------------------------------------------------------------------------


def series_colours(names: list[str]) -> dict[str, str]:
    """A colour of PALETTE per name, from `pick_colours` with clashes settled in sorted name order, so a name's colour
    depends on the names present, never on the order they are drawn in; moving on skips colours close to one
    already taken while a distinct one is free; 'other' (the folded rest) is always grey."""
    taken = {OTHER: GREY} if OTHER in names else {}
    return pick_colours(sorted(set(names) - {OTHER}), taken=taken, near=NEAR)


def folded_series(table: pd.DataFrame) -> pd.DataFrame:
    """The per-series columns, largest total first, with the smallest folded into 'other' past len(PALETTE)."""
    series = table.drop(columns=["epoch", "iter"])
    series = series[series.sum().sort_values(ascending=False, kind="stable").index]
    if series.shape[1] <= len(PALETTE):
        return series
    keep = list(series.columns[: len(PALETTE) - 1])
    return series[keep].assign(**{OTHER: series.drop(columns=keep).sum(axis=1)})


def _shown(text: str) -> str:
    """A name as matplotlib should draw it: control characters escaped, `$` literal rather than mathtext."""
    return one_line(text).replace("$", r"\$")


def _text_colour(colour: str) -> str:
    """Black or white, whichever reads better on `colour`."""
    r, g, b = rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


# -- the figure -----------------------------------------------------------------------------------


def plot_trace(trace: Any, loop: Any = None) -> Figure:
    """Two panels for one loop: time per batch stacked by work and event, and the slowest batch's timeline."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    index = resolve_loop(trace.data, loop)
    batches = loop_batches(trace.data, index)
    series = folded_series(batches.table)
    colours = series_colours(list(series.columns))
    # Made by pyplot so that a notebook's inline backend is loaded (it registers the formatter that shows a
    # returned Figure), then closed so the notebook shows it once, as the cell's value, not again at cell end.
    fig = plt.figure(figsize=(12, 7.5), layout="constrained")
    plt.close(fig)
    FigureCanvasAgg(fig)  # closing left it a canvas that cannot draw; this one draws and saves without pyplot
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    worst = int(series.sum(axis=1).to_numpy().argmax())
    _stacked(top, series, colours, worst, batches.what)
    top.set_title(f"Loop {index} {_shown(repr(trace.loops[index]))}: time per {batches.what} ({len(series)} of them)",
                  loc="left", fontsize=10)
    spans = batches.spans[batches.spans["batch"] == worst]
    _timeline(bottom, spans.assign(name=spans["name"].where(spans["name"].isin(list(colours)), OTHER)), colours)
    epoch, iteration = batches.table.loc[worst, ["epoch", "iter"]]
    bottom.set_title(f"The slowest {batches.what}, #{worst} (epoch {epoch}, iter {iteration}): "
                     f"{series.iloc[worst].sum():.2f} ms", loc="left", fontsize=10)
    _legend(fig, list(series.columns), colours)
    return fig


def _stacked(ax: Axes, series: pd.DataFrame, colours: dict[str, str], worst: int, what: str) -> None:
    """Each batch a block one unit wide at its number, stacked by series, largest total at the bottom."""
    from matplotlib.ticker import MaxNLocator

    edges = np.arange(len(series) + 1) - 0.5
    values = series.to_numpy().T
    ax.stackplot(edges, np.concatenate([values, values[:, -1:]], axis=1), step="post", linewidth=0,
                 colors=[colours[c] for c in series.columns], labels=list(series.columns))
    ax.axvline(worst, color="black", linewidth=0.8, linestyle=":")
    ax.annotate("timeline below", (worst, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                textcoords="offset points", ha="left", va="top", fontsize=FONT,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_xlim(edges[0], edges[-1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{what} (in order, from 0)", fontsize=8)
    ax.set_ylabel(f"ms per {what}", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.margins(y=0.02)


def _timeline(ax: Axes, spans: pd.DataFrame, colours: dict[str, str]) -> None:
    """One batch's spans on three rows (work, events, callbacks), in ms from the batch's start."""
    start = (spans["start"] - spans["start"].min()) / 1e6
    dur = spans["dur"] / 1e6
    extent = float((start + dur).max()) or 1.0
    # the axes take about 3/4 of the figure's width; a label is drawn where it fits inside its span
    ms_per_char = extent / (ax.figure.get_figwidth() * 0.75) * FONT * 0.6 / 72
    for (kind, name), group in spans[spans["dur"] > 0].groupby(["kind", "name"], sort=True):
        y = ROWS[kind]
        ax.barh(y, dur[group.index], left=start[group.index], height=0.8, color=colours[name], label=name,
                edgecolor="white", linewidth=0.3)
        for i, raw in (group["callback"] if kind == "callback" else group["name"]).items():
            text = _shown(raw)
            if dur[i] > (len(text) + 1) * ms_per_char:
                ax.text(start[i] + dur[i] / 2, y, text, ha="center", va="center", fontsize=FONT,
                        color=_text_colour(colours[name]), clip_on=True)
    ax.set_yticks(list(ROWS.values()), ["work", "events", "callbacks\n(event's colour)"], fontsize=8)
    ax.set_ylim(-0.6, len(ROWS) - 0.4)
    ax.set_xlim(0, extent)
    ax.set_xlabel("ms from the start of the batch", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)


def _legend(fig: Figure, names: list[str], colours: dict[str, str]) -> None:
    """One legend for both panels, right of the axes, listing the stack from its top down."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colours[name], label=_shown(name)) for name in reversed(names)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=FONT + 1, title="work and events",
               title_fontsize=FONT + 1, frameon=False)
