"""The fastai adapter's loop structure checked against what real fastai fits fire."""
from __future__ import annotations

from collections import Counter

import pytest
from fastai.callback import core as fastai_core
from fastai.callback.all import (
    EarlyStoppingCallback, GradientClip, MixedPrecision, ParamScheduler, SaveModelCallback, SchedCos,
)
from fastai.learner import _loop
from fastai.test_utils import synth_learner

from tests.callbacks import CancelBatchAt, TrainOnlyCallback
from tests.recording import EventLog, expected_handlers, expected_sequence, recording


def realistic_cbs():
    return [GradientClip(), SaveModelCallback(fname="best"), EarlyStoppingCallback(patience=5), MixedPrecision()]


def test_all_fastai_events_appear_once_in_the_fit_loop(learn):
    spec = learn.loop_spec()
    names = [e.name for e in spec.events()]
    assert set(names) == set(fastai_core._events)
    assert len(fastai_core._events) == 24
    valid_batch = {"before_batch", "after_pred", "after_loss", "after_cancel_batch", "after_batch"}
    assert Counter(names) == {name: 2 if name in valid_batch else 1 for name in fastai_core._events}
    missing_from_fastai_loop = set(fastai_core._events) - set(_loop)
    assert missing_from_fastai_loop == {"after_create", "after_backward", "after_cancel_backward", "after_cancel_step"}
    assert spec.custom_events == [] and spec.notes == []


def test_fit_sequence_matches_a_real_fit(learn, monkeypatch):
    spec = learn.loop_spec()
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        learn.fit(2)
    n_train, n_valid = len(learn.dls.train), len(learn.dls.valid)
    assert rec.events == expected_sequence(spec, 2, n_train, n_valid)


def test_running_callbacks_match_a_real_fit_one_cycle(tmp_path, monkeypatch):
    learn = synth_learner(path=tmp_path, cbs=realistic_cbs() + [TrainOnlyCallback()])
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec(cbs=[ParamScheduler({"lr": SchedCos(1e-3, 1e-4)})])
        learn.fit_one_cycle(1)
    assert rec.handlers_by_key() == expected_handlers(spec, exclude={"EventLog"})
    valid_batch = spec.event("after_batch", mode="valid")
    assert "TrainEvalCallback" not in [h.callback.cls for h in valid_batch.running]
    assert "ParamScheduler" not in [h.callback.cls for h in valid_batch.running]
    assert "TrainOnlyCallback" not in [h.callback.cls for h in valid_batch.running]
    skipped = {h.callback.cls: h.skipped for h in valid_batch.handlers if not h.runs}
    assert skipped == {"TrainEvalCallback": "run_valid=False", "ParamScheduler": "run_valid=False",
                       "TrainOnlyCallback": "run_valid=False"}


def test_validation_batch_loop_has_no_backward_or_step(learn):
    spec = learn.loop_spec()
    valid = [e.name for e in spec.events() if e.mode == "valid"]
    assert valid == ["before_validate", "before_batch", "after_pred", "after_loss", "after_cancel_batch",
                     "after_batch", "after_cancel_validate", "after_validate"]
    works = [s.name for _, s in spec.phases[1].walk() if s.__class__.__name__ == "Work"]
    assert works == ["draw", "forward", "loss", "backward", "step", "zero_grad", "draw", "forward", "loss", "cleanup"]


@pytest.mark.parametrize("loop, run", [
    ("validate", lambda learn: learn.validate()),
    ("get_preds", lambda learn: learn.get_preds()),
])
def test_validate_and_get_preds_sequences_match_reality(learn, monkeypatch, loop, run):
    spec = learn.loop_spec(loop=loop)
    with recording(learn, monkeypatch) as rec:
        run(learn)
    assert rec.events == expected_sequence(spec, 1, 0, len(learn.dls.valid))
    assert rec.events[:3] == ["before_fit", "before_epoch", "before_validate"]
    assert "before_train" not in rec.events
    handlers = rec.handlers_by_key()
    assert handlers == expected_handlers(spec, exclude={"EventLog"})
    if loop == "get_preds":
        assert "GatherPredsCallback" in handlers[("before_batch", False)]


@pytest.mark.parametrize("loop, run, n_epoch", [
    ("fit_one_cycle", lambda learn: learn.fit_one_cycle(2), 2),
    ("fine_tune", lambda learn: learn.fine_tune(1, freeze_epochs=1), 1),
])
def test_one_cycle_and_fine_tune_match_reality(learn, monkeypatch, loop, run, n_epoch):
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec(loop=loop)
        run(learn)
    assert rec.events == expected_sequence(spec, n_epoch, len(learn.dls.train), len(learn.dls.valid))
    assert rec.handlers_by_key() == expected_handlers(spec, exclude={"EventLog"})
    assert rec.events.count("before_fit") == (2 if loop == "fine_tune" else 1)


def test_lr_find_loop_previews_lr_finder(learn):
    spec = learn.loop_spec(loop="lr_find")
    assert [h.callback.cls for h in spec.event("before_validate").running][-1] == "LRFinder"
    assert "LRFinder" not in [h.callback.cls for h in spec.event("after_batch", mode="valid").running]
    assert not hasattr(learn, "lr_finder")


def cancel_paths(spec):
    return [(p.name, p.cancel) for p in spec.phases[1:] for p in [p, *p.phases()] if p.cancel and p.mode != "valid"]


@pytest.mark.parametrize("phase", ["fit", "epoch", "train", "validate", "batch", "backward", "step"])
def test_every_cancel_path_goes_where_the_spec_says(tmp_path, monkeypatch, phase):
    learn = synth_learner(path=tmp_path)
    spec = learn.loop_spec()
    paths = {p.name: p.cancel for top in spec.phases for p in [top, *top.phases()] if p.cancel}
    cancel = paths[phase]
    exception = getattr(fastai_core, cancel.exception)

    class Raise(CancelBatchAt):
        order = 100  # after Recorder, whose after_epoch needs its own before_epoch to have run

        def _cancel(self):
            raise exception()

    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=Raise(f"before_{phase}"))
    at = rec.events.index(f"before_{phase}")
    assert rec.events[at + 1: at + 3] == [cancel.handler_event, cancel.resumes_at]


def test_mixed_precision_cancel_step_resumes_at_after_step(learn):
    step = learn.loop_spec().phases[1].phases()
    step_phase = next(p for p in step if p.name == "step")
    assert step_phase.cancel.exception == "CancelStepException"
    assert step_phase.cancel.resumes_at == "after_step"
    assert [s.name for s in step_phase.steps] == ["before_step", "step", "after_cancel_step", "after_step"]


def test_after_create_reaches_only_callbacks_the_learner_was_built_with(learn):
    spec = learn.loop_spec(cbs=[EventLog()])
    create = spec.event("after_create")
    assert [h.callback.cls for h in create.running] == ["TrainEvalCallback"]
    assert [(h.callback.cls, h.skipped) for h in create.handlers if not h.runs] == [
        ("EventLog", "added after Learner.__init__")]
