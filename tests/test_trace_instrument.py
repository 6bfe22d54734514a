"""The instrumentation kernel: patches on classes, modules and instances and settings are put back exactly; a value
other code puts over ours stays (ours inert inside it, taken back into use by the next trace); the garbage collector
ending a trace inside a guarded block waits for the block."""
from __future__ import annotations

import types
import warnings

import pytest
from fastai.learner import Learner
from fastai.test_utils import synth_learner

from loopviz.trace import instrument
from loopviz.trace.instrument import MISSING

from tests.spy import spy


class Base:
    def hook(self) -> str:
        return "base"


class Child(Base):
    pass


class Guarded:
    """An object whose `__setattr__` refuses everything: instance patches go past it (as past nn.Module's)."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AssertionError("instance patches must not go through __setattr__")


def wrap(tag: str):
    def make(original):
        def wrapper(*args):
            return f"{tag}({original(*args)})"

        wrapper.__wrapped__ = original
        return wrapper

    return make


def test_a_class_patch_over_an_inherited_attribute_is_deleted_at_restore():
    patch = instrument.install(Child, "hook", wrap("ours"))
    assert Child().hook() == "ours(base)" and patch.before is MISSING
    instrument.restore(patch)
    assert "hook" not in vars(Child) and Child().hook() == "base"
    assert instrument.installed() == []


def test_a_class_patch_over_an_own_attribute_puts_the_same_object_back():
    own = Base.__dict__["hook"]
    patch = instrument.install(Base, "hook", wrap("ours"))
    instrument.restore(patch)
    instrument.restore(patch)  # a second restore changes nothing
    assert Base.__dict__["hook"] is own


def test_an_instance_patch_goes_into_its_dict_and_leaves_none_behind():
    obj = Guarded()
    object.__setattr__(obj, "kept", 1)
    patches = instrument.PatchSet()
    patches.put(obj, "hook", lambda: "ours")
    patches.put(obj, "kept", 2)
    assert obj.hook() == "ours" and obj.kept == 2 and len(instrument.installed()) == 2
    patches.restore()
    assert vars(obj) == {"kept": 1} and instrument.installed() == []


def test_patches_stacked_on_one_attribute_restore_in_either_order():
    module = types.ModuleType("fake")
    module.f = lambda: "f"
    original = module.f
    first = instrument.install(module, "f", wrap("a"))
    second = instrument.install(module, "f", wrap("b"))
    assert module.f() == "b(a(f))"
    instrument.restore(first)  # the one underneath first: the other puts back what the first found
    assert module.f() == "b(a(f))"
    instrument.restore(second)
    assert module.f is original and instrument.installed() == [] and instrument.stranded() == []


def test_a_setting_is_put_back_unless_other_code_changed_it():
    state = {"mode": 0}
    get, set_ = (lambda: state["mode"]), (lambda value: state.update(mode=value))
    patch = instrument.install_setting("mode", get, set_, 1)
    assert state["mode"] == 1
    instrument.restore(patch)
    assert state["mode"] == 0
    patch = instrument.install_setting("mode", get, set_, 1)
    state["mode"] = 2  # the user's choice, made while ours was in force
    instrument.restore(patch)
    assert state["mode"] == 2 and instrument.installed() == []


def test_a_foreign_wrapper_over_ours_stays_and_ours_is_taken_back_by_the_next_install():
    module = types.ModuleType("fake")
    module.f = original = lambda: "f"
    patch = instrument.install(module, "f", wrap("ours"))
    module.f = foreign = wrap("theirs")(module.f)  # another library patches the same attribute meanwhile
    with pytest.warns(RuntimeWarning, match="fake.f was replaced by other code"):
        instrument.restore(patch)
    assert module.f is foreign and [p.wrapper for p in instrument.stranded()] == [patch.wrapper]
    again = instrument.install(module, "f", wrap("ours"))
    assert again is patch and module.f() == "theirs(ours(f))"  # no second wrapper of ours under theirs
    module.f = foreign.__wrapped__  # the other library puts back what it found: ours
    instrument.restore(again)
    assert module.f is original and instrument.stranded() == [] and instrument.installed() == []


def test_a_foreign_value_over_an_instance_patch_stays():
    obj = Child()
    patch = instrument.put(obj, "hook", lambda: "ours")
    obj.hook = theirs = lambda: "theirs"
    with pytest.warns(RuntimeWarning):
        instrument.restore(patch)
    assert obj.hook is theirs and instrument.stranded() == []


def test_an_action_asked_for_inside_a_guarded_block_runs_when_the_outermost_block_ends():
    ran: list[str] = []
    with instrument.guarded():
        with instrument.guarded():
            assert instrument.run_or_defer(lambda: ran.append("ended"))
        assert ran == []
    assert ran == ["ended"]
    assert not instrument.run_or_defer(lambda: ran.append("now")) and ran == ["ended", "now"]


def test_a_user_wrapper_over_the_fastai_dispatch_during_a_trace_is_kept_and_fastai_keeps_working(tmp_path):
    """The trace's `_call_one` is on the learner instance, not the class: a user's class-level wrapper installed while
    it records is left alone (no warning: nothing of ours is replaced), and the traced learner calls through it from
    the next loop on, each firing recorded once."""
    learn = synth_learner(path=tmp_path)
    pristine = Learner.__dict__["_call_one"]
    seen: list[str] = []

    def users(original):
        def _call_one(self, event_name):
            seen.append(event_name)
            return original(self, event_name)

        _call_one.__wrapped__ = original
        return _call_one

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with learn.trace() as t:
            learn.fit(1)
            Learner._call_one = theirs = users(Learner._call_one)
            with spy(learn) as fired:
                learn.fit(1)
    try:
        assert Learner._call_one is theirs  # not clobbered
        assert "before_fit" in seen and len(seen) == len(fired.firings)  # the traced fit went through theirs
        assert t.n_firings == 2 * len(fired.firings)  # both fits recorded, each firing once
        seen.clear()
        learn.fit(1)  # untraced: theirs, then fastai's
        assert "before_fit" in seen
    finally:
        Learner._call_one = theirs.__wrapped__  # the user puts back what they found
    assert Learner.__dict__["_call_one"] is pristine and "_call_one" not in vars(learn)
    assert instrument.installed() == [] and instrument.stranded() == []


class CancelThis(Exception):
    pass


def test_one_outcome_classifier_given_the_adapters_cancel_exceptions():
    from fastai.callback.core import CancelBatchException

    from loopviz.trace.layout import CANCELLED, ERROR

    fastai_cancels = (CancelBatchException,)
    assert instrument.outcome(CancelBatchException(), fastai_cancels) == CANCELLED
    assert instrument.outcome(KeyError(), fastai_cancels) == ERROR
    assert instrument.outcome(CancelThis(), ()) == ERROR  # Lightning's and Hugging Face's loops stop by flags
    assert instrument.outcome(CancelThis(), None) == CANCELLED  # a user's own Cancel... class (miniai)
    assert instrument.outcome(KeyboardInterrupt(), None) == ERROR


@pytest.mark.parametrize("order", ["first-first", "last-first"])
@pytest.mark.parametrize("own", [False, True])
def test_instance_patches_of_two_tracers_restore_in_either_order(order: str, own: bool):
    obj = Base()
    if own:
        obj.__dict__["hook"] = own_hook = lambda: "own"
    before = dict(vars(obj))
    sets = [instrument.PatchSet(), instrument.PatchSet()]
    sets[0].install(obj, "hook", wrap("a"))
    sets[1].install(obj, "hook", wrap("b"))
    assert obj.hook() == ("b(a(own))" if own else "b(a(base))")
    for patches in (sets if order == "first-first" else sets[::-1]):
        patches.restore()
    assert vars(obj) == before and instrument.installed() == []
    if own:
        assert vars(obj)["hook"] is own_hook


def test_an_instance_patch_never_restored_dies_with_its_instance():
    import gc
    import weakref

    obj = Base()
    patches = instrument.PatchSet()
    patches.install(obj, "hook", wrap("ours"))  # the wrapper holds the bound method, hence the instance
    assert obj.hook() == "ours(base)" and len(instrument.installed()) == 1
    gone = weakref.ref(obj)
    del obj
    gc.collect()
    assert gone() is None, "the patch kept its instance alive"
    assert instrument.installed() == []
    patches.restore()  # nothing left to put back
    assert instrument.installed() == []
