"""Previewing `cbs=` never changes the learner; bad input gets a clear error."""
from __future__ import annotations

import pytest
from fastai.callback.all import GradientClip, ParamScheduler, SaveModelCallback

import loopviz.view
from loopviz import LoopvizError


def snapshot(learn):
    """Everything a preview could disturb: attributes, the callback list, and each callback's state."""
    return (
        dict(learn.__dict__),
        [id(cb) for cb in learn.cbs],
        [dict(cb.__dict__) for cb in learn.cbs],
    )


def test_preview_leaves_the_learner_as_it_was(learn):
    learn.add_cb(SaveModelCallback())
    held = learn.save_model
    before = snapshot(learn)
    clip = GradientClip()
    text = str(learn.show_training_loop(verbose=True, cbs=[SaveModelCallback, clip]))
    assert snapshot(learn) == before
    assert learn.save_model is held and clip.learn is None
    assert text.count("SaveModelCallback (order 61)") >= 2  # the held one and the previewed one


def test_preview_leaves_the_learner_as_it_was_when_rendering_raises(learn, monkeypatch):
    before = snapshot(learn)

    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(loopviz.renderers.text, "render_text", broken)  # the format table imports it by name
    with pytest.raises(RuntimeError, match="renderer failed"):
        learn.show_training_loop(cbs=[SaveModelCallback, GradientClip()])
    assert snapshot(learn) == before


@pytest.mark.parametrize("cbs, message", [
    ([42], "cbs must hold fastai Callback instances or classes; got int 42"),
    ("GradientClip", "got str 'GradientClip'"),
    ([ParamScheduler], r"cannot create ParamScheduler\(\) without arguments .* Pass an instance instead"),
])
def test_bad_cbs_get_a_clear_error(learn, cbs, message):
    before = snapshot(learn)
    with pytest.raises(LoopvizError, match=message):
        learn.show_training_loop(cbs=cbs)
    assert snapshot(learn) == before


def test_unknown_loop_names_the_known_ones(learn):
    with pytest.raises(LoopvizError, match="loop must be one of 'fit', 'fit_one_cycle', 'fine_tune', 'validate', 'get_preds', 'lr_find', not 'train'"):
        learn.loop_spec(loop="train")


def test_single_callback_and_tuple_are_accepted(learn):
    one = learn.loop_spec(cbs=GradientClip())
    many = learn.loop_spec(cbs=(GradientClip(),))
    assert [c.cls for c in one.callbacks] == [c.cls for c in many.callbacks]
    assert "GradientClip" in [c.cls for c in one.callbacks]
