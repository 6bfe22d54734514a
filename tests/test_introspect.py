"""`loopviz.introspect` on real fastai callbacks and learners, and the tracer and the spec against a real fit."""
from __future__ import annotations

import functools
import inspect
import sys
from collections import Counter

from fastai.callback.all import EarlyStoppingCallback, GradientClip
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.test_utils import RegModel, VerboseCallback, synth_learner
from fastcore.basics import GetAttr

from loopviz import introspect
from loopviz.adapters.fastai.handlers import delegates
from tests.callbacks import ChildOfTrainOnly, TrainOnlyCallback, Undocumented, flip_inputs, log_start

BASES = (Callback,)


def handler_for(cb, event, learn=None):
    return introspect.handler_for(cb, event, base_classes=BASES, delegates=delegates(learn), call_base=Callback)


def logged(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


class Decorated(Callback):
    "Has a decorated handler"

    @logged
    def before_fit(self) -> None:
        "Prepare, behind a decorator"


class ModelWithHandler(RegModel):
    "A model with a method named like an event: every callback's after_batch reaches it through GetAttr"

    def after_batch(self) -> None:
        "Model-side after_batch"

    def after_loss(self) -> None:
        pass


class LearnerWithHandler(Learner):
    def after_fit(self) -> None:
        "Learner-side after_fit"


def test_instance_handler_is_found_with_its_own_doc_and_source():
    cb = Callback(before_fit=log_start)
    found = introspect.lookup(cb, "before_fit")
    assert found.via == "instance" and introspect.target_function(found.handler) is log_start
    h = handler_for(cb, "before_fit")
    assert (h.doc, h.doc_source, h.via) == (log_start.__doc__, "handler", "instance")
    assert h.source.line == inspect.getsourcelines(log_start)[1]


def test_inherited_handler_takes_the_parents_doc():
    h = handler_for(EarlyStoppingCallback(), "before_fit")
    assert EarlyStoppingCallback.before_fit.__doc__ is None
    assert (h.doc, h.doc_source, h.via) == ("Prepare the monitored value", "inherited", "method")
    child = handler_for(ChildOfTrainOnly(), "after_batch")
    assert (child.doc, child.doc_source) == ("Count one more training batch", "inherited")
    assert child.source.line == inspect.getsourcelines(ChildOfTrainOnly.after_batch)[1]


def test_partial_and_decorated_handlers_lead_to_the_users_function():
    batch = handler_for(flip_inputs, "before_batch")
    assert batch.doc == "Negate the inputs (built with fastai's before_batch_cb)" and batch.doc_source == "handler"
    assert "partial(func" not in batch.doc
    assert batch.source.file == inspect.getsourcefile(log_start)  # tests/callbacks.py, not fastai/learner.py
    fit = handler_for(Decorated(), "before_fit")
    assert (fit.doc, fit.doc_source) == ("Prepare, behind a decorator", "handler")
    assert fit.source.line == inspect.getsourcelines(Decorated.before_fit.__wrapped__)[1]


def test_getattr_delegated_handlers_are_found_on_the_model_and_the_learner(tmp_path):
    learn = synth_learner(path=tmp_path)
    learn.model = ModelWithHandler()
    preview = TrainOnlyCallback()  # not attached: only the delegates given reach the model
    assert introspect.lookup(preview, "after_batch").via == "method"
    found = introspect.lookup(Callback(), "after_batch", delegates(learn))
    assert found.via == "delegated" and found.handler.__self__ is learn.model
    assert introspect.lookup(Callback(), "after_batch") is None  # no learner yet, no delegates: nothing
    attached = learn.cast_to_tensor  # linked to its learner: without delegates, the object itself answers
    asked = introspect.lookup(attached, "after_batch")
    assert asked.via == "delegated" and asked.handler.__func__ is ModelWithHandler.after_batch
    assert introspect.lookup(learn.recorder, "after_batch").via == "method"  # its own comes first
    h = handler_for(Callback(), "after_batch", learn)
    assert (h.doc, h.doc_source, h.via) == ("Model-side after_batch", "handler", "delegated")
    assert h.source.line == inspect.getsourcelines(ModelWithHandler.after_batch)[1]
    undocumented = handler_for(TrainOnlyCallback(), "after_loss", learn)  # the callback's class doc is not the model's
    assert (undocumented.doc, undocumented.doc_source, undocumented.via) == ("(no docstring)", "none", "delegated")
    subclassed = LearnerWithHandler(learn.dls, RegModel(), loss_func=learn.loss_func, path=tmp_path)
    fit = handler_for(Callback(), "after_fit", subclassed)
    assert (fit.doc, fit.via) == ("Learner-side after_fit", "delegated") and fit.source.line > 0


def test_names_getattr_does_not_delegate_are_not_found(tmp_path):
    learn = synth_learner(path=tmp_path)
    model = ModelWithHandler()
    model._after_batch = model.__after_batch__ = model.learn_after = lambda: None
    learn.model = model
    cb = Undocumented()
    learn.add_cb(cb)
    try:
        for name in ("_after_batch", "__after_batch__", "learn_after", "after_batch", "before_fit", "_xtra"):
            expected = hasattr(cb, name)  # fastcore's GetAttr, asked for real
            assert (introspect.lookup(cb, name, delegates(learn)) is not None) == expected, name
            assert (introspect.lookup(cb, name) is not None) == expected, name
            assert introspect.has_handler(cb, name, delegates=delegates(learn), call_base=Callback) == expected, name
        assert not introspect.forwards(cb, "__after_batch__") and not introspect.forwards(cb, "learn")
        assert introspect.lookup(cb, "__after_batch__", delegates(learn)) is None
    finally:
        learn.remove_cb(cb)


def test_xtra_limits_what_getattr_delegates():
    class Target:
        def before_fit(self):
            "target's before_fit"

        def after_fit(self):
            "target's after_fit"

    class OnlyAfterFit(GetAttr):
        _default, _xtra = "target", ["after_fit"]

        def __init__(self):
            self.target = Target()

    obj = OnlyAfterFit()
    assert introspect.lookup(obj, "after_fit").via == "delegated" and hasattr(obj, "after_fit")
    assert introspect.lookup(obj, "before_fit") is None and not hasattr(obj, "before_fit")
    assert introspect.lookup(OnlyAfterFit.__new__(OnlyAfterFit), "before_fit", (Target(),)) is None


def test_class_docs_are_never_the_base_classes():
    assert introspect.class_doc(Undocumented, BASES) == ""
    assert introspect.callback_info(Callback(), BASES).doc == ""
    assert introspect.callback_info(ChildOfTrainOnly(), BASES).doc == TrainOnlyCallback.__doc__
    undocumented = handler_for(Undocumented(), "before_fit")
    assert (undocumented.doc, undocumented.doc_source) == ("(no docstring)", "none")
    clip = handler_for(GradientClip(), "before_step")
    assert (clip.doc, clip.doc_source) == (GradientClip.__doc__, "class")
    assert Callback.__doc__ and Callback.__call__.__doc__
    for generic in (Callback.__doc__, Callback.__call__.__doc__, functools.partial.__doc__, object.__doc__):
        assert inspect.cleandoc(generic) in introspect.generic_docs(BASES)
    assert introspect.own_doc(functools.partial(print)) == ""


def test_callback_info_and_call_overriders():
    info = introspect.callback_info(TrainOnlyCallback(), BASES)
    assert (info.name, info.cls, info.order, info.run_valid, info.overrides_call) == (
        "train_only", "TrainOnlyCallback", 55, False, False)
    assert introspect.callback_info(TrainOnlyCallback(), BASES, order=lambda cb: 7).order == 7
    verbose = VerboseCallback()
    assert introspect.overrides_call(verbose, Callback) and introspect.call_owner(VerboseCallback) is VerboseCallback
    assert introspect.call_owner(TrainOnlyCallback) is Callback and not introspect.overrides_call(TrainOnlyCallback(), Callback)
    assert introspect.call_owner(object) is None
    assert handler_for(verbose, "after_pred").via == "call"
    assert introspect.has_handler(verbose, "any_event", call_base=Callback)
    assert introspect.callback_info(verbose, BASES).overrides_call


def test_event_like_handler_names():
    assert introspect.is_event_like("before_draw") and not introspect.is_event_like("_before_fit")
    assert introspect.handler_names(Callback(before_fit=log_start), BASES) == {"before_fit"}
    assert introspect.handler_names(ChildOfTrainOnly(), BASES) == {"after_batch"}


# -- against reality: a real fit, counted by a spy that does not use loopviz ------------------------------


SPY: Counter = Counter()  # (callback class, event, phase) -> real calls


def _phase(cb: Callback) -> str:
    return "train" if cb.learn.training else "valid"


def _dispatching_callback() -> Callback:
    """The callback whose fastai `Callback.__call__` is on the stack (it called getcallable(cb, ...)(); a tracer's
    timed wrapper may sit between it and the handler)."""
    frame = sys._getframe(2)
    while frame.f_code is not Callback.__call__.__code__:
        frame = frame.f_back
    return frame.f_locals["self"]


class CountingModel(RegModel):
    "after_pred is not a callback's: fastai reaches it through each callback's GetAttr delegation"

    def after_pred(self) -> None:
        "Count the call, for the callback that made it"
        caller = _dispatching_callback()
        SPY[(type(caller).__name__, "after_pred", _phase(caller))] += 1


def count_after_batch(self) -> None:
    "Instance handler: counts itself"
    SPY[(type(self).__name__, "after_batch", _phase(self))] += 1


class Parent(Callback):
    run_valid = False

    def before_epoch(self) -> None:
        SPY[(type(self).__name__, "before_epoch", "")] += 1

    def after_loss(self) -> None:
        SPY[(type(self).__name__, "after_loss", _phase(self))] += 1


class Child(Parent):
    "Inherits both handlers (after_loss only in training: run_valid=False)"


def test_the_trace_and_the_spec_agree_with_a_real_fit(tmp_path):
    SPY.clear()
    learn = synth_learner(path=tmp_path, cbs=[Callback(after_batch=count_after_batch), Child()])
    learn.model = CountingModel()
    ours = {"Callback", "Child"}
    with learn.trace() as t:
        learn.fit(1)
    assert SPY[("Recorder", "after_pred", "train")] > 0 and SPY[("Child", "after_loss", "train")] > 0
    calls = t.by_callback()
    observable = calls[calls["callback"].isin(ours) | (calls["event"] == "after_pred")]
    ran = {(r.callback, r.event, r.phase): r.ran for r in observable.itertuples() if r.ran}
    assert ran == dict(SPY)
    skipped = calls[(calls["callback"] == "Child") & (calls["phase"] == "valid")].set_index("event")["skipped"]
    valid_batches = SPY[("Recorder", "after_pred", "valid")]
    assert valid_batches > 0 and skipped.to_dict() == {"after_pred": valid_batches, "after_loss": valid_batches}
    fired = set(t.firings_df()["event"].astype(str))
    spec = learn.loop_spec()
    listed = {(h.callback.cls, ev.name) for ev in spec.events() if ev.name in fired for h in ev.handlers if h.runs}
    listed_observable = {(cls, name) for cls, name in listed if cls in ours or name == "after_pred"}
    assert listed_observable == {(cls, name) for cls, name, _ in SPY}
    delegated = spec.event("after_pred", "train").handlers
    assert {h.callback.cls for h in delegated} == {cls for cls, name, _ in SPY if name == "after_pred"}
    assert {(h.via, h.doc) for h in delegated} == {("delegated", "Count the call, for the callback that made it")}
