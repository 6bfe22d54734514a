"""The observed loop (loopviz.trace.observed): what a trace saw, as a LoopSpec, checked against independent spies."""
from __future__ import annotations

from collections import Counter

import pytest
from fastai.callback.all import GradientClip
from fastai.test_utils import synth_learner

from loopviz.model import Event, LoopSpec, Phase, Work
from loopviz.trace.observed import observed_spec, sub_loops
from tests.spy import spy


@pytest.fixture(scope="module")
def capped():
    """A fit of 2 epochs (64 training, 8 validation samples) whose trace keeps 100 firings raw, with a spy."""
    learn = synth_learner(n_trn=64, n_val=8, cbs=[GradientClip()])
    with learn.no_bar(), learn.no_logging():
        with spy(learn) as seen, learn.trace(max_firings=100) as t:
            learn.fit(2)
    return t, seen


def counted(spec: LoopSpec) -> Counter:
    """(event, phase) -> the count its observed events carry (an event may be drawn in several places)."""
    out: Counter = Counter()
    for ev in spec.events():
        out[(ev.name, ev.mode or "")] += ev.timing.count
    return out


def test_events_in_the_order_they_first_fired(capped):
    t, seen = capped
    spec = observed_spec(t.data, 0)
    fired = list(dict.fromkeys((f.event, f.phase) for f in seen.top_level()))
    assert [(ev.name, ev.mode or "") for ev in spec.events()] == fired


def test_counts_past_the_cap_are_what_ran(capped):
    t, seen = capped
    assert t.dropped_firings > 0  # the cap was reached
    spec = observed_spec(t.data, 0)
    assert counted(spec) == Counter({key: n for key, n in seen.firing_counts().items()})
    assert spec.event("before_batch", "train").timing.count == 128 == seen.firing_counts()[("before_batch", "train")]
    summary = t.summary()
    row = summary[(summary["kind"] == "event") & (summary["name"] == "after_batch") & (summary["phase"] == "train")]
    assert spec.event("after_batch", "train").timing.total_ms == pytest.approx(row["total_ms"].item())


def test_handlers_are_the_callbacks_that_ran_with_their_counts(capped):
    t, seen = capped
    spec = observed_spec(t.data, 0)
    ran = {key: n["ran"] for key, n in seen.callback_counts().items() if n["ran"]}
    shown = {(h.callback.cls, ev.name, ev.mode or ""): h.timing.count for ev in spec.events() for h in ev.handlers}
    assert shown == ran
    order = [h.callback.order for h in spec.event("after_batch", "train").handlers]
    assert order == sorted(order)


def test_repeats_phases_and_work(capped):
    t, _ = capped
    spec = observed_spec(t.data, 0)
    phases = {p.label: p for p in spec.phases[0].phases()}
    batch = phases["Batch (train)"]
    assert batch.repeat == "ran 128×" and batch.mode == "train"
    assert [s.name for s in batch.steps if isinstance(s, Event)][0] == "before_batch"
    assert {"Training", "Validation", "Batch (valid)"} <= set(phases)
    work = {(s.name, p.mode): s.timing for p in spec.phases[0].phases() for s in p.steps if isinstance(s, Work)}
    summary = t.summary()
    forward = summary[(summary["kind"] == "work") & (summary["name"] == "forward") & (summary["phase"] == "train")]
    assert work[("forward", "train")].count == forward["count"].item() == 128
    assert spec.phases[0].steps[0].name == "setup"


def test_the_structure_is_pinned(capped, golden):
    t, _ = capped
    golden("observed_fit.txt", outline(observed_spec(t.data, 0)))


def outline(spec: LoopSpec) -> str:
    """The observed loop without times: phases, events with their counts and callbacks, named work."""
    lines: list[str] = []

    def walk(phase: Phase, depth: int) -> None:
        lines.append(f"{'  ' * depth}[{phase.label}]" + (f" {phase.repeat}" if phase.repeat else ""))
        for step in phase.steps:
            if isinstance(step, Phase):
                walk(step, depth + 1)
            elif isinstance(step, Event):
                cbs = ", ".join(f"{h.callback.cls}×{h.timing.count}" for h in step.handlers)
                line = f"{'  ' * (depth + 1)}{step.name} ({step.mode or '-'}) ×{step.timing.count}  {cbs}"
                lines.append(line.rstrip())
            elif step.name != "between events":  # drawn or not by its share of the run: timed, so not pinned
                lines.append(f"{'  ' * (depth + 1)}~ {step.name}" + (f" ×{step.timing.count}" if step.timing else ""))

    for top in spec.phases:
        walk(top, 0)
    return "\n".join(lines)


# -- Lightning: a loop inside fit, and events fired inside another -----------------------------------


def test_lightning_sanity_check_and_closure(tmp_path):
    pytest.importorskip("lightning")
    from tests.lightning_fixtures import traced_fit

    _, seen, t = traced_fit(tmp_path)
    assert list(t.loops) == ["fit", "sanity_check"] and sub_loops(t.data, 0) == [1]
    spec = observed_spec(t.data, 0)
    by_name: Counter = Counter()
    for ev in spec.events():
        by_name[ev.name] += ev.timing.count
    assert by_name == seen.counts()  # every hook once per loop: the sanity check's and fit's validation apart
    sanity = next(p for p in spec.phases[0].steps if isinstance(p, Phase) and p.label == "sanity_check")
    assert Counter(ev.name for ev in sanity.events())["validation_step"] == 1
    assert next(ev for ev in sanity.events() if ev.name == "validation_step").timing.count == 2
    inside = next(p for p in spec.phases[0].phases() if p.name == "inside_optimizer_step")
    assert [ev.name for ev in inside.events()][:4] == ["training_step", "on_before_zero_grad", "optimizer_zero_grad",
                                                       "backward"]
    assert all(ev.timing.count == 8 for ev in inside.events())
    assert {h.callback.cls for ev in inside.events() for h in ev.handlers} == {"TinyModule"}


def test_an_epoch_whose_events_change_phase_is_one_repeat():
    """miniai fires before_epoch in train then in valid mode: the loop back is from the valid epoch's end to the
    train epoch's start, one repeated stretch holding both."""
    import loopviz
    from tests.test_generic_loops import miniai_learner

    learn = miniai_learner()
    with loopviz.tracing(learn) as t:
        learn.fit(2)
    spec = observed_spec(t.data, 0)
    repeats = [p for p in spec.phases[0].steps if isinstance(p, Phase) and p.repeat]
    assert len(repeats) == 1 and repeats[0].repeat == "ran 2×"
    assert [p.label for p in repeats[0].steps if isinstance(p, Phase)] == ["Training", "Validation"]
    fired = t.firings_df()
    assert counted(spec) == Counter(zip(fired["event"].astype(str), fired["phase"]))
