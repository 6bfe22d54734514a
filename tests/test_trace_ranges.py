"""learn.trace(ranges=True): fastai's loop inside torch.profiler, checked against the operators the profiler saw."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest
from fastai.callback.core import Callback, CancelFitException
from fastai.test_utils import synth_learner
from torch.profiler import ProfilerActivity, profile

from loopviz.errors import LoopvizError

PREFIX = "fastai "


def profiled(learn, run, **trace):
    """The profiler's events and the trace of `run()`, traced with ranges=True inside a CPU torch.profiler."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with learn.no_bar(), learn.no_logging():
            with profile(activities=[ProfilerActivity.CPU]) as prof, learn.trace(ranges=True, **trace) as t:
                try:
                    run()
                except CancelFitException:
                    pass
    return list(prof.events()), t


def spans(events, name=None, prefix=PREFIX):
    """(start, end, name) of the events whose name starts with `prefix` (or is `name`)."""
    return [(e.time_range.start, e.time_range.end, e.name) for e in events
            if (e.name == name if name else e.name.startswith(prefix))]


def assert_nested(ranges):
    """Every two ranges are disjoint or one holds the other: a profiler draws crossing ranges badly."""
    ordered = sorted(ranges, key=lambda r: (r[0], -r[1]))
    open_ends: list[tuple[float, str]] = []
    for start, end, name in ordered:
        while open_ends and start >= open_ends[-1][0]:
            open_ends.pop()
        assert not open_ends or end <= open_ends[-1][0], f"{name} crosses {open_ends[-1][1]}"
        open_ends.append((end, name))


def inside(op, ranges):
    return any(start <= op[0] and op[1] <= end for start, end, _ in ranges)


def test_every_event_firing_has_a_range_and_operators_sit_in_the_right_work(tmp_path):
    learn = synth_learner(n_trn=4, n_val=2, path=tmp_path)
    events, t = profiled(learn, lambda: learn.fit(1))
    ranges = spans(events)
    fired = Counter(f"{PREFIX}{e} ({p})" if p else f"{PREFIX}{e}"
                    for e, p in zip(t.firings_df()["event"].astype(str), t.firings_df()["phase"]))
    assert {name: n for name, n in Counter(r[2] for r in ranges).items() if name in fired} == dict(fired)
    assert_nested(ranges)
    forward = spans(events, f"{PREFIX}forward")  # each range of work named by what the work is, as the summary does
    backward = spans(events, f"{PREFIX}backward")
    assert {r[2] for r in ranges} >= {f"{PREFIX}draw", f"{PREFIX}loss", f"{PREFIX}step", f"{PREFIX}zero_grad"}
    muls = spans(events, "aten::mul")  # the model's forward is a*x+b (RegModel); Recorder's loss average multiplies too
    batches = int((t.firings_df()["event"].astype(str) == "before_batch").sum())
    assert sum(inside(op, forward) for op in muls) == batches  # one forward per batch, each inside its forward work
    assert all(inside(op, ranges) for op in muls)  # none outside fastai's events, handlers and work
    grads = spans(events, None, "autograd::engine")
    assert grads and all(inside(op, backward) for op in grads)


def test_handler_calls_have_ranges_inside_their_event(tmp_path):
    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path)
    events, t = profiled(learn, lambda: learn.fit(1))
    ranges = spans(events)
    recorder = [r for r in ranges if r[2] == f"{PREFIX}Recorder.after_batch"]
    batches = [r for r in ranges if r[2].startswith(f"{PREFIX}after_batch (")]
    assert len(recorder) == len(batches) == 4  # 3 training batches and 1 validation batch
    assert all(inside(r, batches) for r in recorder)


class StopsAtSecondBatch(Callback):
    "Cancels the fit in the middle of the second batch"

    def after_loss(self):
        if self.iter == 1:
            raise CancelFitException()


class PredsInHandler(Callback):
    "Runs get_preds inside its handler: a nested loop's ranges inside this call's"
    order = 5

    def after_train(self):
        self.learn.get_preds(dl=self.learn.dls.valid)


@pytest.mark.parametrize("cb", [StopsAtSecondBatch, PredsInHandler])
def test_ranges_nest_when_a_fit_is_cancelled_or_a_handler_runs_a_loop(tmp_path, cb):
    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path, cbs=[cb()])
    events, _ = profiled(learn, lambda: learn.fit(1))
    ranges = spans(events)
    assert ranges
    assert_nested(ranges)
    if cb is PredsInHandler:
        [call] = [r for r in ranges if r[2] == f"{PREFIX}PredsInHandler.after_train"]
        assert any(r[2] == f"{PREFIX}before_validate (valid)" and inside(r, [call]) for r in ranges)


def test_without_a_profiler_ranges_cost_a_check_and_change_nothing(tmp_path):
    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        with learn.trace(ranges=True) as with_ranges:
            learn.fit(1)
        with learn.trace() as plain:
            learn.fit(1)
    assert with_ranges.n_firings == plain.n_firings and with_ranges.n_calls == plain.n_calls
    with pytest.raises(LoopvizError, match="ranges must be True or False"):
        learn.trace(ranges="yes")
