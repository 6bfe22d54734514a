"""Which learner state each callback changes, recorded by a real traced fit."""
from __future__ import annotations

import pytest
from fastai.callback.all import GradientClip
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz import LoopvizError, render_text
from loopviz.annotate import annotate
from loopviz.trace.trace import Trace


class DoublePred(Callback):
    "Doubles the predictions and leaves a flag on the learner"
    order = 40

    def after_pred(self):
        self.learn.pred = self.learn.pred * 2
        self.learn.doubled = True


class ReadsOnly(Callback):
    order = 41

    def after_pred(self):
        _ = self.learn.pred.sum()


def fit_traced(learn, **kwargs):
    with learn.no_bar(), learn.no_logging():
        with learn.trace(changes=True, **kwargs) as t:
            learn.fit_one_cycle(1)
    return t


def changes_of(t, callback, event, phase):
    df = t.changes()
    rows = df[(df["callback"] == callback) & (df["event"] == event) & (df["phase"] == phase)]
    return set(rows["attribute"])


def test_rebinding_and_new_attributes_are_attributed_to_the_callback(learn):
    learn.add_cbs([DoublePred(), ReadsOnly()])
    t = fit_traced(learn)
    assert changes_of(t, "DoublePred", "after_pred", "train") == {"learn.pred", "learn.doubled"}
    assert changes_of(t, "DoublePred", "after_pred", "valid") == {"learn.pred"}  # `doubled` was already True
    assert changes_of(t, "ReadsOnly", "after_pred", "train") == set()
    row = t.changes().query("callback == 'DoublePred' and event == 'after_pred' and phase == 'train' and attribute == 'learn.pred'")
    assert row["count"].item() == len(learn.dls.train)
    assert (row["first_iter"].item(), row["last_iter"].item()) == (0, len(learn.dls.train) - 1)


def test_hyper_parameters_and_real_fastai_callbacks(learn):
    t = fit_traced(learn)
    assert changes_of(t, "ParamScheduler", "before_batch", "train") == {"learn.opt.hypers.lr", "learn.opt.hypers.mom"}
    assert changes_of(t, "CastToTensor", "before_batch", "train") == {"learn.xb", "learn.yb"}
    assert "learn.training" in changes_of(t, "TrainEvalCallback", "before_validate", "valid")
    lr = t.who_changed("lr")
    assert list(lr["callback"].unique()) == ["ParamScheduler"]
    assert list(lr["iter"]) == list(range(len(learn.dls.train)))
    with pytest.raises(LoopvizError, match="no callback changed 'nope' in this trace; changed attributes: "):
        t.who_changed("nope")


def test_in_place_tensor_changes_are_opt_in(learn):
    learn.add_cb(GradientClip(max_norm=1e-6))
    without = fit_traced(learn)
    assert not any("(in place)" in a for a in without.changes()["attribute"])
    with_tensors = fit_traced(learn, tensors=True)
    assert changes_of(with_tensors, "GradientClip", "before_step", "train") == {"learn.model.grads (in place)"}


def test_changes_need_the_option_and_survive_save_load(learn, tmp_path):
    with learn.no_bar(), learn.no_logging(), learn.trace() as plain:
        learn.fit(1)
    with pytest.raises(LoopvizError, match=r"trace with learn.trace\(changes=True\)"):
        plain.changes()
    t = fit_traced(learn)
    back = Trace.load(t.save(tmp_path / "t.json"))
    assert back.changes().equals(t.changes()) and back.who_changed("lr").equals(t.who_changed("lr"))


def test_views_list_the_changes_under_each_callback(learn):
    learn.add_cb(DoublePred())
    t = fit_traced(learn)
    with learn.no_bar():
        spec = annotate(learn.loop_spec(loop="fit_one_cycle"), t)
    handler = next(h for h in spec.event("after_pred", mode="train").handlers if h.callback.cls == "DoublePred")
    assert set(handler.changes) == {"learn.doubled", "learn.pred"}
    text = render_text(spec, verbose=True)
    assert "changes: learn.opt.hypers.lr, learn.opt.hypers.mom" in text


class DropsFlag(Callback):
    "Deletes the flag DoublePred leaves"
    order = 45

    def after_pred(self):
        if hasattr(self.learn, "doubled") and "doubled" in self.learn.__dict__:
            del self.learn.doubled


def test_a_deleted_attribute_is_a_change_too(learn):
    learn.add_cbs([DoublePred(), DropsFlag()])
    t = fit_traced(learn)
    assert changes_of(t, "DropsFlag", "after_pred", "train") == {"learn.doubled"}
    assert changes_of(t, "DoublePred", "after_pred", "train") == {"learn.pred", "learn.doubled"}


class TriesAndRestores(Callback):
    "Swaps the predictions out and puts the same tensor back: no change in the end"
    order = 42

    def after_pred(self):
        pred = self.learn.pred
        self.learn.pred = pred.detach() * 0
        self.learn.pred = pred


class PredsInside(Callback):
    "Runs get_preds inside its handler, which rebinds learn.dl, learn.pred and more"
    order = 5

    def after_train(self):
        self.learn.get_preds(dl=self.learn.dls.valid)


def test_a_value_written_back_is_no_change_and_nested_writes_count_for_the_caller(learn):
    learn.add_cbs([TriesAndRestores(), PredsInside()])
    t = fit_traced(learn)
    assert changes_of(t, "TriesAndRestores", "after_pred", "train") == set()
    assert {"learn.dl", "learn.pred"} <= changes_of(t, "PredsInside", "after_train", "train")


def test_writes_of_untraced_learners_pass_through(learn):
    other = synth_learner()
    with learn.trace(changes=True):
        other.flag = 1
        del other.flag
        other.flag = 2
    assert other.flag == 2 and "flag" in other.__dict__
