"""`Trace.plot`: one loop at a time (chosen by index), one colour per name everywhere, a figure pyplot never holds."""
from __future__ import annotations

import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from fastai.test_utils import synth_learner
from matplotlib.collections import PolyCollection

from loopviz.errors import LoopvizError
from loopviz.loop import Loop
from loopviz.renderers.palette import PALETTE
from loopviz.trace.batches import resolve_loop
from loopviz.trace.plot import OTHER, series_colours
from loopviz.trace.trace import Trace

FIT = "fine_tune > fit_one_cycle > fit"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """A real fine_tune: two loops with the same label, 5 training batches each."""
    learn = synth_learner(n_trn=5, n_val=2, path=tmp_path_factory.mktemp("fine_tune"))
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fine_tune(1, freeze_epochs=1)
    return t


def training_batches(t: Trace, loop: int) -> int:
    """How many training batches loop `loop` ran, counted from the raw firings."""
    f = t.firings_df()
    return int(((f["loop_index"] == loop) & (f["event"].astype(str) == "before_batch") & (f["phase"] == "train")).sum())


def stacked_colours(ax) -> dict[str, str]:
    return {p.get_label(): matplotlib.colors.to_hex(p.get_facecolor()[0]) for p in ax.collections
            if isinstance(p, PolyCollection)}


def timeline_colours(ax) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for bars in ax.containers:
        out.setdefault(bars.get_label(), set()).update(matplotlib.colors.to_hex(r.get_facecolor()) for r in bars)
    return out


def legend_colours(fig) -> dict[str, str]:
    legend = fig.legends[0]
    return {text.get_text(): matplotlib.colors.to_hex(handle.get_facecolor())
            for text, handle in zip(legend.get_texts(), legend.legend_handles)}


def test_fine_tune_plots_one_loop_at_a_time(tuned):
    assert tuned.loops == [FIT, FIT]
    before = plt.get_fignums()
    for loop in (0, 1):
        fig = tuned.plot(loop=loop)
        top, bottom = fig.axes
        n = training_batches(tuned, loop)
        assert n == 5
        for poly in [c for c in top.collections if isinstance(c, PolyCollection)]:
            edges = np.unique(np.round(poly.get_paths()[0].vertices[:, 0], 6))
            assert list(edges) == list(np.arange(n + 1) - 0.5)  # one block per batch, one unit wide
        assert top.get_title(loc="left").startswith(f"Loop {loop} '{FIT}': time per training batch (5 of them)")
        fig.canvas.draw()
        low, high = top.get_xlim()
        labels = [t.get_text() for t in top.get_xticklabels() if low <= t.get_position()[0] <= high]
        assert labels == [str(i) for i in range(n)]
        assert plt.get_fignums() == before


def test_the_timeline_is_one_batch_of_the_chosen_loop_in_ms_from_its_start(tuned):
    fig = tuned.plot(loop=1)
    bottom = fig.axes[1]
    title = bottom.get_title(loc="left")
    assert title.startswith("The slowest training batch, #")
    epoch, iteration = (int(x) for x in title.split("(epoch ")[1].split("):")[0].split(", iter "))
    f = tuned.firings_df()
    loop1 = f[f["loop_index"] == 1].reset_index(drop=True)
    opened = loop1.index[(loop1["event"].astype(str) == "before_batch") & (loop1["phase"] == "train")
                         & (loop1["epoch"] == epoch) & (loop1["iter"] == iteration)][0]
    closed = loop1.index[(loop1.index > opened) & (loop1["event"].astype(str) == "after_batch")][0]
    # the batch starts where the firing before it ended (its draw) and ends with its after_batch
    expected_ms = (loop1.loc[closed, "end"] - loop1.loc[opened - 1, "end"]) / 1e6
    assert bottom.get_xlim() == pytest.approx((0, expected_ms))
    assert title.endswith(f": {expected_ms:.2f} ms")
    assert bottom.get_xlabel() == "ms from the start of the batch"


def test_a_name_has_one_colour_in_the_stack_the_timeline_and_the_legend(tuned):
    fig = tuned.plot(loop=1)
    top, bottom = fig.axes
    stack, legend = stacked_colours(top), legend_colours(fig)
    assert stack == legend and len(stack) == 15  # fastai's 7 kinds of work and 8 training events
    assert len(set(stack.values())) == len(stack)
    assert set(stack.values()) <= set(PALETTE)
    timeline = timeline_colours(bottom)
    assert {"draw", "before_batch", "after_batch"} <= set(timeline)
    for name, colours in timeline.items():
        assert colours == {legend[name]}, name  # callbacks are drawn in their event's colour


def test_colours_do_not_depend_on_order_and_never_repeat_up_to_16():
    names = [f"series {i}" for i in range(16)]
    colours = series_colours(names)
    assert colours == series_colours(list(reversed(names)))
    assert sorted(colours.values()) == sorted(PALETTE)
    assert series_colours(["other", "a"])["other"] == "#7f7f7f"


def test_past_16_names_the_smallest_fold_into_other():
    loop = Loop("many")
    with loop.trace() as t:
        for iteration in range(3):
            loop.at(0, iteration)
            with loop.phase("batch"):
                for k in range(20):
                    with loop.work(f"w{k:02d}"):
                        sum(range(2000 * (k + 1)))
                    loop.event(f"e{k:02d}")
    fig = t.plot()
    legend = legend_colours(fig)
    assert len(legend) == 16 and OTHER in legend and len(set(legend.values())) == 16
    assert stacked_colours(fig.axes[0]) == legend
    assert fig.axes[0].get_title(loc="left") == "Loop 0 'many': time per batch (3 of them)"


def test_the_legend_sits_right_of_both_panels(tuned):
    fig = tuned.plot(loop=0)
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        area = ax.get_window_extent()
        assert not box.overlaps(area) and box.x0 >= area.x1


def test_loop_by_label_index_or_default():
    learn = synth_learner(n_trn=3, n_val=2)
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.validate()
            learn.fit(1)
    assert t.loops == ["validate", "fit"]
    assert t.plot().axes[0].get_title(loc="left").startswith("Loop 1 'fit': time per training batch (3 of them)")
    assert resolve_loop(t.data, "fit") == resolve_loop(t.data, np.int64(1)) == resolve_loop(t.data, None) == 1
    valid = t.plot(loop="validate").axes[0]
    assert valid.get_title(loc="left") == "Loop 0 'validate': time per validation batch (2 of them)"


def test_bad_loops_say_what_to_pass(tuned):
    with pytest.raises(LoopvizError, match=rf"loop='{FIT}' names loops 0 and 1 of this trace; pass loop=0 or loop=1"):
        tuned.plot(loop=FIT)
    with pytest.raises(LoopvizError, match="loop='fit' is not a loop of this trace; its loops are 0: '.*', 1: '.*'"):
        tuned.plot(loop="fit")
    for bad in (2, -1):
        with pytest.raises(LoopvizError, match=rf"loop={bad} is out of range; this trace has loops 0: "):
            tuned.plot(loop=bad)
    for bad in (1.0, [0], True):
        with pytest.raises(LoopvizError, match=rf"loop={re.escape(repr(bad))} is neither a loop index nor a label"):
            tuned.plot(loop=bad)
    with pytest.raises(LoopvizError, match="this trace recorded no loop"):
        Trace().plot()


def test_a_loop_without_batches_is_refused():
    loop = Loop("flat")
    with loop.trace() as t:
        loop.event("ping")
    with pytest.raises(LoopvizError, match=r"loop 0 \('flat'\) has no batches to plot"):
        t.plot()
