"""The framework-free loop model: built by hand here, with no fastai involved."""
from __future__ import annotations

import pytest

from loopviz import CallbackInfo, CancelPath, Event, Handler, LoopSpec, Phase, SourceRef, Work, render_text


def tiny_spec() -> LoopSpec:
    cb = CallbackInfo("logger", "Logger", "my.loop", order=5, doc="Logs things")
    off = CallbackInfo("noisy", "Noisy", "my.loop", order=9, run=False)
    cancel = CancelPath("StopBatch", "batch_cancelled", "batch_end", "the batch stops")
    batch = Phase("batch", "Batch Loop", [
        Work("draw", "x = next(it)", "Fetch a batch"),
        Event("batch_start", "A batch starts", [Handler(cb, "Log the batch", "handler", SourceRef("/x/site-packages/my/loop.py", 3))], role="enter"),
        Event("batch_cancelled", "Only on StopBatch", [], role="cancel", cancel=cancel),
        Event("batch_end", "A batch ends", [Handler(off, "(no docstring)", "none", skipped="run=False")], role="exit"),
    ], repeat="for each batch", cancel=cancel)
    return LoopSpec("train", "handmade 1.0", [Phase("run", "Run", [batch])], [cb, off])


def test_walk_events_and_lookup():
    spec = tiny_spec()
    assert [e.name for e in spec.events()] == ["batch_start", "batch_cancelled", "batch_end"]
    assert spec.event("batch_end").handlers[0].disabled
    assert spec.event("batch_cancelled").is_cancel_handler
    assert [d for d, _ in spec.phases[0].walk()] == [0, 1, 1, 1, 1]
    with pytest.raises(KeyError, match="no event 'nope' in the train loop; known events: batch_cancelled, batch_end, batch_start"):
        spec.event("nope")


def test_source_ref_short_paths():
    assert SourceRef("/venv/lib/python3.11/site-packages/fastai/learner.py", 553).short() == "fastai/learner.py:553"
    assert SourceRef("/home/me/project/tests/cbs.py", 7).short() == "tests/cbs.py:7"


def test_text_renderer_needs_no_framework():
    spec = tiny_spec()
    assert render_text(spec).splitlines() == [
        "Start Run",
        "  Start Batch Loop",
        "     - batch_start    : [Logger]",
        "     - batch_cancelled: []",
        "     - batch_end      : [Noisy(run=False)]",
        "  End Batch Loop",
        "End Run",
    ]
    verbose = render_text(spec, verbose=True)
    assert " ~ draw: x = next(it)" in verbose
    assert "If StopBatch is raised here, the batch stops: batch_cancelled fires, then batch_end." in verbose
    assert "Logger (order 5)  my/loop.py:3" in verbose
    assert "Noisy (order 9)  disabled: run=False" in verbose


def test_map_is_the_one_walk():
    spec = tiny_spec()
    seen = []

    def event(ev, phase):
        seen.append((ev.name, phase.name if phase else None))
        return None if ev.name == "batch_cancelled" else ev

    mapped = spec.map(event=event, work=lambda w, phase: Work(w.name.upper(), w.code, w.description))
    assert seen == [("batch_start", "batch"), ("batch_cancelled", "batch"), ("batch_end", "batch")]
    assert [e.name for e in mapped.events()] == ["batch_start", "batch_end"]
    assert mapped.phases[0].steps[0].steps[0].name == "DRAW"
    assert [e.name for e in spec.events()] == ["batch_start", "batch_cancelled", "batch_end"]  # the original stays


def test_the_model_imports_no_renderer_and_no_framework():
    import subprocess
    import sys

    probe = ("import sys, loopviz.model\n"
             "print(sorted(m for m in sys.modules if m.startswith(('loopviz.renderers', 'fastai', 'torch', 'rich', 'graphviz'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert repr(tiny_spec()) == "<LoopSpec: train loop of handmade 1.0, 3 events, 2 callbacks; loopviz.show_loop(spec) shows it>"
