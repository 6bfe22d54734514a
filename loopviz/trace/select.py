"""A trace cut to some of its loops: their records, renumbered, and their aggregates past the cap."""
from __future__ import annotations

from array import array
from dataclasses import replace
from numbers import Integral
from typing import Any, Iterable

import numpy as np

from loopviz.checks import got
from loopviz.errors import LoopvizError
from loopviz.trace.data import TraceData, recount
from loopviz.trace.layout import C_FIRING, CH_FIRING, F_LOOP, F_PARENT, UNKNOWN_LOOP
from loopviz.trace.records import CallRecords, FiringRecords
from loopviz.trace.reports import call_matrix, change_matrix, firing_matrix

__all__ = ["select_loops", "loop_indices"]


def loop_indices(labels: list[str], loops: str | int | Iterable[str | int]) -> set[int]:
    """Indices of the loops named by label (every loop with it) or by index: one label or index, or several; a clear
    error for anything else, and for a label or index the trace does not have."""
    wanted = [loops] if isinstance(loops, (str, Integral)) else loops
    try:
        wanted = list(wanted)
    except TypeError:
        raise LoopvizError(f"loops must be a loop's label or index, or a list of them, not {got(loops)}.") from None
    found: set[int] = set()
    for key in wanted:
        if isinstance(key, bool) or not isinstance(key, (str, Integral)):
            raise LoopvizError(f"loops must hold loop labels (str) or indices (int), not {got(key)}.")
        matches = {i for i, label in enumerate(labels) if key == i or key == label}
        if not matches:
            known = ", ".join(f"{i} {label!r}" for i, label in enumerate(labels)) or "none"
            raise LoopvizError(f"this trace has no loop {key!r}; its loops are: {known}.")
        found |= matches
    return found


def select_loops(data: TraceData, loops: Iterable[str | int]) -> TraceData:
    """The data of only the given loops (labels or indices): their firings, calls and logged changes renumbered,
    their aggregates past the cap, and aggregates of an unknown loop (version-1 files), which are kept whole."""
    wanted = loop_indices(data.loops, loops)
    m = firing_matrix(data)
    keep = np.isin(m[:, F_LOOP], sorted(wanted))
    new_index = np.cumsum(keep) - 1
    firings = m[keep].copy()
    parent = firings[:, F_PARENT]
    firings[:, F_PARENT] = np.where(parent >= 0, np.where(keep[parent], new_index[parent], -1), -1)
    kept_loops = wanted | {UNKNOWN_LOOP}
    no_handler = [n if i in wanted else 0 for i, n in enumerate(data.no_handler_by_loop)]
    cut = replace(
        data,
        meta={**data.meta, "selected_loops": sorted(wanted)},
        loop_spans=_spans(data.loop_spans, wanted, new_index),
        no_handler_by_loop=no_handler,
        no_handler_calls=sum(no_handler) if data.no_handler_by_loop else data.no_handler_calls,
        overflow_nested=_of_loops(data.overflow_nested, kept_loops),
        overflow_work=_of_loops(data.overflow_work, kept_loops),
        firings=FiringRecords.from_matrix(firings),
        calls=CallRecords.from_matrix(_renumbered(call_matrix(data), C_FIRING, keep, new_index)),
        change_log=_flat(_renumbered(change_matrix(data), CH_FIRING, keep, new_index)),
        overflow_firings=_of_loops(data.overflow_firings, kept_loops),
        overflow_calls=_of_loops(data.overflow_calls, kept_loops),
        change_agg=_of_loops(data.change_agg, kept_loops),
        wait_agg=_of_loops(data.wait_agg, kept_loops),
        data_work=_data_within(data, wanted),
    )
    return recount(cut)


def _data_within(data: TraceData, wanted: set[int]) -> array:
    """The data loop's rows that ended inside one of the kept loops' spans (rows carry times, not loops)."""
    from loopviz.trace.datawork import D_END, ND

    if not data.data_work:
        return array("q")
    rows = np.frombuffer(data.data_work, np.int64).reshape(-1, ND)
    inside = np.zeros(len(rows), bool)
    for index in wanted:
        if index < len(data.loop_spans) and data.loop_spans[index][0] >= 0:
            start, end = data.loop_spans[index][:2]
            inside |= (rows[:, D_END] >= start) & (rows[:, D_END] <= end)
    return _flat(rows[inside])


def _spans(spans: list[list[int]], wanted: set[int], new_index: np.ndarray) -> list[list[int]]:
    """Loop spans of the kept loops (the others blanked): a kept loop whose parent loop is not kept becomes outermost;
    one whose parent is kept points at its parent firing's new index (that firing is in the parent loop, so kept)."""
    out = []
    for index, span in enumerate(spans):
        if index not in wanted:
            out.append([-1] * len(span))
        elif span[2] >= 0 and span[2] not in wanted:
            out.append([span[0], span[1], -1, -1, -1, -1])
        else:
            parent_firing = span[3]
            if 0 <= parent_firing < len(new_index):
                parent_firing = int(new_index[parent_firing])
            out.append([*span[:3], parent_firing, *span[4:]])
    return out


def _renumbered(rows: np.ndarray, column: int, keep: np.ndarray, new_index: np.ndarray) -> np.ndarray:
    """The rows whose firing is kept, pointing at the firing's new index."""
    if not len(rows):
        return rows
    rows = rows[keep[rows[:, column]]].copy()
    rows[:, column] = new_index[rows[:, column]]
    return rows


def _of_loops(aggregates: dict[tuple[int, ...], Any], loops: set[int]) -> dict[tuple[int, ...], Any]:
    """The aggregates whose key's loop (its first element) is one of `loops`."""
    return {key: value for key, value in aggregates.items() if key[0] in loops}


def _flat(rows: np.ndarray) -> array:
    return array("q", np.ascontiguousarray(rows, dtype=np.int64).tobytes())
