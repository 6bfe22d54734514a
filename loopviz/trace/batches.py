"""Which loop, and the batches of one loop: per batch, where its time went, and every span inside it.

Analysis, like `reports`: pure functions of a `TraceData` that the per-batch views (`plot`, the HTML report) read.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from loopviz.errors import LoopvizError
from loopviz.trace.data import TraceData
from loopviz.trace.notes import check_recorded_a_loop
from loopviz.trace.reports import calls_df, firings_df, work_df
from loopviz.trace.select import select_loops

__all__ = ["Batches", "resolve_loop", "batch_events", "loop_batches", "loop_listing"]

DEFAULT_BATCH_EVENTS = ("before_batch", "after_batch")  # a trace whose adapter named none (files before they did)


class Batches(NamedTuple):
    """One loop's batches: per batch (epoch, iter, ms per series), and every span inside a batch."""

    what: str  # 'training batch', or 'validation batch' / 'batch' for a loop that trained on none
    table: pd.DataFrame  # one row per batch in order: epoch, iter, then one ms column per series
    spans: pd.DataFrame  # kind, name, callback, batch, start (ns), dur (ns): every span inside a batch


# -- which loop -----------------------------------------------------------------------------------


def resolve_loop(data: TraceData, loop: Any) -> int:
    """The index of the loop `loop` names: an index, a label naming one loop, or None for the default (the loop
    with the most training batches)."""
    check_recorded_a_loop(data)
    labels: list[str] = list(data.loops)
    if loop is None:
        return _default_loop(data)
    if isinstance(loop, str):
        return _loop_by_label(labels, loop)
    if isinstance(loop, Integral) and not isinstance(loop, bool):
        if not 0 <= loop < len(labels):
            raise LoopvizError(f"loop={loop} is out of range; this trace has loops {loop_listing(labels)}.")
        return int(loop)
    raise LoopvizError(f"loop={loop!r} is neither a loop index nor a label; pass an int or a label, "
                       f"one of {loop_listing(labels)}.")


def _loop_by_label(labels: list[str], label: str) -> int:
    """The one loop with this label; an error naming the indices when several (fine_tune's two fits) have it."""
    matches = [i for i, name in enumerate(labels) if name == label]
    if not matches:
        raise LoopvizError(f"loop={label!r} is not a loop of this trace; its loops are {loop_listing(labels)}.")
    if len(matches) > 1:
        raise LoopvizError(f"loop={label!r} names loops {_joined([str(i) for i in matches], 'and')} of this trace; "
                           f"pass {_joined([f'loop={i}' for i in matches], 'or')}.")
    return matches[0]


def batch_events(data: TraceData) -> tuple[str, str]:
    """The events that open and close a batch in the traced loop, as its adapter named them (a Hugging Face
    Trainer's on_step_begin and on_step_end, ...)."""
    opens, closes = data.meta.get("batch_events", DEFAULT_BATCH_EVENTS)
    return opens, closes


def _default_loop(data: TraceData) -> int:
    """The loop with the most training batches (the first of equals), else loop 0."""
    f = firings_df(data)
    batches = f[(f["event"].astype(str) == batch_events(data)[0]) & (f["phase"] == "train")]
    counts = batches["loop_index"].value_counts()
    return int(counts.index[counts.to_numpy() == counts.max()].min()) if len(counts) else 0


def loop_listing(labels: list[str]) -> str:
    """The loops as '0: 'fit', 1: 'validate'' for an error message."""
    return ", ".join(f"{i}: {label!r}" for i, label in enumerate(labels))


def _joined(items: list[str], word: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


# -- the batches of one loop ----------------------------------------------------------------------


def loop_batches(data: TraceData, index: int) -> Batches:
    """The training batches of loop `index` (all its batches if it trained on none)."""
    one = select_loops(data, [index])
    f = firings_df(one)
    f = f[f["parent"] == -1]  # a nested firing's time is already inside its parent's
    names = f["event"].astype(str).to_numpy()
    opening, closing = batch_events(data)
    f = f.assign(name=names, batch=_batch_of(names, opening, closing), tl_end=f["tl_start"] + f["tl_dur"])
    inside = f[f["batch"] >= 0]
    opens = inside[inside["name"] == opening]
    if not len(opens):
        raise LoopvizError(f"loop {index} ({data.loops[index]!r}) has no batches to plot (no {opening} firing); "
                           f"choose another loop: {loop_listing(data.loops)}.")
    training = (opens["phase"] == "train").to_numpy()
    kept = opens["batch"].to_numpy()[training] if training.any() else opens["batch"].to_numpy()
    what = "training batch" if training.any() else "validation batch" if (opens["phase"] == "valid").all() else "batch"
    renumber = pd.Series(np.arange(len(kept)), index=kept)
    inside = inside[inside["batch"].isin(kept)]
    spans = pd.concat([_event_spans(inside), _work_spans(one, inside), _call_spans(one, inside)], ignore_index=True)
    spans["batch"] = renumber[spans["batch"]].to_numpy()
    firsts = inside.groupby("batch").first()
    table = spans[spans["kind"] != "callback"].pivot_table(index="batch", columns="name", values="dur",
                                                           aggfunc="sum", fill_value=0) / 1e6
    table = table.reindex(np.arange(len(kept)), fill_value=0.0)
    table.insert(0, "iter", firsts["iter"].to_numpy())
    table.insert(0, "epoch", firsts["epoch"].to_numpy())
    return Batches(what, table, spans)


def _batch_of(events: np.ndarray, opening: str, closing: str) -> np.ndarray:
    """Per firing (in order): the number of the batch it is in (`opening` through `closing`), else -1."""
    opens = np.cumsum(events == opening)
    closes = events == closing
    closed_before = np.cumsum(closes) - closes
    return np.where(opens > closed_before, opens - 1, -1)


def _event_spans(firings: pd.DataFrame) -> pd.DataFrame:
    """The batches' event firings as spans, on the clock the work between them is on."""
    return pd.DataFrame({"kind": "event", "name": firings["name"], "callback": "", "batch": firings["batch"],
                         "start": firings["tl_start"], "dur": firings["tl_dur"]})


def _work_spans(one: TraceData, firings: pd.DataFrame) -> pd.DataFrame:
    """The work that leads up to a batch's firings (its draw, forward, ...): the work ending inside the batch."""
    work = work_df(one)
    work = work[~work["nested"].astype(bool)]  # nested work is already inside a firing's time
    bounds = firings.groupby("batch").agg(start=("tl_start", "min"), end=("tl_end", "max"))
    end = (work["start"] + work["dur"]).to_numpy(np.int64)
    at = np.searchsorted(bounds["start"].to_numpy(), end, side="right") - 1
    ok = (at >= 0) & (end <= bounds["end"].to_numpy()[np.maximum(at, 0)])
    work = work[ok]
    return pd.DataFrame({"kind": "work", "name": work["work"].astype(str), "callback": "",
                         "batch": bounds.index.to_numpy()[at[ok]], "start": work["start"], "dur": work["dur"]})


def _call_spans(one: TraceData, firings: pd.DataFrame) -> pd.DataFrame:
    """The callback calls inside the batches' firings, named by their event (whose colour they take)."""
    calls = calls_df(one)
    calls = calls[calls["firing"].isin(firings.index)]
    return pd.DataFrame({"kind": "callback", "name": calls["event"].astype(str), "callback": calls["callback"],
                         "batch": firings.loc[calls["firing"], "batch"].to_numpy(), "start": calls["start"],
                         "dur": calls["dur"]})
