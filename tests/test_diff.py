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


def traced_with_and_without_sleepy(learn):
    """Two traces of one fit each: without, then with a callback that sleeps at every training batch."""
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as before:
            learn.fit(1)
        with learn.trace() as after:
            learn.fit(1, cbs=Sleepy())
    return before, after


def test_trace_diff_puts_the_regression_first(learn):
    d = diff_traces(*traced_with_and_without_sleepy(learn))
    top = d.callbacks.iloc[0]
    assert (top["callback"], top["event"], top["phase"]) == ("Sleepy", "after_batch", "train")
    assert top["total_ms_before"] == 0 and top["total_ms_after"] >= 2 * len(learn.dls.train)
    after_batch = d.events[(d.events["name"] == "after_batch") & (d.events["phase"] == "train")].iloc[0]
    assert after_batch["ratio"] > 1
    assert d.events.iloc[0]["change_ms"] >= d.events.iloc[-1]["change_ms"]
    assert "Callbacks: before / after" in str(d) and "<pre" in d._repr_html_()


def test_trace_diff_threshold_totals_and_verdicts(learn):
    before, after = traced_with_and_without_sleepy(learn)
    d = diff_traces(before, after)  # the default: under 5% is noise
    assert d.threshold == "5%" and (d.min_change_ms, d.min_change_fraction) == (0.0, 0.05)
    sleepy = d.callbacks[d.callbacks["callback"] == "Sleepy"].iloc[0]
    assert sleepy["verdict"] == "regression"
    small = d.events[(d.events["change_ms"].abs() < 0.05 * d.events["total_ms_before"]) & (d.events["change_ms"] != 0)]
    assert (small["verdict"] == "").all()
    every = diff_traces(before, after, min_change=0)  # no threshold: every change has a verdict
    changed = every.events[every.events["change_ms"] != 0]
    assert set(changed["verdict"]) <= {"regression", "improvement"} and len(changed)
    none = diff_traces(before, after, min_change=["1000%", "10s"])
    assert set(none.events["verdict"]) == {""} and none.threshold == "1000% and 10000 ms"
    assert diff_traces(before, before).events["verdict"].eq("").all()  # a trace against itself: nothing changed
    totals = d.totals.set_index("total")
    assert list(totals.index) == ["run", "events and work", "callbacks"]
    assert totals.loc["run", "total_ms_before"] == pytest.approx(before.total_ns() / 1e6)
    assert totals.loc["callbacks", "total_ms_after"] == pytest.approx(after.by_callback()["total_ms"].sum())
    assert totals.loc["callbacks", "verdict"] == "regression"  # Sleepy: 2 ms a batch
    text = d.text(limit=2, more="see below")
    assert "2 more rows" not in text and "more rows: see below" in text and "changes under 5% are noise" in text
    assert "total" in text and "events and work" in text and "Callbacks: before / after" in str(d)
    assert "verdict" in d._repr_html_()


@pytest.mark.parametrize("value, parsed", [
    (None, (0.0, 0.0)), (0, (0.0, 0.0)), (2, (2.0, 0.0)), ("5%", (0.0, 0.05)), ("0.5ms", (0.5, 0.0)),
    ("200us", (0.2, 0.0)), ("1s", (1000.0, 0.0)), (" 3 ", (3.0, 0.0)), (["5%", "1ms"], (1.0, 0.05)),
])
def test_min_change_parses(value, parsed):
    from loopviz.diff import parse_min_change

    assert parse_min_change(value) == pytest.approx(parsed)


@pytest.mark.parametrize("value", ["fast", "-1ms", "5%%", True, object(), "inf", "nan"])
def test_a_bad_min_change_is_a_clear_error(value):
    from loopviz.diff import parse_min_change

    with pytest.raises(LoopvizError, match="min_change must be a number of ms, or a string such as '5%'"):
        parse_min_change(value)


def test_a_trace_that_cannot_be_compared_is_named(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as done:
            learn.fit(1)
        with learn.trace() as recording:
            with pytest.raises(LoopvizError, match=r"^after: cannot compare this trace"):
                diff_traces(done, recording)
