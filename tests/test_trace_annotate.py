"""A trace's measured times on the loop views; the views still read only the model."""
from __future__ import annotations

import xml.etree.ElementTree as ET
import shutil

import pytest
from fastai.callback.all import GradientClip

from loopviz import LoopvizError, render_mermaid, render_text
from loopviz.annotate import annotate
from loopviz.diagram import LoopDiagram
from loopviz.renderers.mermaid import _esc as mermaid_escape


@pytest.fixture
def traced(learn):
    learn.add_cb(GradientClip())
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
        spec = learn.loop_spec()
    return spec, t


def test_events_handlers_and_work_get_their_measured_times(traced, learn):
    spec, t = traced
    annotated = annotate(spec, t)
    batch = annotated.event("before_step", mode="train")
    n = len(learn.dls.train)
    assert batch.timing.count == n
    clip = next(h for h in batch.handlers if h.callback.cls == "GradientClip")
    assert clip.timing.count == n and clip.timing.total_ms > 0
    summary = t.summary()
    expected = summary[(summary["name"] == "before_step") & (summary["phase"] == "train")]["total_ms"].item()
    assert batch.timing.total_ms == pytest.approx(expected)
    works = {s.name: s.timing for top in annotated.phases for p in [top, *top.phases()] if p.mode == "train"
             for s in p.steps if s.__class__.__name__ == "Work"}
    assert works["forward"].count == n and works["draw"].count == n + 1
    assert annotated.event("after_create").timing is None  # fired at construction, before the trace
    assert spec.event("before_step", mode="train").timing is None  # the original spec is untouched


def test_every_view_shows_the_times(traced):
    spec, t = traced
    annotated = annotate(spec, t)
    timing = annotated.event("before_step", mode="train").timing.short()
    assert timing in render_text(annotated)
    assert timing in render_text(annotated, verbose=True)
    assert mermaid_escape(timing) in render_mermaid(annotated)
    assert "measured: host clock" in render_text(annotated)
    if shutil.which("dot"):
        root = ET.fromstring(LoopDiagram(annotated).svg())
        assert any(timing in (el.text or "") for el in root.iter("{http://www.w3.org/2000/svg}text"))


def test_show_training_loop_takes_a_trace(traced, learn, capsys):
    _, t = traced
    view = learn.show_training_loop(trace=t)
    assert "[" in str(view) and " ms (" in str(view)
    capsys.readouterr()


def test_a_trace_of_another_framework_is_refused(traced):
    spec, t = traced
    t.framework = "miniai 0.1"
    with pytest.raises(LoopvizError, match="cannot be matched"):
        annotate(spec, t)


def test_annotating_picks_the_loops_that_ran_the_spec(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
            learn.validate()
            learn.get_preds()
        fit_spec, preds_spec = learn.loop_spec(), learn.loop_spec(loop="get_preds")
    n_valid = len(learn.dls.valid)
    fit = annotate(fit_spec, t)
    assert fit.event("before_fit").timing.count == 1  # not the validate's and get_preds' before_fit
    assert fit.event("before_batch", mode="valid").timing.count == n_valid
    preds = annotate(preds_spec, t)
    assert preds.event("before_fit").timing.count == 1 and "(get_preds)" in preds.measured
    every = annotate(fit_spec, t, loops=None)
    assert every.event("before_fit").timing.count == 3
    only = t.select(["validate"])
    assert list(only.firings_df()["loop"].unique()) == ["validate"]
    assert only.calls_df()["firing"].max() < only.n_firings
