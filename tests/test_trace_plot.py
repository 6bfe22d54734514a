"""`Trace.plot`: one loop at a time (chosen by index), one colour per name everywhere, by family, pyplot's current
figure (saved by plt.savefig or by `t.plot('fit.png')`)."""
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
from loopviz.trace.batches import resolve_loop
from loopviz.trace.families import FAMILIES, OTHER, RAMPS, family_of, series_colours
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
            for text, handle in zip(legend.get_texts(), legend.legend_handles) if handle.get_visible()}


def legend_headers(fig) -> list[str]:
    legend = fig.legends[0]
    return [text.get_text() for text, handle in zip(legend.get_texts(), legend.legend_handles)
            if not handle.get_visible()]


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
        assert plt.gcf() is fig  # pyplot's current figure: plt.savefig and plt.show see it
        plt.close(fig)
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
    assert stack == legend and len(set(stack.values())) == len(stack)  # no two series share a colour
    timeline = timeline_colours(bottom)
    assert {"draw", "before_batch", "after_batch"} <= set(timeline)
    for name, colours in timeline.items():
        assert colours == {legend[name]}, name  # callbacks are drawn in their event's colour
    # by family: the data orange, the model blue, the optimizer green, the events (the callbacks') purple
    assert stack["draw"] in RAMPS["data"] and stack["step"] in RAMPS["optimizer"]
    assert {stack[name] for name in ("forward", "loss", "backward")} <= set(RAMPS["model"])
    assert stack["before_batch"] in RAMPS["callbacks"] and stack["after_batch"] in RAMPS["callbacks"]
    assert legend_headers(fig) == [f for f in reversed(FAMILIES) if any(
        family_of(name, "event" if name.startswith(("before_", "after_")) else "work") == f for name in stack)]
    plt.close(fig)


def test_a_family_is_one_hue_its_largest_series_the_darkest_and_each_series_apart():
    kinds = {"draw": "work", "forward": "work", "backward": "work", "before_batch": "event", "after_batch": "event",
             "after_pred": "event", "wait for the GPU": "work", "setup": "work", OTHER: "work"}
    names = ["draw", "forward", "backward", "before_batch", "after_batch", "after_pred", "wait for the GPU", "setup",
             OTHER]
    colours = series_colours(names, kinds)
    assert len(set(colours.values())) == len(names)
    assert colours["forward"] == RAMPS["model"][0] and colours["backward"] == RAMPS["model"][1]
    assert colours["wait for the GPU"] == RAMPS["waits"][0] and colours[OTHER] == RAMPS["other"][-1]
    assert [colours[n] for n in ("before_batch", "after_batch", "after_pred")] == list(RAMPS["callbacks"][:3])
    every = [c for ramp in RAMPS.values() for c in ramp]
    assert len(every) == len(set(every))  # no shade in two families


def test_past_a_familys_shades_the_smallest_fold_into_other():
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
    callbacks, rest = len(RAMPS["callbacks"]), len(RAMPS["other"]) - 1
    assert len(legend) == callbacks + rest + 1 and OTHER in legend and len(set(legend.values())) == len(legend)
    assert stacked_colours(fig.axes[0]) == legend
    assert legend_headers(fig) == ["other", "callbacks"]
    assert fig.axes[0].get_title(loc="left") == "Loop 0 'many': time per batch (3 of them)"
    plt.close(fig)


def test_a_plot_saves_by_pyplot_or_by_name(tuned, tmp_path):
    tuned.plot(loop=0)
    plt.savefig(tmp_path / "pyplot.png")  # the figure t.plot() drew, not a blank one
    plt.close("all")
    fig = tuned.plot(tmp_path / "named.png")
    plt.close(fig)
    fig = tuned.plot(1, tmp_path / "named.svg")
    plt.close(fig)
    for name in ("pyplot.png", "named.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 30_000
    assert b"<svg" in (tmp_path / "named.svg").read_bytes()[:500]
    with pytest.raises(LoopvizError, match="a plot is saved as .pdf, .png, .svg"):
        tuned.plot(0, tmp_path / "plot.txt")
    with pytest.raises(LoopvizError, match="the folder .* does not exist"):
        tuned.plot(0, tmp_path / "missing" / "plot.png")


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
