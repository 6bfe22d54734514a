"""Matplotlib views of a trace: where each batch's time goes, and one batch as a timeline."""
from __future__ import annotations

from typing import Any

from loopviz.errors import LoopvizError

__all__ = ["plot_trace"]


def plot_trace(trace: Any, loop: int = 0) -> Any:
    """Two panels for one loop: stacked time per training batch (work, events), and the slowest batch's timeline."""
    import matplotlib.pyplot as plt

    if not trace.loops:
        raise LoopvizError("this trace recorded no loop, so there is nothing to plot.")
    if not 0 <= loop < len(trace.loops):
        raise LoopvizError(f"loop={loop} is out of range; this trace has loops 0..{len(trace.loops) - 1}: {trace.loops}.")
    spans = trace.to_df()
    label = trace.loops[loop]
    firings = trace.firings_df()
    spans = spans[spans["loop"] == label]
    batch = spans[(spans["phase"] == "train") & (spans["iter"] >= 0) & (spans["kind"] != "callback")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), constrained_layout=True)
    if len(batch):
        per = batch.pivot_table(index=["epoch", "iter"], columns="name", values="dur_ms", aggfunc="sum", fill_value=0)
        per = per[per.sum().sort_values(ascending=False).index]
        per.reset_index(drop=True).plot.area(ax=top, linewidth=0, legend=True)
        top.set_xlabel("training batch (in order)")
        top.set_ylabel("ms")
        top.set_title(f"Where each training batch's time goes ({label})")
        top.legend(fontsize=7, ncol=4, loc="upper right")
        worst = per.sum(axis=1).reset_index(drop=True).idxmax()
        epoch, iteration = per.index[worst]
        one = spans[(spans["epoch"] == epoch) & (spans["iter"] == iteration) & (spans["phase"] == "train")]
        one = one.sort_values("start_ms")
        rows = {"work": 0, "event": 1, "callback": 2}
        for _, span in one.iterrows():
            y = rows[span["kind"]]
            bottom.barh(y, span["dur_ms"], left=span["start_ms"], height=0.8, edgecolor="white")
            name = span["callback"] or span["name"]
            if span["dur_ms"] > 0.05 * max(one["dur_ms"].max(), 1e-9):
                bottom.text(span["start_ms"], y, name, fontsize=6, va="center")
        bottom.set_yticks(list(rows.values()), list(rows.keys()))
        bottom.set_xlabel("ms since the start of the trace")
        bottom.set_title(f"The slowest training batch: epoch {epoch}, iteration {iteration}")
    else:
        top.text(0.5, 0.5, "no training batches in this loop", ha="center")
    del firings
    return fig
