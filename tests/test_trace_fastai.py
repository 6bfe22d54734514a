"""Tracing real fastai fits: what is recorded, and that the learner is left exactly as it was."""
from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest
from time import perf_counter_ns
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner, load_learner
from fastai.test_utils import VerboseCallback, synth_learner

import loopviz
from loopviz import LoopvizError
from loopviz.adapters.fastai import tracer
from loopviz.trace.trace import Trace
from tests.callbacks import CancelBatchAt
from tests.chrome_check import assert_nested
from tests.recording import expected_handlers, expected_sequence


def quiet_fit(learn, n=1, **kwargs):
    with learn.no_bar(), learn.no_logging():
        learn.fit(n, **kwargs)


def class_state():
    return dict(Learner.__dict__), dict(Callback.__dict__)


def test_firings_follow_the_real_sequence_and_the_spec(learn):
    with learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec()
    with learn.trace() as t:
        quiet_fit(learn, 2)
    firings = t.firings_df()
    assert list(firings["event"].astype(str)) == expected_sequence(spec, 2, len(learn.dls.train), len(learn.dls.valid))
    assert t.loops == ["fit"] and (firings["status"] == "ok").all()


def test_every_callback_call_is_recorded_with_what_it_did(learn):
    with learn.no_bar(), learn.no_logging():
        spec = learn.loop_spec()
    with learn.trace() as t:
        quiet_fit(learn)
    calls = t.calls_df()
    with learn.no_bar():
        n_cbs = len(learn.cbs)
    # fastai calls every callback at every event; calls that find no handler are only counted
    assert len(calls) + t.no_handler_calls == t.n_firings * n_cbs
    assert "no_handler" not in set(calls["status"])
    ran = calls[calls["status"] == "ran"]
    observed: dict = {}
    for (event, phase), group in ran.groupby(["event", "phase"], sort=False):
        key = (event, (phase == "train") if event in {"before_batch", "after_pred", "after_loss", "before_backward",
                                                        "after_backward", "before_step", "after_step", "after_batch",
                                                        "after_cancel_batch", "after_cancel_backward"} else None)
        observed[key] = list(dict.fromkeys(group["callback"]))
    expected = {k: v for k, v in expected_handlers(spec, exclude=set()).items() if v}
    assert observed == expected
    skipped = calls[(calls["callback"] == "TrainEvalCallback") & (calls["event"] == "after_batch") & (calls["phase"] == "valid")]
    assert set(skipped["status"]) == {"skipped_in_valid"}


def test_work_between_events_is_named(learn):
    with learn.trace() as t:
        quiet_fit(learn)
    work = t.work_df()
    train = Counter(work[work["phase"] == "train"]["work"])
    n = len(learn.dls.train)
    assert {k: train[k] for k in ("forward", "loss", "backward", "step", "zero_grad")} == dict.fromkeys(
        ("forward", "loss", "backward", "step", "zero_grad"), n)
    assert train["draw"] == n + 1  # one per batch, and the loader's last next()
    assert (work["dur"] >= 0).all()
    summary = t.summary()
    assert {"draw", "forward", "backward", "step"} <= set(summary[summary["kind"] == "work"]["name"])
    assert summary["count"].sum() > 0 and summary["pct"].max() <= 100


def test_cancelled_batches_are_recorded(learn):
    with learn.trace() as t:
        quiet_fit(learn, cbs=CancelBatchAt("after_loss"))
    firings = t.firings_df()
    cancelled = firings[firings["status"] == "cancelled"]
    assert set(cancelled["event"].astype(str)) == {"after_loss"}
    assert len(cancelled) == len(learn.dls.train) + len(learn.dls.valid)
    calls = t.calls_df()
    assert set(calls[calls["status"] == "cancelled"]["callback"]) == {"CancelBatchAt"}
    assert "after_cancel_batch" in set(firings["event"].astype(str))
    assert "before_backward" not in set(firings["event"].astype(str))


class Boom(Callback):
    order = 55

    def __init__(self, error):
        self.error = error

    def after_batch(self):
        raise self.error


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_fit_that_raises_leaves_everything_as_it_was(learn, tmp_path, error):
    twin = synth_learner(path=tmp_path)  # the same failing fit, untraced: what fastai itself leaves behind
    with pytest.raises(error):
        quiet_fit(twin, cbs=Boom(error("boom")))
    before_classes = class_state()
    with pytest.raises(error):
        with learn.trace() as t:
            quiet_fit(learn, cbs=Boom(error("boom")))
    assert class_state() == before_classes
    assert set(learn.__dict__) == set(twin.__dict__)
    assert [type(cb) for cb in learn.cbs] == [type(cb) for cb in twin.cbs]
    assert [set(cb.__dict__) for cb in learn.cbs] == [set(cb.__dict__) for cb in twin.cbs]
    assert tracer.active_recorders() == 0
    errors = t.firings_df()
    assert list(errors[errors["status"] == "error"]["event"].astype(str)) == ["after_batch"]
    assert set(t.calls_df().query("status == 'error'")["callback"]) == {"Boom"}


def test_a_trace_inside_a_trace_of_the_same_learner_is_refused(learn):
    with learn.trace() as outer:
        with pytest.raises(LoopvizError, match="already being traced"):
            with learn.trace():
                pass
        quiet_fit(learn)
    assert outer.n_firings > 0
    assert tracer.active_recorders() == 0 and "_call_one" in Learner.__dict__


def test_two_learners_traced_at_once_keep_separate_traces(tmp_path):
    a, b = synth_learner(path=tmp_path), synth_learner(path=tmp_path, n_trn=20)
    with a.trace() as ta:
        with b.trace() as tb:
            quiet_fit(b)
        quiet_fit(a)
    assert ta.n_firings != tb.n_firings
    assert (ta.firings_df()["event"].astype(str) == "before_batch").sum() == len(a.dls.train) + len(a.dls.valid)
    assert (tb.firings_df()["event"].astype(str) == "before_batch").sum() == len(b.dls.train) + len(b.dls.valid)


def test_export_during_and_after_tracing_pickles_no_tracer(learn, tmp_path, monkeypatch):
    # synth_learner's TensorDatasets cannot make the empty copy export wants; keep the data instead
    monkeypatch.setattr(learn.dls, "new_empty", lambda: learn.dls, raising=False)
    with learn.trace() as t:
        quiet_fit(learn)
        learn.export(tmp_path / "during.pkl")
    learn.export(tmp_path / "after.pkl")
    for name in ("during.pkl", "after.pkl"):
        raw = (tmp_path / name).read_bytes()
        assert b"loopviz" not in raw
        assert isinstance(load_learner(tmp_path / name), Learner)
    assert t.n_firings > 0


def test_wraps_and_restores_dispatch_another_library_installed(learn, monkeypatch):
    fastai_call_one = Learner._call_one
    seen = []

    def their_call_one(self, event_name):
        seen.append(event_name)
        return fastai_call_one(self, event_name)

    monkeypatch.setattr(Learner, "_call_one", their_call_one)
    with learn.trace() as t:
        quiet_fit(learn)
    assert Learner.__dict__["_call_one"] is their_call_one
    assert len(seen) == t.n_firings
    monkeypatch.setattr(Learner, "_call_one", fastai_call_one)


@pytest.mark.parametrize("run", [True, False])
def test_callbacks_overriding_call_are_timed_once_per_event(learn, capsys, run):
    verbose_cb = VerboseCallback()
    verbose_cb.run = run  # fastai calls an overriding __call__ whatever its flags say
    with learn.trace() as t:
        quiet_fit(learn, cbs=verbose_cb)
    calls = t.calls_df()
    verbose = calls[calls["callback"] == "VerboseCallback"]
    assert len(verbose) == t.n_firings == len(capsys.readouterr().out.split()) and set(verbose["status"]) == {"ran"}
    assert "__call__" in VerboseCallback.__dict__ and not getattr(VerboseCallback.__dict__["__call__"], "__loopviz_wrapper__", False)
    capsys.readouterr()


def test_loops_are_named_after_their_entry_points(learn):
    with learn.trace() as t, learn.no_bar(), learn.no_logging():
        learn.fine_tune(1, freeze_epochs=1)
        learn.validate()
        learn.get_preds()
        learn.lr_find(num_it=5, show_plot=False)
    assert t.loops == ["fine_tune > fit_one_cycle > fit", "fine_tune > fit_one_cycle > fit", "validate", "get_preds",
                       "lr_find > fit"]


def test_past_the_cap_records_are_aggregated_and_counted(learn):
    with learn.trace(max_calls=10, max_firings=20) as t:
        quiet_fit(learn)
    assert t.n_calls == 10 and t.n_firings == 20
    assert t.dropped_calls > 0 and t.dropped_firings > 0
    summary = t.summary()
    events = summary[summary["kind"] == "event"]
    assert events["count"].sum() == 20 + t.dropped_firings
    by_cb = t.by_callback()
    assert by_cb["calls"].sum() == 10 + t.dropped_calls
    assert "past the raw-record cap" in str(t)


@pytest.mark.wallclock  # a tolerance on wall time: a loaded machine can fail it (pytest -m wallclock runs it)
def test_past_the_cap_the_run_matches_the_fits_wall_time(tmp_path):
    """A fit of 40 batches capped at 20 records: the run's total is the fit's own wall time, as the caps cut only
    the raw tables."""
    learn = synth_learner(n_trn=40, path=tmp_path)
    with learn.trace(max_calls=20, max_firings=20) as t:
        start = perf_counter_ns()
        quiet_fit(learn)
        wall = perf_counter_ns() - start
    assert t.dropped_firings > 300
    assert t.total_ns() == pytest.approx(wall, rel=0.05)


def test_past_the_cap_totals_shares_and_means_stay_exact(tmp_path):
    """A fit of 40 batches capped at 20 records: the shares and the means match the fit's counts, as the caps cut
    only the raw tables."""
    learn = synth_learner(n_trn=40, path=tmp_path)
    with learn.trace(max_calls=20, max_firings=20) as t:
        quiet_fit(learn)
    assert t.dropped_firings > 300
    summary = t.summary()
    assert summary["pct"].max() <= 100
    assert summary[summary["kind"].isin(["event", "work"])]["pct"].sum() == pytest.approx(100, abs=0.5)
    work = summary[summary["kind"] == "work"].set_index(["name", "phase"])
    assert work.loc[("forward", "train"), "count"] == 40 and work.loc[("draw", "train"), "count"] == 41
    by_cb = t.by_callback()
    assert (by_cb["mean_us"] * by_cb["calls"] / 1e3).to_numpy() == pytest.approx(by_cb["total_ms"].to_numpy())
    assert by_cb["pct"].max() <= 100


def test_a_loop_run_by_a_handler_ends_where_its_entry_point_returns(learn):
    from fastai.callback.core import FetchPredsCallback

    with learn.trace() as t:
        quiet_fit(learn, cbs=FetchPredsCallback())
    firings = t.firings_df()
    assert t.loops == ["fit", "fit > get_preds"]
    nested = firings[firings["loop"] == "fit > get_preds"]
    assert (nested["parent"] >= 0).all()  # inside the fit's after_validate
    after = firings[firings["start"] > nested["end"].max()]
    assert list(after["event"]) == ["after_validate", "after_epoch", "after_fit"][-len(after):]
    assert set(after["loop"]) == {"fit"}  # the fit's later firings are the fit's again
    assert t.loops_df()["inside_event"].tolist() == ["", "after_validate"]


def test_save_load_and_chrome_export(learn, tmp_path):
    with learn.trace() as t:
        quiet_fit(learn)
    for name in ("fit.trace.json", "fit.trace.json.gz"):
        back = Trace.load(t.save(tmp_path / name))
        assert back.summary().equals(t.summary()) and back.by_callback().equals(t.by_callback())
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(LoopvizError, match="not a loopviz trace"):
        Trace.load(tmp_path / "bad.json")
    chrome = json.loads(t.to_chrome(tmp_path / "fit.perfetto.json").read_text())
    spans = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(t.loops) + t.n_firings + t.n_calls + len(t.work_df())  # a span per loop too
    assert_nested(spans)


def test_reading_a_trace_while_it_records_is_refused(learn):
    with learn.trace() as t:
        with pytest.raises(LoopvizError, match="still recording"):
            t.summary()


def test_bad_arguments(learn, monkeypatch):
    with pytest.raises(LoopvizError, match="clock must be one of 'auto', 'host', 'cuda', 'sync', not 'gpu'"):
        learn.trace(clock="gpu")
    with pytest.raises(LoopvizError, match="max_calls must be 0 or more, not -1"):
        learn.trace(max_calls=-1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA, even where it has one
    for clock in ("cuda", "sync"):
        with pytest.raises(LoopvizError, match=f"clock='{clock}' needs a CUDA device, and torch sees none"):
            learn.trace(clock=clock)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_clocks_are_valid_where_there_is_cuda(learn):
    for clock, name in (("cuda", "cuda"), ("sync", "sync")):
        assert learn.trace(clock=clock).clock.name == name


def test_text_and_html_reports(learn):
    with learn.trace() as t:
        quiet_fit(learn)
    text = str(t)
    assert text.startswith("Trace of fastai") and "Events and work" in text and "Callbacks (costliest first)" in text
    assert "<pre" in t._repr_html_()
    assert loopviz.__version__
    pickle.dumps(t.to_json())


def test_before_fit_is_at_no_epoch_on_a_fresh_and_on_a_reused_learner():
    """A reused learner still holds the last fit's epoch and iteration as before_fit fires: the firing, and the
    state changes its handlers make, are at no epoch (-1), as on a fresh learner, not at the last fit's position."""
    learn = synth_learner(n_trn=3, n_val=2)
    seen = []
    for _ in range(2):
        with learn.no_bar(), learn.no_logging(), learn.trace(changes=True) as t:
            learn.fit(1)
        f = t.firings_df()
        first = f[f["event"].astype(str) == "before_fit"].iloc[0]
        c = t.changes()
        at_fit = c[c["event"] == "before_fit"]
        seen.append((int(first["epoch"]), int(first["iter"]), set(at_fit["first_epoch"]), set(at_fit["first_iter"])))
    assert seen == [(-1, -1, {-1}, {-1})] * 2
