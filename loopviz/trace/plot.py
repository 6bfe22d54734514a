"""Matplotlib views of one loop of a trace: where each batch's time goes, and its slowest batch as a timeline.

The figure is pyplot's current figure, as `plt.subplots()` makes one: `plt.savefig(...)` and `plt.show()` see
it. In a notebook a figure that is the cell's value is shown once, as that value: pyplot lets it go as the cell
ends (else the inline backend would show it again); one the cell kept in a name is shown by pyplot, as any.
Series are coloured by family (`loopviz.trace.families`): data, model, optimizer, callbacks, waits, the rest.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopviz.renderers.palette import rgb
from loopviz.renderers.sanitise import one_line
from loopviz.trace.batches import loop_batches, resolve_loop
from loopviz.trace.families import FAMILIES, OTHER, family_of, folded_series, series_colours, series_kinds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_trace"]

ROWS = {"work": 2, "event": 1, "callback": 0}  # the timeline's row (y) per kind of span
FONT = 7
_MADE: list[weakref.ref] = []  # the figures made in the running notebook cell (see _show_once)


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

    index = resolve_loop(trace.data, loop)
    batches = loop_batches(trace.data, index)
    kinds = series_kinds(batches.spans)
    series = folded_series(batches.table, kinds)
    colours = series_colours(list(series.columns), kinds)
    fig = plt.figure(figsize=(12, 7.5), layout="constrained")  # pyplot's current figure, as plt.subplots() makes
    _show_once(fig)
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
    _legend(fig, list(series.columns), colours, kinds)
    return fig


def _show_once(fig: Figure) -> None:
    """In a notebook (matplotlib's inline backend), let pyplot go of `fig` as the cell ends if the cell showed it as
    its value; else the inline backend shows it at the cell's end, as it does any figure pyplot holds."""
    import sys

    import matplotlib

    if "IPython" not in sys.modules:  # plain Python: IPython is not imported for this
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "inline" not in matplotlib.get_backend():
        return
    callbacks = shell.events.callbacks["post_execute"]
    if _let_shown_go not in callbacks:
        callbacks.insert(0, _let_shown_go)  # before the inline backend's own, which shows what pyplot holds
    _MADE.append(weakref.ref(fig))


def _let_shown_go() -> None:
    """IPython's post_execute: close the figures of this cell that the cell showed as its value."""
    import matplotlib.pyplot as plt
    from IPython import get_ipython

    shell = get_ipython()
    shown = getattr(getattr(shell, "last_execution_result", None), "result", None)
    for ref in _MADE:
        fig = ref()
        if fig is not None and fig is shown:
            plt.close(fig)
    _MADE.clear()


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


def _legend(fig: Figure, names: list[str], colours: dict[str, str], kinds: dict[str, str]) -> None:
    """One legend for both panels, right of the axes: the stack from its top down, family by family, each family
    under its name."""
    from matplotlib.patches import Patch

    handles = []
    for family in reversed(FAMILIES):
        members = [name for name in reversed(names) if family_of(name, kinds.get(name, "work")) == family]
        if members:
            handles.append(Patch(visible=False, label=family))
            handles += [Patch(facecolor=colours[name], label=_shown(name)) for name in members]
    legend = fig.legend(handles=handles, loc="outside right upper", fontsize=FONT + 1, title="work and events",
                        title_fontsize=FONT + 1, frameon=False)
    for text, handle in zip(legend.get_texts(), legend.legend_handles):
        if not handle.get_visible():
            text.set_fontweight("bold")
