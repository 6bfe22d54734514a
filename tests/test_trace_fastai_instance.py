"""A tracer that patches fastai callback instances (issue 25) must be invisible to fastai and lose nothing.

Checked against fastai itself: an untraced twin of each fit (what fastai leaves behind and answers on its own), the
spy of fastai's dispatch (tests/spy.py) and counters kept by the handlers themselves; never against loopviz's code.
1. a traced fit leaves every callback's `__dict__` and the learner's as the untraced twin leaves them (instance
   handlers by identity), whether the fit ends, is cancelled, raises or is interrupted;
2. mid-fit, fastai's questions get the untraced answers: hasattr, ordered_cbs, getcallable, pickling and
   deep-copying a callback, `learn.export()`;
3. a handler that makes fastai call the same callback for the same event again (get_preds from after_epoch,
   validate from before_validate) has every call counted;
4. handlers set or turned into noop mid-fit, and callbacks added or removed mid-fit, are counted as fastai ran them;
5. a callback attached to two traced learners is counted by the trace of the learner that called it;
6. calls skipped by run flags are counted with fastai's reason, after_fit's reset of `run` included;
7. a class that overrides `__call__` is timed once per call.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import pickle
import types
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from fastai.callback.core import Callback, CancelFitException, _events, _inner_loop
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner, load_learner
from fastai.test_utils import VerboseCallback, synth_learner
from fastcore.basics import getcallable, noop

import loopviz
from tests.spy import Spy, spy
from tests.test_truth_matrix import (
    Canceller, ChangesHandlers, OffInBeforeFit, RunFalse, RunTrainFalse, RunValidFalse, count_problems,
)

LOOPVIZ_DIR = Path(loopviz.__file__).resolve().parent
EVENTS = list(_events)
SKIPS = ("skipped", "skipped_in_train", "skipped_in_valid")


# -- helpers -------------------------------------------------------------------------------------------


def small_learner(path: Path, cbs: list | None = None) -> Learner:
    """synth_learner with 2 training batches and 1 validation batch, without ProgressCallback."""
    learn = synth_learner(n_trn=2, n_val=1, path=path, cbs=cbs or [])
    learn.remove_cb(ProgressCallback)
    return learn


def fit(learn: Learner, n: int = 1, **kwargs: Any) -> None:
    """learn.fit without the logger's output."""
    with learn.no_logging():
        learn.fit(n, **kwargs)


def _of_loopviz(value: Any) -> bool:
    """True for a wrapper marked as loopviz's, an instance of a loopviz class, or a callable whose module or code is
    loopviz's (code is checked too: functools.wraps copies the wrapped function's `__module__`)."""
    try:
        if getattr(value, "__loopviz_wrapper__", False) is True:
            return True
    except Exception:  # noqa: BLE001  (an object whose __getattr__ raises something else is not a wrapper)
        pass
    if type(value).__module__.split(".")[0] == "loopviz":
        return True
    if callable(value) and str(getattr(value, "__module__", "") or "").split(".")[0] == "loopviz":
        return True
    code = value.__code__ if isinstance(value, types.FunctionType) else None
    return code is not None and Path(code.co_filename).resolve().is_relative_to(LOOPVIZ_DIR)


def _unwrapped(value: Any) -> Any:
    """What a bound method, a partial or a functools.wraps wrapper calls (None for anything else)."""
    if isinstance(value, types.MethodType):
        return value.__func__
    if isinstance(value, functools.partial):
        return value.func
    if isinstance(value, types.FunctionType):
        return vars(value).get("__wrapped__")
    return None


def loopviz_made(value: Any) -> bool:
    """True when the value is, or wraps, something of loopviz's (followed through bound methods, partials and
    `__wrapped__`)."""
    for _ in range(16):
        if value is None:
            return False
        if _of_loopviz(value):
            return True
        value = _unwrapped(value)
    return True


def loopviz_values(attrs: dict[str, Any]) -> list[str]:
    """Names of the values in a `__dict__` that are loopviz's."""
    return [name for name, value in attrs.items() if loopviz_made(value)]


def describe(value: Any) -> str:
    """What a value is, comparable across two runs: its type, and for a function or method the code it runs."""
    func = value.__func__ if isinstance(value, types.MethodType) else value
    func = func.func if isinstance(func, functools.partial) else func
    code = getattr(func, "__code__", None) if isinstance(func, types.FunctionType) else None
    if code is None:
        return type(value).__qualname__
    return f"{type(value).__qualname__} {code.co_name} {Path(code.co_filename).name}:{code.co_firstlineno}"


def shape(attrs: dict[str, Any]) -> dict[str, str]:
    """Every value of a `__dict__` described (see `describe`)."""
    return {name: describe(value) for name, value in attrs.items()}


def differences(untraced: dict, traced: dict, limit: int = 12) -> str:
    """The keys whose values differ between two answers, with both values, one a line."""
    keys = [k for k in dict.fromkeys([*untraced, *traced]) if untraced.get(k, "<absent>") != traced.get(k, "<absent>")]
    lines = [f"{k}: untraced {untraced.get(k, '<absent>')!r}, traced {traced.get(k, '<absent>')!r}" for k in keys[:limit]]
    return "\n  ".join(lines) + (f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else "")


def outcome(action: Callable[[], Any]) -> tuple[str, Any]:
    """('ok', result) or (exception type name, None)."""
    try:
        return "ok", action()
    except Exception as error:  # noqa: BLE001  (what fastai or pickle raise is compared, not handled)
        return type(error).__name__, None


def trace_counts(t: Any, callback: str, event: str) -> tuple[int, int]:
    """The trace's (calls, ran+cancelled+errors) of one callback class at one event, every phase together."""
    rows = t.by_callback()
    rows = rows[(rows["callback"] == callback) & (rows["event"] == event)]
    return int(rows["calls"].sum()), int((rows["ran"] + rows["cancelled"] + rows["errors"]).sum())


def spy_counts(s: Spy, callback: str, event: str) -> tuple[int, int]:
    """The spy's (calls with a handler, runs) of one callback class at one event, every phase together."""
    found = [n for (cls, ev, _), n in s.callback_counts().items() if cls == callback and ev == event]
    return sum(n["handler_calls"] for n in found), sum(n["ran"] for n in found)


def assert_counts_match(t: Any, s: Spy) -> None:
    """Every per-callback count of the trace equals the spy's (the truth matrix's check)."""
    problems = count_problems(t, s)
    assert not problems, f"{len(problems)} count(s) differ from fastai's:\n  - " + "\n  - ".join(problems)


# -- handlers and callbacks ----------------------------------------------------------------------------


def on_loss(self: Callback) -> None:
    "A handler passed as a keyword argument: Callback(after_loss=on_loss) binds it to the instance"


def on_pred() -> None:
    "A handler set on an instance with setattr"


def same(value: Any) -> Any:
    """The value itself (a picklable stand-in for DataLoaders.new_empty)."""
    return value


class InstanceHandler(Callback):
    "Its after_pred handler is set on the instance (module-level, so pickle finds it by name)"
    order = 40


class NoopHandler(Callback):
    "Its before_step is fastcore's noop: it has the attribute, and getcallable gives noop"
    order = 41


class Counting(Callback):
    "Counts its own after_batch calls"
    order = 42

    def __init__(self):
        self.n = 0

    def after_batch(self) -> None:
        self.n += 1


def handler_callbacks() -> list[Callback]:
    """Callbacks whose handlers sit on the instance, on the class, or are noop."""
    inst = InstanceHandler()
    inst.after_pred = on_pred
    noop_cb = NoopHandler()
    noop_cb.before_step = noop
    return [inst, noop_cb, Counting()]


# -- 1. the learner and its callbacks are left as fastai leaves them ---------------------------------------

# how the fit ends: what Canceller raises in the first training after_batch (None: nothing), and what escapes the fit
# (fastai catches CancelFitException; its modify_exception needs the error to have an argument)
ENDINGS: dict[str, tuple[Callable[[], BaseException] | None, type | None]] = {
    "normal": (None, None),
    "cancelled": (CancelFitException, None),
    "error": (functools.partial(ValueError, "boom"), ValueError),
    "interrupt": (KeyboardInterrupt, KeyboardInterrupt),
}
HANDLER_TYPES = (types.FunctionType, types.MethodType, functools.partial)


def state_of(learn: Learner, cbs: list[Callback]) -> dict[str, Any]:
    """The learner's and the callbacks' `__dict__` (shallow copies, values kept by identity), and learn.cbs."""
    return {"learn": dict(vars(learn)), "cbs": [dict(vars(cb)) for cb in cbs], "attached": list(learn.cbs)}


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per object: its keys after, and the keys whose value is no longer the same object."""

    def delta(b: dict[str, Any], a: dict[str, Any]) -> tuple[list[str], list[str]]:
        return sorted(a), sorted(k for k in a if k in b and a[k] is not b[k])

    out = {"learn": delta(before["learn"], after["learn"])}
    for i, (b, a) in enumerate(zip(before["cbs"], after["cbs"])):
        out[f"cb{i}"] = delta(b, a)
    out["attached"] = [before["attached"].index(cb) if cb in before["attached"] else "new" for cb in after["attached"]]
    return out


def ending_fit(path: Path, ending: str, traced: bool) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run the fit, traced or not: what changed in the learner and its callbacks, the instance handlers that are no
    longer the objects set before the fit, and the loopviz values left in any `__dict__`."""
    funcs_kwargs = Callback(after_loss=on_loss)
    attached = [*handler_callbacks(), funcs_kwargs]
    learn = small_learner(path, attached)
    raised, error = ENDINGS[ending]
    canceller = Canceller(raised or ValueError, "after_batch", "train", times=0 if raised is None else 1)
    cbs = [*learn.cbs, canceller]
    before = state_of(learn, cbs)
    handlers = {i: {k: v for k, v in d.items() if isinstance(v, HANDLER_TYPES)} for i, d in enumerate(before["cbs"])}
    try:
        if traced:
            with learn.trace():
                fit(learn, cbs=canceller)
        else:
            fit(learn, cbs=canceller)
    except BaseException as e:
        if error is None or not isinstance(e, error):
            raise
    else:
        assert error is None, f"the {ending} fit did not raise {error}"
    after = state_of(learn, cbs)
    lost = [f"{type(cbs[i]).__name__}.{k}" for i, found in handlers.items() for k, v in found.items()
            if vars(cbs[i]).get(k) is not v]
    left = [f"learn.{k}" for k in loopviz_values(vars(learn))]
    left += [f"{type(cb).__name__}.{k}" for cb in cbs for k in loopviz_values(vars(cb))]
    return what_changed(before, after), lost, left


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_traced_fit_leaves_every_dict_as_fastai_leaves_it(tmp_path, ending):
    untraced, _, _ = ending_fit(tmp_path / "untraced", ending, traced=False)
    traced, lost, left = ending_fit(tmp_path / "traced", ending, traced=True)
    assert not left, f"after a {ending} fit, loopviz objects are left in: {left}"
    assert not lost, f"after a {ending} fit, these instance handlers are no longer the objects set before: {lost}"
    assert traced == untraced, (f"after a {ending} fit, the learner or a callback (cb<i>: learn.cbs order, then the "
                                f"fit's callback) differs from the untraced fit's: (keys after, keys rebound)\n  "
                                + differences(untraced, traced))


# -- 2. mid-fit, fastai gets its untraced answers -------------------------------------------------------------


class Sink(dict):
    "Where Probe writes its answers: shared, never copied (a deep copy or a pickle of the learner leaves it out)"

    def __deepcopy__(self, memo: dict) -> Sink:
        return self

    def __reduce__(self) -> tuple:
        return Sink, ()


def copied_graph(cb: Callback) -> tuple[dict[str, Any], list[str]]:
    """What a copy of a callback holds (and, through its learner, every callback): the learner's keys, each
    callback's `__dict__` shape; and the loopviz objects in them."""
    learn = cb.learn
    found: dict[str, Any] = {"learner keys": sorted(vars(learn))}
    found.update({f"{type(c).__name__} dict": shape(vars(c)) for c in learn.cbs})
    found["instance handler is on_pred"] = [vars(c).get("after_pred") is on_pred for c in learn.cbs
                                            if isinstance(c, InstanceHandler)]
    left = [f"learn.{k}" for k in loopviz_values(vars(learn))]
    left += [f"{type(c).__name__}.{k}" for c in learn.cbs for k in loopviz_values(vars(c))]
    return found, left


class Probe(Callback):
    "Asks fastai's questions about every callback at several events, and exports the learner at after_fit"
    order = 90

    def __init__(self, sink: Sink, export_to: Path):
        self.sink, self.export_to = sink, export_to

    def ask(self, at: str) -> None:
        learn = self.learn
        labels = {id(cb): type(cb).__name__ for cb in learn.cbs}
        for cb in learn.cbs:
            for event in EVENTS:
                self.sink[(at, "hasattr", labels[id(cb)], event)] = hasattr(cb, event)
                self.sink[(at, "getcallable is noop", labels[id(cb)], event)] = getcallable(cb, event) is noop
            self.ask_own_copy(at, labels[id(cb)], cb)
        for event in EVENTS:
            self.sink[(at, "ordered_cbs", event)] = [labels[id(cb)] for cb in learn.ordered_cbs(event)]
        counting = next(cb for cb in learn.cbs if isinstance(cb, Counting))
        # pickling or deep-copying a callback takes its learner, and so every callback, along
        for how, make in (("pickle.dumps", lambda: pickle.loads(pickle.dumps(counting))),
                          ("deepcopy", lambda: copy.deepcopy(counting))):
            status, copied = outcome(make)
            self.sink[(at, how)] = status
            if copied is not None:
                self.sink[(at, how, "holds")], left = copied_graph(copied)
                self.sink[(at, how, "loopviz objects")] = left

    def ask_own_copy(self, at: str, name: str, cb: Callback) -> None:
        """A deep copy of the callback alone (its learner shared): its dict, and whose state its handler changes."""
        twin = copy.deepcopy(cb, {id(self.learn): self.learn})
        self.sink[(at, "deepcopy, learner shared", name)] = shape(vars(twin))
        self.sink[(at, "deepcopy, learner shared: loopviz objects", name)] = loopviz_values(vars(twin))
        if isinstance(cb, Counting):
            before = cb.n
            twin.after_batch()
            self.sink[(at, "copy's handler: (copy's count, original's count) changes")] = (twin.n - before,
                                                                                          cb.n - before)

    def before_fit(self) -> None:
        self.ask("before_fit")

    def before_epoch(self) -> None:
        self.ask("before_epoch")

    def after_batch(self) -> None:
        if self.training and self.iter == 0:
            self.ask("after_batch train")

    def before_validate(self) -> None:
        self.ask("before_validate")

    def after_fit(self) -> None:
        self.ask("after_fit")
        self.learn.export(self.export_to / "during.pkl")


def loaded_export(path: Path) -> tuple[dict[str, Any], list[str]]:
    """What a learner exported to `path` holds once loaded (its keys, its callbacks' dicts), and loopviz objects in it."""
    raw = path.read_bytes()
    loaded = load_learner(path)
    found = {"keys": sorted(vars(loaded)), **{f"cb {type(cb).__name__}": shape(vars(cb)) for cb in loaded.cbs}}
    left = [f"learn.{k}" for k in loopviz_values(vars(loaded))]
    left += [f"{type(cb).__name__}.{k}" for cb in loaded.cbs for k in loopviz_values(vars(cb))]
    if b"loopviz" in raw:
        left.append(f"the bytes of {path.name} name loopviz")
    return found, left


def probed_fit(path: Path, traced: bool) -> Sink:
    """Fastai's answers, asked mid-fit and of the exports, with the loopviz objects found in any copy."""
    path.mkdir(parents=True)
    learn = small_learner(path, handler_callbacks())
    learn.dls.new_empty = functools.partial(same, learn.dls)  # synth_learner's data cannot make the empty copy
    answers = Sink()
    probe = Probe(answers, path)
    if traced:
        with learn.trace():
            fit(learn, cbs=probe)
            learn.export(path / "after.pkl")
    else:
        fit(learn, cbs=probe)
        learn.export(path / "after.pkl")
    for name in ("during.pkl", "after.pkl"):
        answers[("export", name)], answers[("export", name, "loopviz objects")] = loaded_export(path / name)
    return answers


def test_mid_fit_fastai_sees_what_it_sees_untraced(tmp_path):
    untraced = probed_fit(tmp_path / "untraced", traced=False)
    traced = probed_fit(tmp_path / "traced", traced=True)
    asked_at = {key[0] for key in untraced}
    assert asked_at == {"before_fit", "before_epoch", "after_batch train", "before_validate", "after_fit", "export"}, (
        f"the probe did not ask at every event: {sorted(asked_at)}")
    assert untraced[("after_batch train", "copy's handler: (copy's count, original's count) changes")] == (1, 0)
    assert untraced[("before_epoch", "pickle.dumps")] == "ok" and untraced[("before_epoch", "deepcopy")] == "ok"
    left = {key: found for key, found in traced.items() if "loopviz objects" in key and found}
    assert not left, f"loopviz objects in what a copy, a pickle or an export of the traced learner holds: {left}"
    assert traced == untraced, ("mid-fit answers to fastai's questions differ from the untraced fit's "
                                "((event, question, callback, handler)):\n  " + differences(untraced, traced))


# -- 3. the same callback called again for the same event while its handler runs -------------------------------


class Reenters(Callback):
    "Counts its handler's runs; the first run starts a loop that fires the same event at it again"
    order = 5

    def __init__(self):
        self.inside, self.runs = False, 0

    def reenter(self, loop) -> None:
        self.runs += 1
        if self.inside:
            return
        self.inside = True
        try:
            loop()
        finally:
            self.inside = False


class PredsInAfterEpoch(Reenters):
    "Its after_epoch runs get_preds without removing itself: fastai fires after_epoch at it again inside"

    def after_epoch(self) -> None:
        self.reenter(lambda: self.learn.get_preds(dl=self.learn.dls.valid))


class ValidateInBeforeValidate(Reenters):
    "Its before_validate runs validate(): fastai fires before_validate at it again inside"

    def before_validate(self) -> None:
        self.reenter(self.learn.validate)


@pytest.mark.parametrize("klass, event", [(PredsInAfterEpoch, "after_epoch"),
                                          (ValidateInBeforeValidate, "before_validate")])
def test_a_call_inside_a_call_for_the_same_event_is_counted(tmp_path, klass, event):
    learn = small_learner(tmp_path)
    cb = klass()
    with spy(learn, [cb]) as s, learn.trace() as t:
        fit(learn, 2, cbs=cb)
    fired = sum(f.event == event for f in s.firings)
    nested = sum(f.event == event and f.parent != -1 for f in s.firings)
    assert nested == 2 and cb.runs == fired == 4, f"fastai fired {event} {fired}x ({nested} nested), ran it {cb.runs}x"
    assert spy_counts(s, klass.__name__, event) == (cb.runs, cb.runs), "the spy misses fastai's nested calls"
    assert trace_counts(t, klass.__name__, event) == (cb.runs, cb.runs), (
        f"{klass.__name__}.{event}: the trace has (calls, runs) = {trace_counts(t, klass.__name__, event)}; "
        f"fastai called and ran it {cb.runs}x ({nested} of them inside its own call)")
    assert_counts_match(t, s)


# -- 4. handlers and callbacks that come and go mid-fit ------------------------------------------------------


class Late(Callback):
    "Added mid-fit by AddsAndRemoves"
    order = 60

    def after_batch(self) -> None:
        pass

    def before_validate(self) -> None:
        pass


class Early(Callback):
    """Removed mid-fit by AddsAndRemoves; called before it at every event (fastai would still call it, with no
    learner, at the rest of the event it was removed in: the spy, which needs the callback's learner, misses that)"""
    order = 1

    def after_batch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass


class AddsAndRemoves(Callback):
    "At the second epoch, adds `late` to the learner and removes `early` from it"
    order = 2

    def __init__(self, late: Callback, early: Callback):
        self.late, self.early = late, early

    def before_epoch(self) -> None:
        if self.epoch == 1:
            self.learn.add_cb(self.late)
            self.learn.remove_cb(self.early)


def test_handlers_set_or_turned_off_mid_fit_are_counted(tmp_path):
    learn = small_learner(tmp_path)
    changes = ChangesHandlers()
    with spy(learn, [changes]) as s, learn.trace() as t:
        fit(learn, 2, cbs=changes)
    n_batches = len(learn.dls.train) + len(learn.dls.valid)
    # the handler set at the second epoch ran at its batches only; the one turned into noop, at the first's only
    for event in ("after_batch", "after_pred"):
        assert spy_counts(s, "ChangesHandlers", event) == (n_batches, n_batches), (
            f"fastai ran ChangesHandlers.{event} {spy_counts(s, 'ChangesHandlers', event)}, not at {n_batches} batches")
    for event in ("after_batch", "after_pred"):
        assert trace_counts(t, "ChangesHandlers", event) == spy_counts(s, "ChangesHandlers", event), (
            f"ChangesHandlers.{event}: the trace has (calls, runs) = {trace_counts(t, 'ChangesHandlers', event)}, "
            f"fastai {spy_counts(s, 'ChangesHandlers', event)}")
    timed = t.calls_df().query("callback == 'ChangesHandlers' and event == 'after_batch'")
    assert len(timed) == n_batches and (timed["dur"] >= 0).all(), f"the handler set mid-fit was not timed: {timed}"
    assert_counts_match(t, s)
    assert vars(changes)["after_pred"] is noop and not loopviz_made(vars(changes)["after_batch"]), (
        f"ChangesHandlers' own handlers were not left as its handler set them: {vars(changes)}")


def test_callbacks_added_and_removed_mid_fit_are_counted_and_left_clean(tmp_path):
    def run(path: Path, traced: bool) -> tuple[Callback, Callback, Spy | None, Any]:
        learn = small_learner(path)
        late, early = Late(), Early()
        learn.add_cb(early)
        adder = AddsAndRemoves(late, early)
        if not traced:
            fit(learn, 2, cbs=adder)
            return late, early, None, None
        with spy(learn, [adder, late]) as s, learn.trace() as t:
            fit(learn, 2, cbs=adder)
        return late, early, s, t

    plain_late, plain_early, _, _ = run(tmp_path / "untraced", traced=False)
    late, early, s, t = run(tmp_path / "traced", traced=True)
    per_epoch = sum(f.event == "after_batch" for f in s.firings) // 2
    for name in ("Late", "Early"):  # fastai calls Late at the second epoch's batches, Early at the first's
        assert spy_counts(s, name, "after_batch") == (per_epoch, per_epoch), (
            f"fastai ran {name}.after_batch {spy_counts(s, name, 'after_batch')}, not at one epoch's {per_epoch} batches")
    for name, event in (("Late", "after_batch"), ("Late", "before_validate"), ("Early", "after_batch"),
                        ("Early", "after_epoch")):
        assert trace_counts(t, name, event) == spy_counts(s, name, event), (
            f"{name}.{event}: the trace has (calls, runs) = {trace_counts(t, name, event)}, fastai "
            f"{spy_counts(s, name, event)}")
    assert_counts_match(t, s)
    for name, cb, twin in (("Late (attached)", late, plain_late), ("Early (removed)", early, plain_early)):
        assert not loopviz_values(vars(cb)), f"{name} keeps loopviz objects after the trace: {vars(cb)}"
        assert shape(vars(cb)) == shape(vars(twin)), (f"{name}'s __dict__ differs from the untraced fit's:\n  "
                                                      + differences(shape(vars(twin)), shape(vars(cb))))


# -- 5. one callback object on two learners traced at once -----------------------------------------------------


class Shared(Callback):
    "Counts its own calls; attached to two learners (fastai points its `learn` at the last)"
    order = 50

    def __init__(self):
        self.runs = 0

    def before_epoch(self) -> None:
        self.runs += 1

    def after_epoch(self) -> None:
        self.runs += 1


def test_a_callback_on_two_learners_is_counted_by_the_learner_that_called_it(tmp_path):
    a, b = small_learner(tmp_path / "a"), small_learner(tmp_path / "b")
    shared = Shared()
    a.add_cb(shared)
    b.add_cb(shared)
    assert shared.learn is b and shared in a.cbs and shared in b.cbs
    with spy(None) as s, a.trace() as ta, b.trace() as tb:
        fit(a, 1)
        fit(b, 2)
        fit(a, 1)
    # fastai calls every attached callback at every firing of its learner, and Shared's handlers have no run flag
    # to pass at epoch events: its calls by each learner are that learner's epoch firings (the spy's record)
    for learn, t, name in ((a, ta, "A"), (b, tb, "B")):
        for event in ("before_epoch", "after_epoch"):
            fired = sum(f.event == event and f.learner == id(learn) for f in s.firings)
            assert trace_counts(t, "Shared", event) == (fired, fired), (
                f"learner {name}'s trace has (calls, runs) = {trace_counts(t, 'Shared', event)} for Shared.{event}; "
                f"learner {name} fired {event} {fired}x at it")
    counted = sum(trace_counts(t, "Shared", event)[1] for t in (ta, tb) for event in ("before_epoch", "after_epoch"))
    assert counted == shared.runs == 8, f"the two traces count {counted} runs of Shared; its handlers ran {shared.runs}x"


# -- 6. calls skipped by run flags -------------------------------------------------------------------------------

REASONS = {  # why fastai's run predicate skips each class's handlers (the class's flags)
    "RunFalse": "skipped", "OffInBeforeFit": "skipped",
    "RunTrainFalse": "skipped_in_train", "RunValidFalse": "skipped_in_valid",
}


def test_skipped_calls_are_counted_with_fastais_reason(tmp_path):
    cbs = [RunFalse(), RunTrainFalse(), RunValidFalse(), OffInBeforeFit()]
    learn = small_learner(tmp_path, cbs)
    with spy(learn) as s, learn.trace() as t:
        fit(learn, 1)  # fastai sets run back to True after after_fit: RunFalse runs in the second fit
        fit(learn, 1)
    expected: Counter = Counter()
    for c in s.calls:
        if c.cls in REASONS and c.has_handler:
            if c.status == "skipped" and REASONS[c.cls] != "skipped":  # run_train/run_valid: batch events only
                assert c.event in _inner_loop and c.phase == REASONS[c.cls][len("skipped_in_"):], c
            expected[(c.cls, c.event, c.phase, "ran" if c.status == "ran" else REASONS[c.cls])] += 1
    calls = t.calls_df()
    calls = calls[calls["callback"].isin(list(REASONS))]
    got = Counter(zip(calls["callback"], calls["event"].astype(str), calls["phase"].astype(str), calls["status"]))
    assert sum(n for k, n in expected.items() if k[3] in SKIPS) > 0 and expected[("RunFalse", "after_fit", "", "ran")] == 1, (
        f"fastai did not skip and reset as expected: {dict(expected)}")
    assert got == expected, ("(callback, event, phase, status) counts differ from what fastai did:\n  "
                             + differences(dict(expected), dict(got), limit=20))
    after_fit = calls.query("callback in ['RunFalse', 'OffInBeforeFit'] and event == 'after_fit'")
    assert list(zip(after_fit["callback"], after_fit["status"])) == [
        ("RunFalse", "skipped"), ("OffInBeforeFit", "skipped"), ("RunFalse", "ran"), ("OffInBeforeFit", "skipped")], (
        f"after_fit, where fastai resets run after the call: {after_fit[['callback', 'status']].values.tolist()}")
    assert all(cb.run is True for cb in cbs), "fastai leaves run True after after_fit"


# -- 7. a class that overrides __call__ ------------------------------------------------------------------------


class VerboseWithHandler(VerboseCallback):
    "Overrides __call__ through VerboseCallback, and has a handler that super().__call__ runs"
    order = 70

    def after_batch(self) -> None:
        pass


@pytest.mark.parametrize("klass", [VerboseCallback, VerboseWithHandler])
def test_a_class_overriding_call_is_timed_once_per_call(tmp_path, capsys, klass):
    learn = small_learner(tmp_path)
    cb = klass()
    with spy(learn, [cb]) as s, learn.trace() as t:
        fit(learn, 1, cbs=cb)
    printed = capsys.readouterr().out.split()
    calls = t.calls_df()
    mine = calls[calls["callback"] == klass.__name__]
    assert len(printed) == len(s.firings), "VerboseCallback prints the event at each call"
    assert Counter(mine["event"].astype(str)) == Counter(printed), (
        f"{klass.__name__}: the trace times calls {dict(Counter(mine['event'].astype(str)))}, fastai made "
        f"{dict(Counter(printed))}")
    assert set(mine["status"]) == {"ran"}, f"{klass.__name__}: statuses {set(mine['status'])}"
    assert_counts_match(t, s)


# -- 8. handlers that take arguments, and the lean wrapper of those that take none ------------------------------


class TakesKeywords(Callback):
    "A handler with parameters: fastai passes none, the user's own code may pass some."

    def after_batch(self, **kwargs):
        self.seen = kwargs


class CallsHandlersWithArguments(Callback):
    "Calls the handlers of its neighbours with arguments, as user code might, in the middle of a fit."

    order = TakesKeywords.order + 1

    def after_batch(self):
        keywords = next(cb for cb in self.learn.cbs if isinstance(cb, TakesKeywords))
        keywords.after_batch(note=self.learn.iter)
        with pytest.raises(TypeError):
            self.after_train(1)  # takes no arguments, traced or not

    def after_train(self):
        pass


def test_handlers_taking_arguments_or_none_are_called_as_untraced(tmp_path):
    cbs = [TakesKeywords(), CallsHandlersWithArguments()]
    learn = small_learner(tmp_path, cbs)
    with spy(learn) as s, learn.trace() as t:
        fit(learn, 1)
    assert cbs[0].seen == {"note": 0}  # the user's call passed its argument through (the last: validation batch 0)
    calls = t.calls_df()
    for name, made_by_user in (("TakesKeywords", 3), ("CallsHandlersWithArguments", 0)):
        expected = sum(1 for c in s.calls if c.cls == name and c.event == "after_batch" and c.status == "ran")
        got = calls.query("callback == @name and event == 'after_batch' and status == 'ran'")
        # 2 training + 1 validation batch; a handler called inside a firing by the user's code ran in it too
        assert expected == 3 and len(got) == expected + made_by_user, (name, expected, len(got))
    assert all("after_batch" not in vars(cb) for cb in cbs)


# -- 9. a trace stopped from inside a handler ------------------------------------------------------------------


class StopsTheTrace(Callback):
    "Ends the trace it is given in the middle of the fit (the second training batch's after_batch)."

    trace: Any = None

    def after_batch(self):
        if self.trace is not None and self.training and self.learn.iter == 1:
            self.trace.stop()


def test_a_trace_stopped_inside_a_handler_lets_the_fit_go_on_untraced(tmp_path):
    cb = StopsTheTrace()
    learn = synth_learner(n_trn=4, n_val=1, path=tmp_path, cbs=[cb])
    learn.remove_cb(ProgressCallback)
    session = learn.trace()
    cb.trace = session.__enter__()
    with spy(learn) as s:
        fit(learn, 2)
    t = cb.trace
    assert not t.recording_now and "_call_one" not in vars(learn) and "after_batch" not in vars(cb)
    per_epoch = len(learn.dls.train) + len(learn.dls.valid)
    assert sum(1 for c in s.calls if c.cls == "StopsTheTrace" and c.event == "after_batch") == 2 * per_epoch  # went on
    f = t.firings_df()
    batches = f[f["event"].astype(str) == "after_batch"]
    assert len(batches) == 2 and (batches["end"] >= batches["start"]).all()  # the one it stopped in ends at 0 or more
    assert f["event"].astype(str).tolist()[0] == "before_fit" and len(f) == len(set(f.index))


# -- 10. what a traced fit's exceptions carry ------------------------------------------------------------------


class RaisesAt(Callback):
    "Raises a ValueError at its event (after `after` firings of it), chained to nothing of its own."

    def __init__(self, event: str, after: int = 0):
        self.event, self.after, self.seen = event, after, 0
        setattr(self, event, self.maybe_raise)

    def maybe_raise(self):
        self.seen += 1
        if self.seen > self.after:
            raise ValueError(f"raised at {self.event}")


def _chain(error: BaseException | None) -> list[str]:
    """The exception and every exception it was raised during or from, as `type: message`."""
    found = []
    while error is not None and len(found) < 10:
        found.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return found


@pytest.mark.parametrize("event, after", [
    ("before_fit", 0), ("before_epoch", 0), ("before_train", 0), ("before_batch", 0), ("after_step", 1),
    ("after_epoch", 0), ("before_validate", 0), ("after_fit", 0),
])
def test_a_traced_fits_exception_carries_what_the_untraced_ones_does(tmp_path, event, after):
    chains = []
    for traced in (False, True):
        learn = small_learner(tmp_path, [RaisesAt(event, after)])
        with pytest.raises(ValueError) as caught:
            if traced:
                with learn.trace():
                    fit(learn, 1)
            else:
                fit(learn, 1)
        chains.append(_chain(caught.value))
    # fastai adds which callback raised at which event to the message
    assert chains[1] == chains[0] and chains[0][0].endswith(f"raised at {event}"), chains


def test_an_event_fired_again_before_any_batch_raises_as_it_does_untraced(tmp_path):
    # the learner has no iteration yet: the trace's firing takes its general path, which must add no exception context
    chains = []
    for traced in (False, True):
        learn = small_learner(tmp_path, [RaisesAt("after_cancel_epoch", after=1)])
        with learn.trace() if traced else contextlib.nullcontext():
            learn("after_cancel_epoch")
            with pytest.raises(ValueError) as caught:
                learn("after_cancel_epoch")
        chains.append(_chain(caught.value))
    assert chains[1] == chains[0] and len(chains[0]) == 1, chains
