"""The recorder keeps no Python object per record: what a traced fastai dispatch retains per event firing is its
packed rows (32 bytes a firing, 24 a handler call), and nothing for calls without a handler. The latest rows wait as
Python objects until PENDING_ROWS of them are packed together: measured between two moments where as many wait, what
a firing leaves is its rows alone."""
from __future__ import annotations

import gc
import tracemalloc

import pytest
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz.trace.record import PENDING_ROWS
from loopviz.trace.records import CALL_ROW, FIRING_ROW

# bytearray growth over-allocates about 1/8 of the size, and rows arrive 2,048 at a time, so the capacity measured at
# two moments can be up to about 1/6 over the rows; a Python object kept per record (an int is 28 bytes, a tuple 56
# or more) would exceed this slack.
SLACK = 1.2


class StepHandler(Callback):
    "Handles after_step only."

    def after_step(self):
        pass


def retained_per_firing(event: str, firings: int = 2 * PENDING_ROWS) -> float:
    """Bytes a traced learner keeps per dispatch of `event`, once every cache is warm (between two moments where
    PENDING_ROWS rows wait to be packed)."""
    learn = synth_learner(cbs=[StepHandler()])
    tracemalloc.start()  # before the warm-up: the rows it leaves waiting are counted, and so is their packing
    try:
        with learn.trace(max_firings=10**6, max_calls=10**6) as t:
            for _ in range(PENDING_ROWS):  # warm-up: lookups cached, ids registered, a full batch of rows waiting
                learn(event)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(firings):
                learn(event)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert t.n_firings == firings + PENDING_ROWS
    return (after - before) / firings


@pytest.mark.parametrize("event, handler_calls", [("after_cancel_step", 0), ("after_step", 1)])
def test_a_firing_keeps_only_its_rows(event, handler_calls):
    kept = retained_per_firing(event)
    rows = FIRING_ROW.size + handler_calls * CALL_ROW.size
    assert rows * 0.9 <= kept <= rows * SLACK, f"{kept:.1f} bytes kept per firing; its rows are {rows}"


def _counter(step: int = 1000):
    """A deterministic host clock: each read is `step` ns after the one before."""
    ticks = iter(range(0, 10**15, step))
    return lambda: next(ticks)


def test_an_injected_clock_gives_the_same_summary_on_two_fits(tmp_path):
    """Every host timestamp of a traced fit comes from the recorder's `now`: with a counter for a clock, two fits
    give the same timed summary, to the digit."""
    from loopviz.adapters.fastai.tracer import TraceSession

    def summary() -> str:
        learn = synth_learner(n_trn=16, n_val=8, path=tmp_path, cbs=[StepHandler()])
        with learn.no_bar(), learn.no_logging(), TraceSession(learn, clock="host", now=_counter()) as t:
            learn.fit(2)
        return t.summary().to_string()

    first = summary()
    assert first == summary()
    assert "after_step" in first and "dispatch" in first


def test_adapters_name_their_dispatch_ranges_and_batches_and_files_keep_the_names(tmp_path):
    """The recorder keeps what the adapter calls its loop's parts in the trace's meta; `trace/` names no framework."""
    from loopviz.adapters.miniai import trace_miniai
    from loopviz.trace.trace import Trace
    from tests import miniai_style as mi

    learn = synth_learner(n_trn=8, n_val=4, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    back = Trace.load(t.save(tmp_path / "fit.trace.json"))
    for trace in (t, back):
        assert trace.meta["dispatch_label"] == "dispatch (fastai's own)" and trace.meta["range_prefix"] == "fastai"
        assert trace.meta["batch_events"] == ["before_batch", "after_batch"]
        assert trace.meta["skip_statuses"]["skipped_in_train"] == "run_train=False"
        assert "dispatch (fastai's own)" in set(trace.summary()["name"])
    train, valid, model, loss = mi.synthetic()
    other = mi.Learner(model, train, valid, loss, cbs=[mi.TrainCB()])
    with trace_miniai(other) as m:
        other.fit(1)
    loaded = Trace.load(m.save(tmp_path / "miniai.trace.json"))
    for trace in (m, loaded):
        assert "range_prefix" not in trace.meta and "dispatch" in set(trace.summary()["name"])


def test_a_firing_opened_by_the_hot_path_leaves_no_sibling_to_the_firings_nested_in_it():
    """A tracer's own frame may open a firing without resetting the recorder's sibling mark (`HotPath`): a firing
    nested in it, past the cap, has no sibling (the last firing closed was at the level above), and the next one has
    the first as its sibling. The work between siblings past the cap is kept under (loop, before, after, mode, nested)."""
    from loopviz.trace.record import Recorder

    ticks = iter(range(0, 10**6, 10))
    rec = Recorder(max_firings=2, now=lambda: next(ticks))
    rec.begin_loop("fit")
    a = rec.begin_firing("a", 1, 0, 0)
    rec.end_firing(a, 0)
    hot = rec.hot_path()
    index = hot.count[0]  # a firing opened as the fastai tracer's lean path does: marks[1] left as it is
    hot.count[0] = index + 1
    hot.cur[0] = index
    start = hot.now()
    at = len(hot.values)
    hot.add_values((start, 0, 0, rec.loop, -1, rec.short_id("b"), 1, 0, None))
    for event in ("c", "d"):  # past the cap of two rows: dropped, aggregated
        dropped = rec.begin_firing(event, 1, 0, 0)
        assert dropped == -1
        rec.end_firing(dropped, 0)
    end = hot.now()
    hot.cur[0] = -1
    hot.marks[0] = hot.marks[3] = end
    hot.marks[1] = index
    hot.values[at + 8] = end - start
    rec.end_loop()
    data = rec.close()
    ids = {name: data.events.index(name) for name in ("a", "b", "c", "d")}
    assert list(data.overflow_work) == [(0, ids["c"], ids["d"], 1, 1)]
