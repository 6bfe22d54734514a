"""Handlers, docstrings, sources, order and flags as the fastai adapter reads them."""
from __future__ import annotations

import inspect

from fastai.callback.all import BnFreeze, EarlyStoppingCallback, GradientClip, ShowGraphCallback
from fastai.callback.core import Callback, event
from fastai.test_utils import VerboseCallback

from tests.callbacks import ChildOfTrainOnly, DrawCallback, TrainOnlyCallback, Undocumented, flip_inputs, log_start


def handler(spec, event_name, cls, mode=None):
    return next(h for h in spec.event(event_name, mode).handlers if h.callback.cls == cls)


def test_handler_doc_and_source_come_from_the_handler(learn):
    spec = learn.loop_spec()
    h = handler(spec, "before_fit", "Recorder")
    assert h.doc == inspect.getdoc(type(learn.recorder).before_fit) and h.doc_source == "handler"
    lines, first = inspect.getsourcelines(type(learn.recorder).before_fit)
    assert h.source.line == first and h.source.file == inspect.getsourcefile(type(learn.recorder).before_fit)
    assert h.source.short() == f"fastai/learner.py:{first}"


def test_inherited_handler_doc_is_found(learn):
    spec = learn.loop_spec(cbs=[EarlyStoppingCallback()])
    h = handler(spec, "before_fit", "EarlyStoppingCallback")
    assert EarlyStoppingCallback.before_fit.__doc__ is None
    assert h.doc == "Prepare the monitored value" and h.doc_source == "inherited"


def test_class_doc_is_the_fallback_and_base_class_docs_never_show(learn):
    spec = learn.loop_spec(cbs=[GradientClip(), Undocumented(), ChildOfTrainOnly(), BnFreeze()])
    clip = handler(spec, "before_step", "GradientClip", "train")
    assert (clip.doc, clip.doc_source) == (GradientClip.__doc__, "class")
    undocumented = handler(spec, "before_fit", "Undocumented")
    assert (undocumented.doc, undocumented.doc_source) == ("(no docstring)", "none")
    assert Callback.__doc__ not in undocumented.doc
    child = handler(spec, "after_batch", "ChildOfTrainOnly", "train")
    assert (child.doc, child.doc_source) == ("Count one more training batch", "inherited")
    bn = handler(spec, "before_train", "BnFreeze", "train")
    assert (bn.doc, bn.doc_source) == ("(no docstring)", "none")


def test_handlers_set_on_the_instance_are_found_with_their_own_docs(learn):
    spec = learn.loop_spec(cbs=[Callback(before_fit=log_start), flip_inputs])
    fit = [h for h in spec.event("before_fit").handlers if h.callback.cls == "Callback"]
    assert [(h.doc, h.via) for h in fit] == [(log_start.__doc__, "instance")]
    assert fit[0].source.line == inspect.getsourcelines(log_start)[1]
    batch = [h for h in spec.event("before_batch", "train").handlers if h.callback.cls == "Callback"]
    assert [h.doc for h in batch] == ["Negate the inputs (built with fastai's before_batch_cb)"]
    assert "partial(func" not in batch[0].doc


def test_order_is_fastais_sorted_order_and_stable_on_ties(learn):
    a, b, c = TrainOnlyCallback(), Callback(before_fit=log_start), Callback(after_fit=log_start)
    a.order = b.order = c.order = 0
    spec = learn.loop_spec(cbs=[a, b, c])
    expected = [type(cb).__name__ for cb in sorted([*learn.cbs, a, b, c], key=lambda cb: cb.order)]
    assert [cb.cls for cb in spec.callbacks] == expected
    zero = [cb.cls for cb in spec.callbacks if cb.order == 0]
    assert zero == ["TrainOnlyCallback", "Callback", "Callback"]


def test_run_false_callbacks_are_shown_as_disabled(learn):
    graph = ShowGraphCallback()
    graph.run = False
    spec = learn.loop_spec(cbs=[graph])
    h = handler(spec, "after_epoch", "ShowGraphCallback")
    assert h.disabled and h.skipped == "run=False" and not h.runs
    assert "ShowGraphCallback(run=False)" in str(learn.show_training_loop(cbs=[graph]))
    assert graph.run is False


def test_callbacks_overriding_call_appear_at_every_event(learn):
    spec = learn.loop_spec(cbs=[VerboseCallback()])
    for ev in spec.events():
        if ev.name != "after_create":
            assert "VerboseCallback" in [h.callback.cls for h in ev.running if h.via == "call"], ev.name
    assert "VerboseCallback(__call__)" in str(learn.show_training_loop(cbs=[VerboseCallback()]))


def test_custom_events_are_reported_and_really_fire_through_learn(learn):
    spec = learn.loop_spec(cbs=[DrawCallback()])
    custom = spec.custom_events
    assert [e.name for e in custom] == ["before_draw"]
    assert [h.doc for h in custom[0].handlers] == ["Count a draw"]
    assert "missing before_draw" in custom[0].description
    draw = DrawCallback()
    learn.add_cb(draw)
    setattr(event, "before_draw", "before_draw")
    try:
        assert learn.loop_spec().custom_events[0].description.endswith("learn('before_draw').")
        learn("before_draw")
        assert draw.draws == 1
    finally:
        delattr(event, "before_draw")
        learn.remove_cb(draw)
