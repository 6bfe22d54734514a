"""The truth matrix: loopviz's static spec and its trace, checked against what fastai really did.

Every case builds a tiny learner, runs one loop (fit, fit_one_cycle, fine_tune, validate, get_preds or
lr_find) inside `tests.spy.spy` (an independent record of fastai's own dispatch, written without loopviz)
and inside `learn.trace()`, and checks:

a. spec: `learn.loop_spec(loop, cbs)` names, for every firing, the callbacks whose handlers fastai ran
   there, in order (a firing cut short by an exception ran a prefix of them); events fire in the spec's
   order; after_create as seen when the learner was built. Not asserted where no static view can know
   (nested loops from FetchPredsCallback, `run` switched by user code during the fit).
b. counts: `t.by_callback()` ran+cancelled+errors and calls, `t.no_handler_calls`, and `t.summary()`
   event counts equal the spy's.
c. shares: every pct in [0, 100]; event and work rows tile the run (pct sums to 100); mean * count = total.
d. totals: `t.total_ns()` within 5 % of the loop call's wall time: a wall-clock tolerance, so a test of its own
   marked `wallclock`, left out of the default run (`pytest -m wallclock` runs it).

All failures of a case are collected and reported together.
"""
from __future__ import annotations

import inspect
import math
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable

import fastai.callback.all  # noqa: F401  (ProgressCallback is a default callback, as in a notebook)
import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.all import (
    BnFreeze, CollectDataCallback, CSVLogger, EarlyStoppingCallback, GradientAccumulation, GradientClip, MixUp,
    ModelResetter, ParamScheduler, ReduceLROnPlateau, SaveModelCallback, SchedLin, ShortEpochCallback,
    ShowGraphCallback, TerminateOnNaNCallback,
)
from fastai.callback import core as fastai_core
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import (
    Callback, CancelBackwardException, CancelBatchException, CancelEpochException, CancelFitException,
    CancelStepException, CancelTrainException, CancelValidException, FetchPredsCallback,
)
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.hook import ActivationStats
from fastai.callback.preds import MCDropoutCallback
from fastai.learner import Learner
from fastcore.basics import noop
from fastai.test_utils import RegModel, VerboseCallback, synth_learner

from tests.spy import Spy, phase_key, spy

# -- learners ------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _tabular_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 64
    df = pd.DataFrame({"c1": rng.choice(["a", "b", "c"], n), "c2": rng.choice(["x", "y"], n),
                       "n1": rng.normal(size=n), "n2": rng.normal(size=n)})
    df["y"] = (2 * df.n1 + df.n2 + (df.c1 == "a")).astype("float32")
    return df


@lru_cache(maxsize=None)
def _ratings_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 64
    return pd.DataFrame({"user": rng.integers(0, 8, n), "item": rng.integers(0, 6, n),
                         "rating": rng.integers(1, 6, n).astype("float32")})


def make_synth(path: Path, cbs: list, model: Callable | None, default_cbs: bool) -> Learner:
    kwargs = {} if model is None else {"model": model()}
    return synth_learner(n_trn=3, n_val=2, path=path, cbs=cbs, default_cbs=default_cbs, **kwargs)


def make_synth_weighted(path: Path, cbs: list, model: Callable | None, default_cbs: bool) -> Learner:
    "synth_learner whose training DataLoader is fastai's WeightedDL (weighted sampling, a DataLoader not a callback)"
    from fastai.callback.data import WeightedDL
    from fastai.data.core import DataLoaders
    from fastai.test_utils import synth_dbunch

    dls = synth_dbunch(n_train=3, n_valid=2)
    train = WeightedDL(dls.train.dataset, bs=16, wgts=np.linspace(1, 2, len(dls.train.dataset)), drop_last=True)
    return synth_learner(data=DataLoaders(train, dls.valid), path=path, cbs=cbs, default_cbs=default_cbs)


def make_tabular(path: Path, cbs: list, model: Callable | None, default_cbs: bool) -> Learner:
    from fastai.tabular.all import Categorify, Normalize, RegressionBlock, TabularDataLoaders, tabular_learner

    dls = TabularDataLoaders.from_df(
        _tabular_frame(), path=path, procs=[Categorify, Normalize], cat_names=["c1", "c2"], cont_names=["n1", "n2"],
        y_names="y", y_block=RegressionBlock(), valid_idx=list(range(48, 64)), bs=16)
    return tabular_learner(dls, layers=[8], path=path, cbs=cbs, default_cbs=default_cbs)


def make_collab(path: Path, cbs: list, model: Callable | None, default_cbs: bool) -> Learner:
    from fastai.collab import CollabDataLoaders, collab_learner

    dls = CollabDataLoaders.from_df(_ratings_frame(), bs=16, valid_pct=0.25, seed=0, path=path)
    return collab_learner(dls, n_factors=4, y_range=(0.5, 5.5), path=path, cbs=cbs, default_cbs=default_cbs)


LEARNERS = {"synth": make_synth, "tabular": make_tabular, "collab": make_collab, "synth_weighted": make_synth_weighted}
BASE_LEARNERS = ("synth", "tabular", "collab")

# -- loops ---------------------------------------------------------------------------------------------

LOOPS: dict[str, Callable[..., Any]] = {
    "fit": lambda learn, cbs, **kw: learn.fit(kw.pop("n_epoch", 1), cbs=cbs, **kw),
    "fit_one_cycle": lambda learn, cbs, **kw: learn.fit_one_cycle(1, cbs=cbs, **kw),
    "fine_tune": lambda learn, cbs, **kw: learn.fine_tune(1, freeze_epochs=1, cbs=cbs, **kw),
    "validate": lambda learn, cbs, **kw: learn.validate(cbs=cbs, **kw),
    "get_preds": lambda learn, cbs, **kw: learn.get_preds(cbs=cbs, **kw),
    "lr_find": lambda learn, cbs, **kw: learn.lr_find(num_it=5, show_plot=False, **kw),  # LRFinder, no cbs=
}

# -- callbacks written for the matrix ------------------------------------------------------------------


class ResettableModel(RegModel):
    "RegModel with the reset() that ModelResetter (and TrainEvalCallback.before_fit) calls"

    def reset(self) -> None:
        pass


class DelegatingModel(RegModel):
    "A model with a method named like an event: every callback's `after_pred` reaches it through GetAttr"

    def after_pred(self) -> None:
        pass


class Flagged(Callback):
    "Handlers at fit, train/validate and batch level, to see where run flags let them run"
    order = 30

    def before_fit(self): pass
    def before_train(self): pass
    def before_validate(self): pass
    def after_pred(self): pass
    def after_batch(self): pass
    def after_fit(self): pass


class RunFalse(Flagged):
    run = False


class RunTrainFalse(Flagged):
    run_train = False


class RunValidFalse(Flagged):
    run_valid = False


class OffInBeforeFit(Flagged):
    "Switches itself off for the rest of the fit (as TrackerCallback does under lr_find)"

    def before_fit(self):
        self.run = False


class OffAtSecondBatch(Flagged):
    "Switches itself off after the second training batch"

    def after_batch(self):
        if self.training and self.iter == 1:
            self.run = False


class CallOverrider(Callback):
    "Overrides __call__ with run=False: fastai calls __call__ regardless of run flags"
    run = False

    def __init__(self):
        self.seen = 0

    def __call__(self, event_name):
        self.seen += 1


class EvalInBeforeBatch(Callback):
    "Puts the model in eval mode in before_batch while training (learn.training stays True)"
    order = 5

    def before_batch(self):
        if self.training:
            self.learn.model.eval()


class Canceller(Callback):
    "Raises `exc` at `event` (in `phase` only, when given; at most `times` times, when given)"
    order = 20

    def __init__(self, exc: type, event: str, phase: str | None = None, times: int | None = None):
        self.exc, self.phase, self.left = exc, phase, times
        setattr(self, event, self._raise)  # an instance handler, as Callback(after_loss=f) sets one

    def _raise(self):
        if self.phase is not None and ("train" if self.training else "valid") != self.phase:
            return
        if self.left is not None:
            if self.left <= 0:
                return
            self.left -= 1
        raise self.exc()


class ChangesHandlers(Callback):
    "Gains an after_batch handler at its second epoch, and turns its after_pred handler into fastcore's noop then"
    order = 30

    def before_epoch(self):
        if self.epoch == 1:
            self.after_batch = lambda: None  # an event seen without a handler now has one
            self.after_pred = noop  # and one seen with a handler has none (getcallable gives noop)

    def after_pred(self):
        pass


class PredsInHandler(Callback):
    "Runs get_preds inside its after_train handler without removing itself: the nested loop fires events at it again"
    order = 5

    def after_train(self):
        self.learn.get_preds(dl=self.learn.dls.valid)

    def before_validate(self):
        pass


def log_start(self):
    "A handler passed as a keyword argument (fastai's funcs_kwargs)"


# -- the cases -----------------------------------------------------------------------------------------


def _none() -> list:
    return []


@dataclass
class Case:
    learner: str = "synth"
    loop: str = "fit"
    cbs: Callable[[], list] = _none  # passed to the loop call
    learner_cbs: Callable[[], list] = _none  # passed to the learner's constructor
    model: Callable | None = None  # synth only: the model class
    default_cbs: bool = True
    bar: bool = False  # keep ProgressCallback (it prints; the output is captured)
    trace: dict = field(default_factory=dict)  # learn.trace() arguments (caps)
    spec: bool = True  # assert the static spec
    raises: type | None = None  # the loop call lets this exception out (fastai's behaviour)
    loop_kwargs: dict = field(default_factory=dict)
    spec_kwargs: dict = field(default_factory=dict)
    setup: Callable[[Learner], None] | None = None


def case(name: str, *marks: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(**kwargs), id=name, marks=marks)


def skipped(name: str, reason: str) -> Any:
    return pytest.param(Case(), id=name, marks=pytest.mark.skip(reason=reason))


def _one(cb_factory: Callable[[], Any]) -> Callable[[], list]:
    return lambda: [cb_factory()]


def _set_learner_handler(learn: Learner) -> None:
    learn.before_epoch = lambda: None  # a learner attribute named like an event: every callback delegates to it


CASES = [
    # every loop on every learner, default callbacks
    *(case(f"{loop}-{learner}", learner=learner, loop=loop) for learner in BASE_LEARNERS for loop in LOOPS),
    # fastai callbacks
    case("GradientClip-fit-synth", cbs=_one(GradientClip)),
    case("GradientAccumulation-fit-synth", cbs=_one(lambda: GradientAccumulation(n_acc=32))),
    case("GradientAccumulation-fit_one_cycle-tabular", learner="tabular", loop="fit_one_cycle",
         cbs=_one(lambda: GradientAccumulation(n_acc=32))),
    case("MixedPrecision_bf16-fit-synth", cbs=_one(lambda: MixedPrecision(amp_mode="bf16"))),
    case("MixedPrecision_fp16-fit-tabular", learner="tabular", cbs=_one(MixedPrecision)),
    case("SaveModelCallback-fit-synth", cbs=_one(SaveModelCallback)),
    case("SaveModelCallback-lr_find-synth", loop="lr_find", learner_cbs=_one(SaveModelCallback)),
    case("SaveModelCallback-fit_one_cycle-collab", learner="collab", loop="fit_one_cycle", cbs=_one(SaveModelCallback)),
    case("EarlyStoppingCallback-fit-collab", learner="collab", cbs=_one(EarlyStoppingCallback)),
    case("EarlyStoppingCallback-get_preds-synth", loop="get_preds", cbs=_one(EarlyStoppingCallback)),
    case("ReduceLROnPlateau-fit-synth", cbs=_one(ReduceLROnPlateau)),
    # fastai itself fails here: in validate() Recorder.values has no train_loss, so TrackerCallback.after_epoch
    # indexes past its end (IndexError, raised in `with learn:`'s after_epoch; after_fit never fires)
    case("ReduceLROnPlateau-validate-synth", loop="validate", cbs=_one(ReduceLROnPlateau), raises=IndexError),
    case("TerminateOnNaNCallback-fit-synth", cbs=_one(TerminateOnNaNCallback)),
    case("ShortEpochCallback-fit-synth", cbs=_one(lambda: ShortEpochCallback(pct=0.5))),
    case("CSVLogger-fit-synth", cbs=_one(CSVLogger)),
    case("CSVLogger-fine_tune-tabular", learner="tabular", loop="fine_tune", cbs=_one(CSVLogger)),
    case("ShowGraphCallback-fit-synth", bar=True, cbs=_one(ShowGraphCallback)),
    case("ShowGraphCallback-lr_find-synth", bar=True, loop="lr_find", learner_cbs=_one(ShowGraphCallback)),
    case("ProgressCallback-fit-tabular", learner="tabular", bar=True),
    case("ProgressCallback-get_preds-synth", loop="get_preds", bar=True),
    case("CollectDataCallback-fit-synth", cbs=_one(CollectDataCallback)),
    case("ChannelsLast-fit-synth", cbs=_one(ChannelsLast)),
    case("BnFreeze-fit-tabular", learner="tabular", cbs=_one(BnFreeze)),
    case("BnFreeze-fine_tune-tabular", learner="tabular", loop="fine_tune", cbs=_one(BnFreeze)),
    case("ParamScheduler-fit-synth", cbs=_one(lambda: ParamScheduler({"lr": SchedLin(1e-3, 1e-2)}))),
    case("FetchPredsCallback-fit-synth", cbs=_one(FetchPredsCallback), spec=False),
    case("FetchPredsCallback-fit-tabular", learner="tabular", cbs=_one(FetchPredsCallback), spec=False),
    case("MixUp-fit-synth", cbs=_one(MixUp)),
    case("ActivationStats-fit-tabular", learner="tabular", cbs=_one(lambda: ActivationStats(with_hist=True))),
    case("ModelResetter-fit-synth", model=ResettableModel, cbs=_one(ModelResetter)),
    case("MCDropoutCallback-get_preds-tabular", learner="tabular", loop="get_preds", cbs=_one(MCDropoutCallback)),
    case("SkipToEpoch-fit_start_epoch-synth", loop_kwargs={"n_epoch": 2, "start_epoch": 1},
         spec_kwargs={"start_epoch": 1}),
    case("WeightedDL-fit_one_cycle-synth", learner="synth_weighted", loop="fit_one_cycle"),
    case("handlers_change_mid_fit-fit-synth", cbs=_one(ChangesHandlers), loop_kwargs={"n_epoch": 2}, spec=False),
    case("get_preds_in_handler-fit-synth", cbs=_one(PredsInHandler), spec=False),
    case("funcs_kwargs_handler-fit-collab", learner="collab", cbs=lambda: [Callback(before_fit=log_start)]),
    skipped("CutMix-fit-synth", "CutMix needs 4-D image batches (bs, c, h, w); synth gives (bs, 1): "
            "ValueError 'not enough values to unpack (expected 4, got 2)' in CutMix.before_batch"),
    skipped("MixUp-fit-tabular", "MixUp lerps xb[0]; tabular's input is (cats, conts): AttributeError "
            "'tuple' object has no attribute 'device' in MixUp.before_batch"),
    skipped("MixUp-fit-collab", "MixUp lerps collab's integer user/item ids into floats: RuntimeError "
            "'expected dtype long int for weight' in MixUp.before_batch"),
    skipped("ModelResetter-fit-tabular", "TabularModel has no reset(): AttributeError in ModelResetter.before_train"),
    skipped("ShowGraphCallback-no_bar-synth", "ShowGraphCallback asserts hasattr(learn, 'progress') in before_fit, "
            "so it cannot run inside learn.no_bar() (it is covered with the bar on)"),
    # every cancel exception, raised by a small callback at a chosen event
    case("CancelBatch-after_loss-fit-synth", cbs=lambda: [Canceller(CancelBatchException, "after_loss")]),
    case("CancelBatch-before_batch_valid-get_preds-collab", learner="collab", loop="get_preds",
         cbs=lambda: [Canceller(CancelBatchException, "before_batch", "valid")]),
    case("CancelBackward-before_backward-fit-synth",
         cbs=lambda: [Canceller(CancelBackwardException, "before_backward", times=1)]),
    case("CancelStep-before_step-fit-synth", cbs=lambda: [Canceller(CancelStepException, "before_step")]),
    case("CancelStep-before_step-fit_one_cycle-tabular", learner="tabular", loop="fit_one_cycle",
         cbs=lambda: [Canceller(CancelStepException, "before_step")]),
    case("CancelTrain-after_batch-fit-synth",
         cbs=lambda: [Canceller(CancelTrainException, "after_batch", "train", times=1)]),
    case("CancelValid-before_validate-fit-synth", cbs=lambda: [Canceller(CancelValidException, "before_validate")]),
    case("CancelValid-after_pred-get_preds-tabular", learner="tabular", loop="get_preds",
         cbs=lambda: [Canceller(CancelValidException, "after_pred", "valid")]),
    case("CancelEpoch-after_train-fit-synth", cbs=lambda: [Canceller(CancelEpochException, "after_train")]),
    case("CancelEpoch-escapes-validate-collab", learner="collab", loop="validate", raises=CancelEpochException,
         cbs=lambda: [Canceller(CancelEpochException, "after_loss", "valid")]),
    case("CancelFit-before_epoch-fit-synth", cbs=lambda: [Canceller(CancelFitException, "before_epoch")]),
    case("CancelFit-after_batch-fine_tune-collab", learner="collab", loop="fine_tune",
         cbs=lambda: [Canceller(CancelFitException, "after_batch", "train", times=1)]),
    # run flags
    case("run_False-fit-synth", cbs=_one(RunFalse)),
    case("run_train_False-fit-synth", cbs=_one(RunTrainFalse)),
    case("run_valid_False-fit-synth", cbs=_one(RunValidFalse)),
    case("run_valid_False-get_preds-synth", loop="get_preds", cbs=_one(RunValidFalse)),
    case("run_train_False-lr_find-tabular", learner="tabular", loop="lr_find", learner_cbs=_one(RunTrainFalse)),
    case("run_off_in_before_fit-fit-synth", cbs=_one(OffInBeforeFit), spec=False),
    case("run_off_at_second_batch-fit-synth", cbs=_one(OffAtSecondBatch), spec=False),
    # __call__ overriders
    case("VerboseCallback-fit-synth", learner_cbs=_one(VerboseCallback)),
    case("VerboseCallback-validate-collab", learner="collab", loop="validate", cbs=_one(VerboseCallback)),
    case("call_overrider_run_False-fit-synth", cbs=_one(CallOverrider)),
    # handlers delegated through GetAttr
    case("model_after_pred-fit-synth", model=DelegatingModel),
    case("model_after_pred-get_preds-synth", loop="get_preds", model=DelegatingModel),
    case("learner_before_epoch-fit-synth", setup=_set_learner_handler),
    # model.eval() during training; no default callbacks
    case("model_eval_in_before_batch-fit-synth", cbs=_one(EvalInBeforeBatch)),
    case("model_eval_in_before_batch-fit-tabular", learner="tabular", cbs=_one(EvalInBeforeBatch)),
    case("default_cbs_False-fit-synth", default_cbs=False, cbs=lambda: [RunValidFalse(), RunTrainFalse()]),
    case("default_cbs_False-get_preds-synth", default_cbs=False, loop="get_preds"),
    case("default_cbs_False-validate-collab", learner="collab", default_cbs=False, loop="validate",
         cbs=_one(RunTrainFalse)),
    # lr_find's suggestions read learn.recorder, which default_cbs=False leaves out: no suggestions. The fit runs
    # as validation (learn.training stays False), so LRFinder (run_valid=False) never runs a batch handler.
    case("default_cbs_False-lr_find-synth", default_cbs=False, loop="lr_find", loop_kwargs={"suggest_funcs": None}),
    # capped traces
    case("cap5-fit-synth", trace={"max_calls": 5, "max_firings": 5}, cbs=_one(GradientClip)),
    case("cap5-fine_tune-collab", learner="collab", loop="fine_tune", trace={"max_calls": 5, "max_firings": 5}),
    case("cap5-validate-tabular", learner="tabular", loop="validate", trace={"max_calls": 5, "max_firings": 5}),
    case("cap0-fit_one_cycle-tabular", learner="tabular", loop="fit_one_cycle", trace={"max_calls": 0, "max_firings": 0}),
    case("cap0-get_preds-synth", loop="get_preds", trace={"max_calls": 0, "max_firings": 0}),
    case("cap0-lr_find-collab", learner="collab", loop="lr_find", trace={"max_calls": 0, "max_firings": 0}),
    case("cap0-CancelBatch-fit-synth", trace={"max_calls": 0, "max_firings": 0},
         cbs=lambda: [Canceller(CancelBatchException, "after_loss")]),
]

# -- (a) the static spec against what fastai ran -------------------------------------------------------


def _spec_key(event: Any) -> tuple[str, str]:
    """The spy's (event, phase) key for a spec event: the phase of batch-level events is the spec's mode."""
    name = event.name
    if name in fastai_core._inner_loop or name == "after_cancel_step":
        return name, event.mode or ""
    return name, phase_key(name, False)


def spec_problems(spec: Any, s: Spy, created: Spy) -> list[str]:
    problems: list[str] = []
    expected: dict[tuple[str, str], list[list[str]]] = {}
    order: list[tuple[str, str]] = []
    for event in spec.events():
        key = _spec_key(event)
        running = [h.callback.cls for h in event.running]
        if running not in expected.setdefault(key, []):
            expected[key].append(running)
        if event.role != "cancel" and event.name != "after_create" and key not in order:
            order.append(key)

    if ("after_create", "") in expected:
        seen = [f.ran for f in created.firings if f.event == "after_create"]
        if seen and seen[0] not in expected[("after_create", "")]:
            problems.append(f"spec after_create: fastai ran {seen[0]} when the learner was built; "
                            f"spec says {expected[('after_create', '')]}")

    mismatches: dict[tuple[str, str], list] = {}
    for f in s.firings:
        key = (f.event, f.phase)
        lists = expected.get(key)
        if lists is None:
            mismatches.setdefault(key, [f.ran, None, 0])[2] += 1
            continue
        ok = any(f.ran == names for names in lists) or (
            f.raised_by is not None and any(names[:len(f.ran)] == f.ran for names in lists))
        if not ok:
            mismatches.setdefault(key, [f.ran, lists, 0])[2] += 1
    for key, (ran, lists, n) in mismatches.items():
        if lists is None:
            problems.append(f"spec: {key} fired {n}x (ran {ran}) but the spec has no such event/phase")
        else:
            problems.append(f"spec {key}: fastai ran {ran} ({n} firing(s)); spec says {lists if len(lists) > 1 else lists[0]}")

    if not s.cancelled():
        fired = list(dict.fromkeys((f.event, f.phase) for f in s.firings if f.parent == -1))
        if fired != order:
            problems.append(f"spec order: events fired (first firing order) {fired}\n    spec predicts {order}")
    return problems


# -- (b) trace counts against the spy's ---------------------------------------------------------------


def count_problems(t: Any, s: Spy) -> list[str]:
    problems: list[str] = []
    by_cb = t.by_callback()
    rows = {(r.callback, r.event, r.phase): r for r in by_cb.itertuples(index=False)}
    spied = s.callback_counts()
    for key in sorted(set(rows) | {k for k, n in spied.items() if n["handler_calls"] or n["ran"]}):
        n = spied.get(key)
        spy_ran = n["ran"] if n else 0
        spy_calls = n["handler_calls"] if n else 0
        r = rows.get(key)
        trace_ran = int(r.ran + r.cancelled + r.errors) if r is not None else 0
        trace_calls = int(r.calls) if r is not None else 0
        spy_skipped = n["skipped_handler"] if n else 0
        trace_skipped = int(r.skipped) if r is not None else 0
        if spy_ran != trace_ran:
            problems.append(f"by_callback {key}: ran+cancelled+errors = {trace_ran}, fastai ran it {spy_ran}x")
        if spy_calls != trace_calls:
            problems.append(f"by_callback {key}: calls = {trace_calls}, fastai called it {spy_calls}x with a handler there")
        if spy_skipped != trace_skipped:
            problems.append(f"by_callback {key}: skipped = {trace_skipped}, fastai's run flags skipped its handler "
                            f"{spy_skipped}x")
    # a call of a callback with nothing to run for the event, whether or not its run flags let fastai look
    without_handler = s.no_handler_calls() + sum(c.status == "skipped" and not c.has_handler for c in s.calls)
    if t.no_handler_calls != without_handler:
        problems.append(f"no_handler_calls = {t.no_handler_calls}; fastai called callbacks {without_handler}x at "
                        "events they have no handler for")
    # top-level firings are the 'event' rows; firings inside another one (a loop run by a handler) 'nested event'
    summary = t.summary()
    for kind, nested in (("event", False), ("nested event", True)):
        rows_ = summary[summary["kind"] == kind]
        counted = {(r.name, r.phase): int(r.count) for r in rows_.itertuples(index=False)}
        real = Counter((f.event, f.phase) for f in s.firings if (f.parent != -1) == nested)
        for key in sorted(set(counted) | set(real)):
            if counted.get(key, 0) != real.get(key, 0):
                problems.append(f"summary {kind} {key}: count = {counted.get(key, 0)}, fastai fired it "
                                f"{real.get(key, 0)}x{' inside another firing' if nested else ' at top level'}")
    return problems


# -- (c) report shares -------------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)


def share_problems(t: Any) -> list[str]:
    problems: list[str] = []
    summary, by_cb = t.summary(), t.by_callback()
    for name, df in (("summary", summary), ("by_callback", by_cb)):
        bad = df[(df["pct"] < 0) | (df["pct"] > 100)]
        if len(bad):
            cols = [c for c in ("kind", "callback", "name", "event", "phase", "pct") if c in bad.columns]
            problems.append(f"{name}: pct outside [0, 100]: {bad[cols].head(5).to_dict('records')}")
    tiles = summary[summary["kind"].isin(["event", "work"])]
    total_pct = float(tiles["pct"].sum())
    if abs(total_pct - 100) > 1:
        parts = tiles.groupby("kind")["pct"].sum().round(2).to_dict()
        problems.append(f"summary: event+work pct sums to {total_pct:.2f}, not 100 ({parts}; rows: "
                        f"{list(tiles[tiles['pct'] > 20][['kind', 'name', 'pct']].itertuples(index=False, name=None))})")
    for r in summary.itertuples(index=False):
        if r.count and not _close(r.mean_ms * r.count, r.total_ms):
            problems.append(f"summary {(r.kind, r.name, r.phase)}: mean_ms*count = {r.mean_ms * r.count:.6f} "
                            f"!= total_ms {r.total_ms:.6f}")
    for r in by_cb.itertuples(index=False):
        if r.calls and not _close(r.mean_us * r.calls / 1000, r.total_ms):
            problems.append(f"by_callback {(r.callback, r.event, r.phase)}: mean_us*calls/1000 = "
                            f"{r.mean_us * r.calls / 1000:.6f} != total_ms {r.total_ms:.6f}")
    return problems


# -- (d) run totals ----------------------------------------------------------------------------------


def total_problems(t: Any, s: Spy, wall_ns: int, start_ns: int, loop: str) -> list[str]:
    total = t.total_ns()
    lowest = wall_ns * 0.95
    if loop == "fine_tune":  # two fits; what runs before the first and between them is outside both
        fits = [f for f in s.top_level() if f.event in ("before_fit", "after_fit")]
        starts = [f.start_ns for f in fits if f.event == "before_fit"]
        ends = [f.end_ns for f in fits if f.event == "after_fit"]
        outside = (starts[0] - start_ns) + (starts[1] - ends[0]) if len(starts) == 2 and ends else 0
        lowest = wall_ns * 0.95 - outside
    if not lowest <= total <= wall_ns * 1.05:
        return [f"total_ns = {total / 1e6:.3f} ms; the loop call took {wall_ns / 1e6:.3f} ms "
                f"({100 * total / wall_ns:.1f} %; allowed {100 * max(lowest, 0) / wall_ns:.1f}-105 %)"]
    return []


# -- the test ----------------------------------------------------------------------------------------


def _loop_spec(learn: Learner, c: Case, cbs: list) -> Any:
    kwargs = dict(c.spec_kwargs)
    if "start_epoch" in kwargs and "start_epoch" not in inspect.signature(learn.loop_spec).parameters:
        from fastai.learner import SkipToEpoch  # what fit(start_epoch=...) adds, as a previewed callback

        cbs = [*cbs, SkipToEpoch(kwargs.pop("start_epoch"))]
    return learn.loop_spec(loop=c.loop, cbs=cbs or None, **kwargs)


@dataclass
class Ran:
    """One case run under the spy and the trace: what the checks read."""

    t: Any
    s: Spy
    spec: Any
    created: Any
    start: int
    wall: int


def _run_case(c: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> Ran:
    """Build the case's learner and run its loop inside the spy and the trace, timed by the wall clock."""
    import loopviz  # noqa: F401  (patches Learner.trace and Learner.loop_spec)

    torch.manual_seed(0)
    learner_cbs = c.learner_cbs()
    with spy(None, learner_cbs) as created:
        learn = LEARNERS[c.learner](tmp_path, learner_cbs, c.model, c.default_cbs)
    if c.setup is not None:
        c.setup(learn)
    cbs = c.cbs()
    assert not (cbs and c.loop == "lr_find"), "lr_find takes no cbs: attach them to the learner"
    with ExitStack() as quiet:
        if not c.bar:
            quiet.enter_context(learn.no_bar())
        quiet.enter_context(learn.no_logging())
        spec = _loop_spec(learn, c, cbs) if c.spec else None
        with spy(learn, cbs) as s:
            with learn.trace(**c.trace) as t:
                start = perf_counter_ns()
                try:
                    LOOPS[c.loop](learn, cbs, **c.loop_kwargs)
                except BaseException as e:
                    if c.raises is None or not isinstance(e, c.raises):
                        raise
                wall = perf_counter_ns() - start
    capsys.readouterr()
    assert s.firings, "the spy saw no firing"
    return Ran(t, s, spec, created, start, wall)


def _assert_none(problems: list[str]) -> None:
    assert not problems, f"{len(problems)} mismatch(es) with fastai:\n  - " + "\n  - ".join(problems)


@pytest.mark.parametrize("c", CASES)
def test_truth_matrix(c: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ran = _run_case(c, tmp_path, capsys)
    problems: list[str] = []
    if ran.s.displaced:
        problems.append(f"a wrapper installed on top of the spy was not removed: {ran.s.displaced}")
    if ran.spec is not None:
        problems += spec_problems(ran.spec, ran.s, ran.created)
    problems += count_problems(ran.t, ran.s)
    problems += share_problems(ran.t)
    _assert_none(problems)


@pytest.mark.wallclock  # a tolerance on wall time: a loaded machine can fail it (pytest -m wallclock runs it)
@pytest.mark.parametrize("c", CASES)
def test_truth_matrix_total_matches_wall_time(c: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ran = _run_case(c, tmp_path, capsys)
    _assert_none(total_problems(ran.t, ran.s, ran.wall, ran.start, c.loop))
