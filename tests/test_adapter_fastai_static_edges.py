"""Edge cases of the static view, each checked against what a real fastai run dispatches (tests/recording.py)."""
from __future__ import annotations

import ast
import inspect
import pickle
from pathlib import Path

import fastai
import pytest
from fastai.callback import core as fastai_core
from fastai.callback.all import (
    EarlyStoppingCallback, FetchPredsCallback, ReduceLROnPlateau, SaveModelCallback, ShowGraphCallback,
)
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.test_utils import synth_learner

from loopviz import LoopvizError
from loopviz.adapters.fastai.creation import record_creations
from loopviz.adapters.fastai.runtime import SWITCH_OFF
from tests.callbacks import TrainOnlyCallback
from tests.recording import expected_handlers, expected_sequence, recording

SWITCHERS = ["SaveModelCallback", "EarlyStoppingCallback", "ReduceLROnPlateau", "ShowGraphCallback"]


class Mine(Callback):
    "A user callback at fastai's default order 0, handling batch and validation events"

    def before_batch(self) -> None:
        "Look at the batch"

    def after_batch(self) -> None:
        "Count the batch"

    def before_validate(self) -> None:
        "Note that validation starts"


class AtSixty(Mine):
    "Mine, at ParamScheduler's and LRFinder's order"
    order = 60


class ValidOnly(Mine):
    "Mine, kept out of training batches"
    run_train = False


class Created(Callback):
    "Handles after_create"

    def after_create(self) -> None:
        "Note that the learner exists"


class AddedLater(Created):
    "Handles after_create, but is added with add_cb"


def running(spec, name, mode=None):
    return [h.callback.cls for h in spec.event(name, mode).running]


def real_keys(rec) -> dict:
    """What the real run dispatched, cancel events left out (the spec lists them apart, as cancel paths)."""
    return {k: v for k, v in rec.handlers_by_key().items() if not k[0].startswith("after_cancel")}


def switching_learner(tmp_path):
    return synth_learner(path=tmp_path, cbs=[SaveModelCallback(), EarlyStoppingCallback(), ReduceLROnPlateau(),
                                             ShowGraphCallback()])


# S1: callbacks that set self.run=False in before_fit under get_preds and lr_find


@pytest.mark.parametrize("loop, run, attr", [
    ("get_preds", lambda learn: learn.get_preds(), "learn.gather_preds exists"),
    ("lr_find", lambda learn: learn.lr_find(num_it=3, show_plot=False), "learn.lr_finder exists"),
])
def test_callbacks_that_switch_themselves_off_are_skipped_after_before_fit(tmp_path, monkeypatch, loop, run, attr):
    learn = switching_learner(tmp_path)
    with recording(learn, monkeypatch) as rec, learn.no_bar():
        spec = learn.loop_spec(loop=loop)
        run(learn)
    real = real_keys(rec)
    expected = expected_handlers(spec, exclude={"EventLog"})
    assert real == {key: expected[key] for key in real}
    assert set(SWITCHERS) <= set(real[("before_fit", None)])
    for name in ["after_epoch", "after_fit"]:
        skipped = {h.callback.cls: h.skipped for h in spec.event(name).handlers if h.callback.cls in SWITCHERS}
        assert skipped and all(reason.startswith(f"switches itself off in before_fit: {attr}")
                               for reason in skipped.values())
    verbose = " ".join(str(learn.show_training_loop(loop=loop, verbose=True)).split())
    assert f"skipped here: switches itself off in before_fit: {attr}" in verbose


def test_the_same_callbacks_run_in_a_plain_fit(tmp_path, monkeypatch):
    learn = switching_learner(tmp_path)
    learn.remove_cb(ShowGraphCallback)  # it needs a progress bar in fit
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec()
        learn.fit(1)
    assert rec.handlers_by_key() == expected_handlers(spec, exclude={"EventLog"})
    assert {"SaveModelCallback", "EarlyStoppingCallback", "ReduceLROnPlateau"} <= set(running(spec, "after_epoch"))


def _run_switches(path: Path) -> set[str]:
    """`module.Class` of every before_fit in `path` that assigns self.run (a class method or a @patch'ed one)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {fn: node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for fn in node.body}
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "before_fit"):
            continue
        targets = [t for node in ast.walk(fn) if isinstance(node, ast.Assign) for t in node.targets]
        if any(isinstance(t, ast.Attribute) and t.attr == "run" for t in targets):
            annotation = fn.args.args[0].annotation
            owner = classes.get(fn) or (annotation.id if isinstance(annotation, ast.Name) else "?")
            found.add(f"fastai.callback.{path.stem}.{owner}")
    return found


def test_the_switch_table_covers_every_before_fit_in_fastai_that_sets_run():
    sources = sorted((Path(fastai.__file__).parent / "callback").glob("*.py"))
    switches = set().union(*(_run_switches(path) for path in sources))
    assert "fastai.callback.tracker.TrackerCallback" in switches
    assert switches == set(SWITCH_OFF)


# S2: callbacks a loop adds, in fastai's order relative to the user's


@pytest.mark.parametrize("loop, run", [
    ("get_preds", lambda learn, cbs: learn.get_preds(cbs=cbs)),
    ("fit_one_cycle", lambda learn, cbs: learn.fit_one_cycle(1, cbs=cbs)),
])
def test_loop_callbacks_and_user_callbacks_run_in_fastais_order(learn, monkeypatch, loop, run):
    cb = Mine() if loop == "get_preds" else AtSixty()
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec(loop=loop, cbs=[cb])
        run(learn, [cb])
    assert rec.handlers_by_key() == expected_handlers(spec, exclude={"EventLog"})
    batch = running(spec, "before_batch", "valid" if loop == "get_preds" else "train")
    first, second = ("Mine", "GatherPredsCallback") if loop == "get_preds" else ("ParamScheduler", "AtSixty")
    assert batch.index(first) < batch.index(second)


def test_lr_find_runs_the_learners_callbacks_before_lr_finder_on_equal_order(learn, monkeypatch):
    cb = AtSixty()
    with recording(learn, monkeypatch) as rec, learn.no_bar():
        spec = learn.loop_spec(loop="lr_find", cbs=[cb])
        learn.add_cb(cb)
        learn.lr_find(num_it=3, show_plot=False)
    real = real_keys(rec)
    assert real == {key: expected_handlers(spec, exclude={"EventLog"})[key] for key in real}
    assert real[("before_batch", True)][-2:] == ["AtSixty", "LRFinder"]


# S3: after_create reaches only the callbacks Learner.__init__ was given


def _after_create_spy(monkeypatch) -> list[str]:
    """Callback classes whose after_create handler fastai runs while the spy is installed."""
    seen: list[str] = []
    original = fastai_core.getcallable

    def spy(obj, attr):
        if attr == "after_create" and isinstance(obj, Callback) and hasattr(obj, attr):
            seen.append(type(obj).__name__)
        return original(obj, attr)

    monkeypatch.setattr(fastai_core, "getcallable", spy)
    return seen


def test_a_callback_added_after_init_is_skipped_at_after_create(tmp_path, monkeypatch):
    seen = _after_create_spy(monkeypatch)
    learn = synth_learner(path=tmp_path, cbs=[Created()])
    monkeypatch.undo()
    learn.add_cb(AddedLater())
    spec = learn.loop_spec()
    assert running(spec, "after_create") == seen == ["TrainEvalCallback", "Created"]
    assert [(h.callback.cls, h.skipped) for h in spec.event("after_create").handlers if not h.runs] == [
        ("AddedLater", "added after Learner.__init__")]
    text = str(learn.show_training_loop(verbose=True))
    assert "AddedLater (order 0)  skipped here: added after Learner.__init__" in text
    assert "cannot tell which callbacks" not in text


def test_a_learner_loopviz_did_not_see_created_lists_every_callback_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(Learner, "__init__", Learner.__init__.__wrapped__)  # as if made before loopviz patched fastai
    learn = synth_learner(path=tmp_path, cbs=[Created()])
    monkeypatch.undo()
    learn.add_cb(AddedLater())
    spec = learn.loop_spec()
    assert running(spec, "after_create") == ["TrainEvalCallback", "Created", "AddedLater"]
    text = " ".join(str(learn.show_training_loop(verbose=True)).split())
    assert "loopviz cannot tell which callbacks this learner was built with" in text
    assert "cannot tell" not in str(learn.show_training_loop())


def test_the_init_wrapper_is_installed_once_keeps_fastais_signature_and_stores_nothing_on_the_learner(learn):
    wrapped = Learner.__init__
    record_creations()
    assert Learner.__init__ is wrapped
    assert inspect.signature(Learner.__init__) == inspect.signature(Learner.__init__.__wrapped__)
    assert Learner.__init__.__qualname__ == "Learner.__init__"
    assert b"loopviz" not in pickle.dumps(learn)


# S5: fit(start_epoch=n) adds SkipToEpoch


def test_start_epoch_previews_skip_to_epoch(learn, monkeypatch):
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec(start_epoch=1)
        learn.fit(2, start_epoch=1)
    assert real_keys(rec) == expected_handlers(spec, exclude={"EventLog"})
    assert running(spec, "before_epoch")[-1] == "SkipToEpoch"
    epoch = next(p for p in spec.phases[1].phases() if p.name == "epoch")
    first = rec.events.index("before_epoch")
    assert rec.events[first:first + 3] == ["before_epoch", epoch.cancel.handler_event, epoch.cancel.resumes_at]
    assert any("SkipToEpoch" in note and "epoch 0," in note for note in spec.notes)


def test_start_epoch_in_fit_one_cycle_follows_param_scheduler_and_the_user_callbacks(learn, monkeypatch):
    cb = AtSixty()
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec(loop="fit_one_cycle", cbs=[cb], start_epoch=1)
        learn.fit_one_cycle(2, cbs=[cb], start_epoch=1)
    assert real_keys(rec) == expected_handlers(spec, exclude={"EventLog"})
    assert [c.cls for c in spec.callbacks if c.order >= 60] == ["ParamScheduler", "AtSixty", "SkipToEpoch"]


@pytest.mark.parametrize("loop, start_epoch, message", [
    ("fit", -1, "start_epoch must be an int >= 0"),
    ("fit", 1.5, "start_epoch must be an int >= 0"),
    ("fit", True, "start_epoch must be an int >= 0"),
    ("get_preds", 1, "start_epoch is an option of fastai's fit loops .*; loop='get_preds' has no such option"),
    ("lr_find", 2, "loop='lr_find' has no such option"),
])
def test_bad_start_epoch_gets_a_clear_error(learn, loop, start_epoch, message):
    with pytest.raises(LoopvizError, match=message):
        learn.show_training_loop(loop=loop, start_epoch=start_epoch)


# S6: no TrainEvalCallback, so learn.training stays False


def test_without_train_eval_the_training_batches_run_as_validation(tmp_path, monkeypatch):
    learn = synth_learner(path=tmp_path, default_cbs=False, cbs=[TrainOnlyCallback(), ValidOnly()])
    spec = learn.loop_spec()
    with recording(learn, monkeypatch) as rec:
        learn.fit(1)
    assert rec.events == expected_sequence(spec, 1, len(learn.dls.train), len(learn.dls.valid))
    assert "before_backward" not in rec.events and "before_step" not in rec.events
    as_fastai_keys = {}
    for (name, training), cbs in expected_handlers(spec, exclude=set()).items():
        key = (name, False if training is not None else None)
        assert as_fastai_keys.setdefault(key, cbs) == cbs  # train and valid batches filter alike
    assert rec.handlers_by_key() == as_fastai_keys
    assert running(spec, "after_batch", "valid") == ["ValidOnly"]
    skipped = {h.callback.cls: h.skipped for h in spec.event("after_batch", "valid").handlers if not h.runs}
    assert skipped == {"TrainOnlyCallback": "run_valid=False (learn.training is False: no TrainEvalCallback)"}
    assert learn.model.training  # nothing switched the model's mode either
    assert any("No TrainEvalCallback runs" in note and "model stays in train mode" in note for note in spec.notes)


def test_with_train_eval_nothing_is_noted(learn):
    assert learn.loop_spec().notes == []
    assert learn.loop_spec(loop="get_preds").notes == []


# Nested loops a static view cannot show


def test_fetch_preds_gets_a_note_about_its_nested_get_preds(learn, monkeypatch):
    spec = learn.loop_spec(cbs=[FetchPredsCallback()])
    with recording(learn, monkeypatch) as rec, learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=FetchPredsCallback())
    outer = rec.events.index("after_validate")
    assert rec.events[outer + 1] == "before_validate"  # the nested get_preds(inner=True), inside after_validate
    assert rec.events.count("before_validate") == 2 and rec.events.count("before_fit") == 1
    assert any(note.startswith("FetchPredsCallback runs a nested learn.get_preds(inner=True)") for note in spec.notes)
    assert "Note: FetchPredsCallback runs a nested" in str(learn.show_training_loop(cbs=[FetchPredsCallback()]))


def test_the_verbose_view_says_run_can_change_at_run_time(learn):
    remark = "not what other code decides at run time"
    assert remark in " ".join(str(learn.show_training_loop(verbose=True)).split())
    assert remark not in str(learn.show_training_loop())

