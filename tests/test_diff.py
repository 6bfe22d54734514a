"""Loop diffs (added, removed, moved callbacks in every view) and trace diffs (regressions first)."""
from __future__ import annotations

import shutil
import time

import pytest
from fastai.callback.all import GradientAccumulation, MixedPrecision
from fastai.callback.core import Callback

from loopviz import LoopDiagram, LoopvizError, diff, diff_traces, render_mermaid, render_text
from loopviz.renderers.rich_tree import RichLoop
from tests.test_render_rich import render


class Mover(Callback):
    "Moves between orders"
    order = 20

    def after_batch(self):
        "Do something after each batch"


class Sleepy(Callback):
    "Sleeps after each training batch"

    def after_batch(self):
        time.sleep(0.002)


def test_golden_compact_diff(learn, golden):
    view = learn.show_training_loop(diff=[MixedPrecision(), GradientAccumulation()])
    golden("diff_compact.txt", str(view))


def test_added_removed_and_moved_callbacks(learn):
    early, late = Mover(), Mover()
    late.order = 70
    a = learn.loop_spec(cbs=[early, MixedPrecision()])
    b = learn.loop_spec(cbs=[late, GradientAccumulation()])
    d = diff(a, b)
    after_batch = {h.callback.cls: (h.diff, h.was_order) for h in d.event("after_batch", mode="train").handlers}
    assert after_batch["Mover"] == ("moved", 20)
    assert after_batch["Recorder"] == (None, None)  # Mover now runs after it, but Recorder's order is the same
    loss = {h.callback.cls: h.diff for h in d.event("after_loss", mode="train").handlers}
    assert loss == {"GradientAccumulation": "added", "MixedPrecision": "removed"}
    assert "removed MixedPrecision" in d.compared
    text = render_text(d)
    assert " - after_loss     : [-MixedPrecision, +GradientAccumulation]" in text
    assert "~Mover(20->70)" in text
    verbose = render_text(d, verbose=True)
    assert "MixedPrecision (order 10)  REMOVED" in verbose and "Mover (order 70)  MOVED (order was 20)" in verbose
    rich = render(RichLoop(d, verbose=True))
    assert "(removed)" in rich and "(added)" in rich and "(order 20 → 70)" in rich
    assert "(removed)" in render_mermaid(d) and "(added)" in render_mermaid(d)
    source = LoopDiagram(d).source
    assert 'BGCOLOR="#dcfce7"' in source and 'BGCOLOR="#fee2e2"' in source and 'BGCOLOR="#fef9c3"' in source


def test_diff_needs_loops_of_one_kind(learn):
    with pytest.raises(LoopvizError, match="cannot diff a 'fit' loop with a 'get_preds' loop"):
        diff(learn.loop_spec(), learn.loop_spec(loop="get_preds"))


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_diffed_mermaid_chart_still_parses(learn, tmp_path):
    from tests.test_render_mermaid import official_parse

    d = diff(learn.loop_spec(cbs=[MixedPrecision()]), learn.loop_spec(cbs=[GradientAccumulation()]))
    assert "OK " in official_parse(tmp_path, {"diff": render_mermaid(d, verbose=True)})


def test_trace_diff_puts_the_regression_first(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as before:
            learn.fit(1)
        with learn.trace() as after:
            learn.fit(1, cbs=Sleepy())
    d = diff_traces(before, after)
    top = d.callbacks.iloc[0]
    assert (top["callback"], top["event"], top["phase"]) == ("Sleepy", "after_batch", "train")
    assert top["total_ms_before"] == 0 and top["total_ms_after"] >= 2 * len(learn.dls.train)
    after_batch = d.events[(d.events["name"] == "after_batch") & (d.events["phase"] == "train")].iloc[0]
    assert after_batch["ratio"] > 1
    assert d.events.iloc[0]["change_ms"] >= d.events.iloc[-1]["change_ms"]
    assert "Callbacks: before / after" in str(d) and "<pre" in d._repr_html_()
