"""The recorder keeps no Python object per record: what a traced fastai dispatch retains per event firing is its
packed rows (32 bytes a firing, 24 a handler call), and nothing for calls without a handler."""
from __future__ import annotations

import gc
import tracemalloc

import pytest
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz.trace.records import CALL_ROW, FIRING_ROW

# bytearray growth over-allocates about 1/8 of the size, so several per cent per row; a Python object kept per
# record (an int is 28 bytes, a tuple 56 or more) would exceed this slack.
SLACK = 1.15


class StepHandler(Callback):
    "Handles after_step only."

    def after_step(self):
        pass


def retained_per_firing(event: str, firings: int = 4000) -> float:
    """Bytes a traced learner keeps per dispatch of `event`, once every cache is warm."""
    learn = synth_learner(cbs=[StepHandler()])
    with learn.trace(max_firings=10**6, max_calls=10**6) as t:
        for _ in range(100):  # warm-up: handler lookups cached, ids registered
            learn(event)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(firings):
                learn(event)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert t.n_firings == firings + 100
    return (after - before) / firings


@pytest.mark.parametrize("event, handler_calls", [("after_cancel_step", 0), ("after_step", 1)])
def test_a_firing_keeps_only_its_rows(event, handler_calls):
    kept = retained_per_firing(event)
    rows = FIRING_ROW.size + handler_calls * CALL_ROW.size
    assert rows * 0.9 <= kept <= rows * SLACK, f"{kept:.1f} bytes kept per firing; its rows are {rows}"
