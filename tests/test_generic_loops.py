"""Loops that are not fastai's: a miniai-style learner and a plain PyTorch function, through every view and the tracer."""
from __future__ import annotations

import gc
import shutil
import weakref
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
import torch
from torch import nn

from loopviz import LoopDiagram, LoopvizError, Work, render_mermaid, render_text
from loopviz.adapters.miniai import miniai_spec, trace_miniai
from loopviz.annotate import annotate
from loopviz.generic import DispatchTracer
from loopviz.loop import Loop
from loopviz.trace import instrument
from loopviz.renderers.rich_tree import RichLoop
from loopviz.trace.trace import Trace
from tests import miniai_style as mi
from tests.test_render_rich import render


def miniai_learner(cls=mi.Learner, cbs=()):
    train, valid, model, loss = mi.synthetic()
    return cls(model, train, valid, loss, cbs=[mi.TrainCB(), mi.MetricsCB(), *cbs])


def every_view(spec, tmp_path) -> None:
    """Every renderer on a spec: text, rich, DOT (and SVG when dot exists), Mermaid (and its parser when node exists)."""
    assert render_text(spec) and render_text(spec, verbose=True)
    assert "Callbacks in call order" in render(RichLoop(spec, verbose=True))
    diagram = LoopDiagram(spec, verbose=True)
    if shutil.which("dot"):
        ET.fromstring(diagram.svg())
    mermaid = render_mermaid(spec, verbose=True)
    if shutil.which("node"):
        from tests.test_render_mermaid import official_parse

        assert "OK " in official_parse(tmp_path, {"view": mermaid})


def test_golden_miniai_spec(golden):
    golden("miniai_compact.txt", render_text(miniai_spec(miniai_learner(), base=mi.Callback)))


def test_miniai_spec_reads_callbacks_docs_and_steps(tmp_path):
    learn = miniai_learner()
    spec = miniai_spec(learn, base=mi.Callback)
    assert [c.cls for c in spec.callbacks] == ["TrainCB", "MetricsCB"]
    predict = spec.event("predict", mode="train")
    assert [(h.callback.cls, h.doc) for h in predict.handlers] == [("TrainCB", "Run the model on the inputs")]
    backward = spec.event("backward", mode="train").handlers[0]
    assert (backward.doc, backward.doc_source) == ("Does the training steps: predict, loss, backward, step, zero_grad", "class")
    fit = spec.phases[0]
    assert fit.cancel.route() == "CancelFitException → cleanup_fit"
    assert "backward" not in [e.name for e in spec.events() if e.mode == "valid"]
    own = miniai_spec(miniai_learner(mi.TrainLearner), base=mi.Callback)
    assert "predict" not in own.event_names()  # the learner does its steps itself: work, not events
    works = [s.name for top in own.phases for p in [top, *top.phases()] for s in p.steps if s.__class__.__name__ == "Work"]
    assert works.count("predict") == 2 and works.count("backward") == 1
    every_view(spec, tmp_path)
    every_view(own, tmp_path)


def test_tracing_a_miniai_fit_and_cancel(tmp_path):
    learn = miniai_learner(cbs=[mi.StopEarlyCB(max_batches=3)])
    before_callback = learn.__dict__.get("callback")
    with trace_miniai(learn) as t:
        learn.fit(2)
    assert learn.__dict__.get("callback") is before_callback and all("predict" not in cb.__dict__ for cb in learn.cbs)
    events = list(t.firings_df()["event"].astype(str))
    assert events[0] == "before_fit" and events[-1] == "cleanup_fit" and "after_fit" not in events
    assert events.count("before_batch") == 3
    firings = t.firings_df()
    assert list(firings[firings["status"] == "cancelled"]["event"].astype(str)) == ["after_batch"]
    calls = t.calls_df()
    assert set(calls[calls["status"] == "cancelled"]["callback"]) == {"StopEarlyCB"}
    assert set(calls["callback"]) == {"TrainCB", "MetricsCB", "StopEarlyCB"}
    spec = annotate(miniai_spec(learn, base=mi.Callback), t)
    assert spec.event("predict", mode="train").timing.count == 3
    every_view(spec, tmp_path)
    back = Trace.load(t.save(tmp_path / "miniai.trace.json"))
    assert back.summary().equals(t.summary())


def test_dispatch_tracer_refuses_what_it_cannot_trace():
    learn = miniai_learner()
    with pytest.raises(LoopvizError, match="has no method 'dispatch' to trace"):
        DispatchTracer(learn, "dispatch")
    with trace_miniai(learn):
        with pytest.raises(LoopvizError, match="already being traced"):
            with trace_miniai(learn):
                pass


def plain_fit(loop: Loop, epochs: int = 2):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    x = torch.randn(32, 1)
    dl = [(x[i:i + 8], 2 * x[i:i + 8] + 3) for i in range(0, 32, 8)]

    @loop.phase("fit")
    def fit():
        for epoch in range(epochs):
            with loop.phase("epoch"):
                for i, (xb, yb) in enumerate(dl):
                    loop.at(epoch, i)
                    with loop.phase("batch"):
                        with loop.work("forward"):
                            pred = model(xb)
                        loop.event("after_pred")
                        with loop.work("backward"):
                            nn.functional.mse_loss(pred, yb).backward()
                        loop.event("after_backward")
                        with loop.work("step"):
                            opt.step()
                            opt.zero_grad()

    fit()
    return len(dl)


def test_a_plain_pytorch_loop_gets_the_diagram_and_the_timings(tmp_path, golden):
    loop = Loop("train")
    with pytest.raises(LoopvizError, match="nothing has run inside this loop yet"):
        loop.spec()
    with loop.trace() as t:
        n = plain_fit(loop)
    spec = loop.spec()
    golden("plain_loop_compact.txt", render_text(spec))
    phases = {p.name: p for top in spec.phases for p in [top, *top.phases()]}
    assert phases["batch"].repeat and phases["epoch"].repeat and not phases["fit"].repeat
    work = t.work_df()
    assert {name: (work["work"] == name).sum() for name in ("forward", "backward", "step")} == {
        "forward": 2 * n, "backward": 2 * n, "step": 2 * n}
    annotated = annotate(spec, t)
    batch_work = {s.name: s.timing for s in phases["batch"].steps if isinstance(s, Work)}
    assert batch_work.keys() == {"forward", "backward", "step"}
    assert all(timing is None for timing in batch_work.values())  # the unannotated spec has no times
    annotated_batch = [p for top in annotated.phases for p in [top, *top.phases()] if p.name == "batch"][0]
    assert {s.name: s.timing.count for s in annotated_batch.steps if isinstance(s, Work)} == {
        "forward": 2 * n, "backward": 2 * n, "step": 2 * n}
    every_view(annotated, tmp_path)


def test_an_exception_in_a_plain_phase_is_recorded(tmp_path):
    loop = Loop("train")
    with pytest.raises(RuntimeError):
        with loop.trace() as t:
            with loop.phase("fit"):
                raise RuntimeError("boom")
    firings = t.firings_df()
    assert list(firings["event"].astype(str)) == ["before_fit", "after_fit"]
    assert list(firings["status"]) == ["ok", "error"]


class BatchCounter(mi.Callback):
    """Counts its own after_batch calls per learner: the spy of a callback shared by two learners."""

    def __init__(self):
        self.batches = Counter()

    def after_batch(self, learn):
        self.batches[id(learn)] += 1


def counter_calls(trace) -> int:
    return int(trace.by_callback().query("callback == 'BatchCounter'")["calls"].sum())


@pytest.mark.parametrize("exit_order", ["first-first", "last-first"])
@pytest.mark.parametrize("fit_order", ["a-then-b", "b-then-a"])
def test_a_callback_shared_by_two_traced_loops_is_left_as_it_was(exit_order, fit_order):
    shared = BatchCounter()
    learners = [miniai_learner(cbs=[shared]), miniai_learner(cbs=[shared])]
    before = dict(vars(shared))
    tracers = [trace_miniai(learn) for learn in learners]
    traces = [tracer.__enter__() for tracer in tracers]
    for learn in (learners if fit_order == "a-then-b" else learners[::-1]):
        learn.fit(1)
    for tracer in (tracers if exit_order == "first-first" else tracers[::-1]):
        tracer.__exit__(None, None, None)
    assert vars(shared).keys() == before.keys() and vars(shared)["batches"] is before["batches"]
    assert [counter_calls(t) for t in traces] == [shared.batches[id(learn)] for learn in learners]
    assert all(count > 0 for count in shared.batches.values()) and instrument.installed() == []


def test_a_trace_never_exited_ends_when_its_loop_is_collected():
    shared = BatchCounter()
    learn = miniai_learner(cbs=[shared])
    t = trace_miniai(learn).__enter__()
    learn.fit(1)
    gone = weakref.ref(learn)
    del learn
    gc.collect()
    assert gone() is None, "the trace kept its learner alive"
    assert instrument.installed() == [] and "after_batch" not in vars(shared)
    assert not t.recording_now and counter_calls(t) == sum(shared.batches.values()) > 0
