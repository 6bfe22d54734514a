"""A trace's measured times on the loop views; the views still read only the model."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import shutil

import pytest
from fastai.callback.all import GradientClip
from fastai.test_utils import synth_learner

import loopviz
import tests.miniai_style as mi
from loopviz import LoopvizError, render_mermaid, render_text
from loopviz.adapters.miniai import miniai_spec
from tests.spy import spy
from tests.test_generic_loops import miniai_learner
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


def test_a_trace_of_fit_one_cycle_is_drawn_as_fit_one_cycle(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit_one_cycle(1)
    view = learn.show_training_loop(trace=t)
    assert view.spec.loop == "fit_one_cycle"
    scheduler = next(h for h in view.spec.event("before_batch", mode="train").handlers
                     if h.callback.cls == "ParamScheduler")
    assert scheduler.timing.count == len(learn.dls.train)
    assert learn.show_training_loop(trace=t, loop="fit").spec.loop == "fit"  # unless told otherwise


def test_callbacks_the_trace_saw_but_the_spec_lacks_are_shown(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1, cbs=[GradientClip()])  # the learner does not keep it after the fit
    annotated = annotate(learn.loop_spec(), t)
    clip = [h for h in annotated.event("before_step", mode="train").handlers if h.callback.cls == "GradientClip"]
    assert len(clip) == 1 and clip[0].timing.count == len(learn.dls.train)
    order = [h.callback.order for h in annotated.event("before_step", mode="train").handlers]
    assert order == sorted(order)
    assert any("GradientClip" in note and "fit(cbs=...)" in note for note in annotated.notes)
    assert "GradientClip" in render_text(annotated)


def test_a_loop_nested_in_a_handler_is_told_not_mixed_in(learn):
    from fastai.callback.core import FetchPredsCallback

    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1, cbs=[FetchPredsCallback()])
            learn.validate()
    loops = t.loops_df()
    assert list(loops["inside_event"]) == ["", "after_validate", ""]
    annotated = annotate(learn.loop_spec(), t)
    # the fit's own validation batches, not the nested get_preds' ones added in
    assert annotated.event("before_batch", mode="valid").timing.count == len(learn.dls.valid)
    note = next(n for n in annotated.notes if "nested loop ran inside after_validate" in n)
    assert "1×" in note and "trace.select([1])" in note
    assert any("The trace also ran validate" in n for n in annotated.notes)


# -- one loop's trace, on the view of that loop only -------------------------------------------------


def test_a_trace_of_another_loop_is_an_error_naming_both(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
    message = "this trace ran 'fit'; the view asks for 'lr_find': pass loop='fit' or trace lr_find."
    with pytest.raises(LoopvizError, match=re.escape(message)):
        learn.show_training_loop(trace=t, loop="lr_find")
    with pytest.raises(LoopvizError, match=re.escape(message)):
        annotate(learn.loop_spec(loop="lr_find"), t)
    with pytest.raises(LoopvizError, match="the view asks for 'validate'"):
        loopviz.show(learn, loop="validate", trace=t)
    assert annotate(learn.loop_spec(loop="validate"), t, loops=None).event("before_fit").timing.count == 1  # asked for


def test_counts_past_the_cap_are_the_summary_s():
    learn = synth_learner(n_trn=64, n_val=8)
    with learn.no_bar(), learn.no_logging():
        with spy(learn) as seen, learn.trace(max_firings=100) as t:
            learn.fit(2)
    view = loopviz.show(learn, trace=t, fmt="graphviz")  # the loop it ran, as learn.show_training_loop does
    assert view.spec.loop == "fit" and t.dropped_firings > 0
    for ev in view.spec.events():
        if ev.timing is not None:
            assert ev.timing.count == seen.firing_counts()[(ev.name, ev.mode or "")], ev.name
    assert view.spec.event("before_batch", mode="train").timing.count == 128
    assert "128 &#215; " in view.source  # × as DOT holds it


def test_show_takes_a_trace_for_a_miniai_learner_and_a_generic_loop():
    learn = miniai_learner()
    with loopviz.tracing(learn) as t:
        learn.fit(1)
    view = loopviz.show(learn, trace=t)
    batch = view.spec.event("before_batch", mode="train")
    assert batch.timing.count == t.summary().query("name == 'before_batch' and phase == 'train'")["count"].item()
    generic = loopviz.show_loop(miniai_spec(learn, base=mi.Callback), trace=t, fmt="graphviz")
    assert generic.spec.measured.startswith("measured:") and " ms (" in generic.source


def test_show_takes_a_trace_for_a_hugging_face_trainer(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import tiny_trainer

    trainer = tiny_trainer(tmp_path)
    with loopviz.tracing(trainer) as t:
        trainer.train()
    view = loopviz.show(trainer, trace=t)
    assert view.spec.loop == "train"
    step = view.spec.event("on_step_end")
    assert step.timing.count == 4  # 16 examples in batches of 4, one epoch
    with pytest.raises(LoopvizError, match="this trace ran 'train'; the view asks for 'evaluate'"):
        loopviz.show(trainer, loop="evaluate", trace=t)


def test_lightning_counts_each_loop_once_and_nested_hooks_as_run(tmp_path):
    pytest.importorskip("lightning")
    from tests.lightning_fixtures import traced_fit

    tr, seen, t = traced_fit(tmp_path)
    diagram = loopviz.show(tr, fmt="graphviz", trace=t)
    spec = diagram.spec
    steps = [ev for ev in spec.events() if ev.name == "validation_step"]
    assert [ev.timing.count for ev in steps] == [2, 4]  # the sanity check's 2 batches, then 2 per epoch
    assert sum(ev.timing.count for ev in steps) == seen.counts()["validation_step"]
    closure = next(p for p in spec.phases[0].phases() if p.name == "closure")
    assert all(ev.timing is not None and ev.timing.count == 8 for ev in closure.events())  # fired inside optimizer_step
    module_step = next(h for h in spec.event("training_step").handlers if h.callback.cls == "TinyModule")
    assert module_step.timing.count == seen.calls()[("TinyModule", "training_step")]
    shown = [line for line in diagram.source.splitlines() if "validation_step" in line and " ms = " in line]
    assert len(shown) == 2 and len(set(shown)) == 2  # each loop's own figures, never one loop's counted twice
    with pytest.raises(LoopvizError, match="this trace ran 'fit'; the view asks for 'validate'"):
        loopviz.show(tr, loop="validate", trace=t)


# -- an empty trace: every view says it recorded no loop (issue 24) ---------------------------------

NO_LOOP = "this trace recorded no loop"


@pytest.fixture
def empty(learn):
    """A trace of nothing: `with learn.trace() as t: pass`."""
    with learn.trace() as t:
        pass
    return t


def test_the_loop_views_of_an_empty_trace_say_it_recorded_no_loop(empty, learn):
    assert not empty.loops and empty.n_firings == 0
    for view in (lambda: learn.show_training_loop(trace=empty), lambda: annotate(learn.loop_spec(), empty),
                 lambda: annotate(learn.loop_spec(), empty, loops=None), lambda: loopviz.show(learn, trace=empty),
                 lambda: loopviz.show(learn, trace=empty, fmt="text")):
        with pytest.raises(LoopvizError, match=f"{NO_LOOP}, so there are no times to put on the loop: nothing ran"):
            view()


def test_an_empty_trace_of_a_hugging_face_trainer_says_it_recorded_no_loop(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import tiny_trainer

    trainer = tiny_trainer(tmp_path)
    with loopviz.tracing(trainer) as t:
        pass
    with pytest.raises(LoopvizError, match=NO_LOOP):
        loopviz.show(trainer, trace=t)


def test_the_printed_reports_of_an_empty_trace_are_empty_with_a_note(empty):
    from rich.console import Console

    for printed in (str(empty), repr(empty), empty._repr_html_()):
        assert "0 loop(s) (none)" in printed and f"{NO_LOOP}, so every table is empty" in printed
    console = Console(record=True, width=200)
    console.print(empty)
    assert f"{NO_LOOP}, so every table is empty" in console.export_text()
    assert empty.notes()[0].startswith(NO_LOOP)
    for table in (empty.summary(), empty.by_callback(), empty.loops_df(), empty.firings_df(), empty.calls_df()):
        assert len(table) == 0 and len(table.columns) > 0  # the columns a program reads, no rows
    assert empty.total_ns() == 0


def test_the_drawn_reports_of_an_empty_trace_are_refused(empty, tmp_path):
    for view in (lambda: empty.to_html(tmp_path / "e.html"), lambda: empty.plot()):
        with pytest.raises(LoopvizError, match=f"{NO_LOOP}, so it has no loop to show: nothing ran"):
            view()
    assert not (tmp_path / "e.html").exists()


def test_the_chrome_file_of_an_empty_trace_carries_the_note(empty, tmp_path):
    import json

    chrome = json.loads(empty.to_chrome(tmp_path / "e.json").read_text(encoding="utf-8"))
    assert not [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert chrome["otherData"]["notes"][0].startswith(NO_LOOP)


def test_a_diff_with_an_empty_trace_is_refused_naming_it(empty, learn):
    with learn.trace() as also_empty:
        pass
    with learn.no_bar(), learn.no_logging(), learn.trace() as ran:
        learn.fit(1)
    for before, after, which in ((empty, also_empty, "before"), (ran, empty, "after"), (empty, ran, "before")):
        with pytest.raises(LoopvizError, match=f"the {which} trace recorded no loop, so there is nothing to compare"):
            loopviz.diff_traces(before, after)


def test_loopviz_report_and_diff_of_an_empty_trace_file(empty, learn, tmp_path):
    import json

    from click.testing import CliRunner

    from loopviz.cli import cli

    saved = str(empty.save(tmp_path / "empty.json"))
    table = CliRunner().invoke(cli, ["report", saved])
    assert table.exit_code == 0 and f"{NO_LOOP}, so every table is empty" in table.output
    for fmt in ("html", "svg", "plot"):
        drawn = CliRunner().invoke(cli, ["report", saved, "-f", fmt, "-o", str(tmp_path / f"e.{fmt}")])
        assert drawn.exit_code == 1 and f"loopviz: {NO_LOOP}, so it has no loop to show" in drawn.output, drawn.output
    chrome = CliRunner().invoke(cli, ["report", saved, "-f", "chrome", "-o", str(tmp_path / "e.chrome.json")])
    assert chrome.exit_code == 0
    notes = json.loads((tmp_path / "e.chrome.json").read_text(encoding="utf-8"))["otherData"]["notes"]
    assert notes[0].startswith(NO_LOOP)
    diff = CliRunner().invoke(cli, ["diff", saved, saved])
    assert diff.exit_code == 1 and "trace recorded no loop, so there is nothing to compare" in diff.output
