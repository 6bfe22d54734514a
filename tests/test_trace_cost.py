"""Tracing's own cost (`loopviz.trace.cost`): measured once, after the run, on a stand-in of the traced framework; the
estimate is the trace's firings and handler calls at those costs, and every view says it.

Whether the estimate is near what tracing really added is a timing, measured by `benchmarks/tracing_cost.py` against
the same fit untraced (RESULTS.md), not asserted here.
"""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.test_utils import synth_learner

from loopviz.adapters.fastai import cost as fastai_cost
from loopviz.adapters.fastai import tracer as fastai_tracer
from loopviz.errors import LoopvizError
from loopviz.generic import DispatchTracer
from loopviz.loop import Loop
from loopviz.trace import cost as cost_module
from loopviz.trace.cost import COST_KEY, TracingCost, measure
from loopviz.trace.diagnose import Findings
from loopviz.trace.trace import Trace


CALLS: list[int] = []  # one entry per call of Counting.after_batch


class Counting(Callback):
    """Counts its calls at every batch."""

    def after_batch(self):
        CALLS.append(1)


def fit_trace(**options) -> Trace:
    learn = synth_learner(n_trn=64, n_val=16, cbs=[Counting()])
    with learn.no_logging(), learn.no_bar(), learn.trace(**options) as t:
        learn.fit(1)
    return t


@pytest.fixture(scope="module")
def traced() -> Trace:
    return fit_trace()


def test_the_estimate_is_the_traces_firings_and_calls_at_the_measured_costs(traced: Trace) -> None:
    found = traced.tracing_cost()
    assert isinstance(found, TracingCost)
    entry = traced.meta[COST_KEY]
    assert entry["per_firing_ns"] > 0 and entry["rounds"] >= 3 and entry["batches"] >= 10
    assert 0 < found.per_firing_us < 1000 and 0 <= found.per_call_us < 1000
    assert found.firings == traced.n_firings + traced.dropped_firings
    assert found.calls == traced.n_calls + traced.dropped_calls > 0
    # the first firing of each (loop, event) and first call of each (loop, callback, event), counted from the records
    calls = traced.calls_df()
    firings = traced.firings_df()
    loops_of_calls = firings["loop"].to_numpy()[calls["firing"].to_numpy()]
    assert found.events == len(set(zip(firings["loop"], firings["event"])))
    assert found.handlers == len(set(zip(loops_of_calls, calls["callback"], calls["event"])))
    setup_ns = found.events * entry["per_event_ns"] + found.handlers * entry["per_handler_ns"]
    assert found.setup_ms == pytest.approx(setup_ns / 1e6)
    added_ns = found.firings * entry["per_firing_ns"] + found.calls * entry["per_call_ns"] + setup_ns
    assert found.added_ms == pytest.approx(added_ns / 1e6)
    assert found.share == pytest.approx(added_ns / traced.total_ns())


def test_measuring_changes_nothing_the_trace_recorded_and_leaves_fastai_as_it_was() -> None:
    t = fit_trace()
    firings, calls, total, summary = t.n_firings, t.n_calls, t.total_ns(), None
    fastai_cost._measured.cache_clear()  # measured again in this test, whatever ran before
    summary = t.summary()  # the first read measures
    assert COST_KEY in t.meta and "per_firing_ns" in t.meta[COST_KEY]
    assert (t.n_firings, t.n_calls, t.total_ns()) == (firings, calls, total)
    assert summary.equals(t.summary())
    assert not fastai_tracer._ACTIVE and "_call_one" not in vars(Learner) or Learner._call_one.__name__ == "_call_one"
    assert not getattr(Learner._call_one, "__loopviz_wrapper__", False)
    learn = synth_learner(n_trn=32, n_val=16, cbs=[Counting()])
    CALLS.clear()
    with learn.no_logging(), learn.no_bar():
        learn.fit(1)  # untraced: no stand-in's trace is left on any class
    assert len(CALLS) == 32 + 16 and "_call_one" not in vars(learn)


def test_it_is_measured_once_per_process_for_a_set_of_options(monkeypatch: pytest.MonkeyPatch) -> None:
    fastai_cost._measured.cache_clear()
    runs = []
    real = fastai_cost.measure
    monkeypatch.setattr(fastai_cost, "measure", lambda *args, **kw: runs.append(1) or real(*args, **kw))
    first, second = fit_trace(), fit_trace()
    first.tracing_cost(), second.tracing_cost(), first.tracing_cost()
    assert len(runs) == 1
    assert first.meta[COST_KEY] == second.meta[COST_KEY]
    fit_trace(changes=True).tracing_cost()  # other options: measured with them
    assert len(runs) == 2


def test_it_cannot_be_read_while_recording() -> None:
    learn = synth_learner(n_trn=16, n_val=16)
    with learn.no_logging(), learn.no_bar(), learn.trace() as t:
        with pytest.raises(LoopvizError, match="still recording"):
            t.tracing_cost()
        learn.fit(1)
    assert t.tracing_cost() is not None


def test_options_whose_cost_a_stand_in_cannot_show_say_so(traced: Trace) -> None:
    t = fit_trace(tensors=True)
    assert t.tracing_cost() is None
    assert "tensors=True" in t.meta[COST_KEY]["unmeasured"]
    assert "Tracing's own cost is unknown: with tensors=True" in str(t)


def test_a_measurement_that_fails_is_said_and_the_trace_still_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    t = fit_trace()
    t._measure_cost = lambda: 1 / 0
    assert t.tracing_cost() is None
    assert t.meta[COST_KEY] == {"unmeasured": "measuring it failed (ZeroDivisionError: division by zero)"}
    assert "Tracing's own cost is unknown: measuring it failed" in str(t)


def test_ctrl_c_while_measuring_leaves_it_to_the_next_read() -> None:
    t = fit_trace()
    measured = t._measure_cost

    def interrupted():
        raise KeyboardInterrupt

    t._measure_cost = interrupted
    with pytest.raises(KeyboardInterrupt):
        t.summary()
    assert COST_KEY not in t.meta
    t._measure_cost = measured
    assert t.tracing_cost() is not None


def test_every_view_says_it(traced: Trace, tmp_path: Path) -> None:
    found = traced.tracing_cost()
    line = f"Tracing added about"
    assert line in str(traced) and f"{found.firings} firings at {found.per_firing_us:.1f} µs" in str(traced)
    assert line in traced._repr_mimebundle_()["text/html"]
    d = traced.diagnose()
    assert line in str(d) and line in d._repr_html_()
    assert d.tracing["added_ms"] == pytest.approx(found.added_ms)
    assert Findings.from_json(json.loads(json.dumps(d.to_json()))).tracing == d.tracing
    page = traced.to_html(tmp_path / "r.html").read_text()
    assert '<p class="tracing">Tracing added about' in page


def test_a_saved_trace_keeps_what_tracing_cost(traced: Trace, tmp_path: Path) -> None:
    path = traced.save(tmp_path / "t.json.gz")
    loaded = Trace.load(path)
    assert loaded.tracing_cost() == traced.tracing_cost()
    assert "Tracing added about" in str(loaded)


def test_a_file_without_it_says_it_was_not_measured(traced: Trace, tmp_path: Path) -> None:
    data = json.loads(json.dumps(traced.to_json()))
    del data["meta"][COST_KEY]
    loaded = Trace.from_json(data)
    assert loaded.tracing_cost() is None
    assert "Tracing's own cost is unknown: not measured for this trace (a file saved before" in str(loaded)


@pytest.mark.parametrize("bad, said", [
    ({"per_firing_ns": -1.0, "per_call_ns": 1.0, "batches": 25.0, "rounds": 5.0}, "-1.0"),
    ({"per_firing_ns": "fast", "per_call_ns": 1.0, "batches": 25.0, "rounds": 5.0}, "'fast'"),
    ({"per_firing_ns": 1.0, "batches": 25.0, "rounds": 5.0}, "'per_call_ns': is null"),
    ({"per_firing_ns": 1.0, "per_call_ns": 1.0, "per_event_ns": True}, "'per_event_ns'"),
    ({"unmeasured": 3}, "'unmeasured'"),
    ([1, 2], "a list of 2"),
])
def test_a_damaged_cost_in_a_file_is_refused_by_name(traced: Trace, tmp_path: Path, bad, said: str) -> None:
    data = json.loads(json.dumps(traced.to_json()))
    data["meta"][COST_KEY] = bad
    path = tmp_path / "bad.json.gz"
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    with pytest.raises(LoopvizError, match="tracing_cost") as error:
        Trace.load(path)
    assert said in str(error.value)


def test_a_nan_cost_in_a_file_is_refused(traced: Trace, tmp_path: Path) -> None:
    data = json.loads(json.dumps(traced.to_json()))
    data["meta"][COST_KEY] = {"per_firing_ns": math.nan, "per_call_ns": 1.0, "batches": 25.0, "rounds": 5.0}
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LoopvizError, match="tracing_cost"):
        Trace.load(path)


class Loopish:
    """A minimal loop dispatching through `callback(name)` to its callbacks' handlers."""

    def __init__(self, cbs):
        self.cbs = cbs

    def callback(self, name):
        for cb in self.cbs:
            getattr(cb, name, lambda: None)()


class Handler:
    def after_batch(self):
        pass


def test_a_dispatch_tracer_and_a_hand_instrumented_loop_measure_theirs() -> None:
    obj = Loopish([Handler(), Handler()])
    with DispatchTracer(obj, "callback", callbacks=lambda: obj.cbs) as t:
        for _ in range(50):
            obj.callback("before_batch"), obj.callback("after_batch")
    found = t.tracing_cost()
    assert found is not None and found.firings == 100 and found.calls == 100
    assert t.meta[COST_KEY]["per_call_ns"] >= 0
    loop = Loop("plain")
    with loop.trace() as lt:
        for _ in range(20):
            with loop.phase("batch"):
                loop.event("after_pred")
    found = lt.tracing_cost()
    assert found is not None and found.firings == 60 and found.calls == 0 and found.per_call_us == 0


def test_a_caller_given_clock_measures_nothing() -> None:
    obj = Loopish([Handler()])
    ticks = iter(range(0, 10**9, 1000))
    with DispatchTracer(obj, "callback", callbacks=lambda: obj.cbs, now=ticks.__next__) as t:
        obj.callback("after_batch")
    assert t.tracing_cost() is None
    assert "clock given by the caller" in t.meta[COST_KEY]["unmeasured"]


class Scripted:
    """A stand-in whose firings cost what a script says: `cost[handlers, traced]` ns a steady firing and `first[...]`
    ns an event's first firing, plus `noise` ns on all but one round; time is read from a fake clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, steady: dict, first: dict, noise: float = 0.0):
        self.now, self.steady, self.first, self.noise = 0, steady, first, noise
        self.traced = False
        self.runs: dict = {}  # runs of each configuration so far: every other one is disturbed by `noise`
        monkeypatch.setattr(cost_module.time, "perf_counter_ns", lambda: self.now)
        monkeypatch.setattr(cost_module, "batch_work", lambda: lambda: None)

    def events(self, handlers: int):
        seen: set[int] = set()
        key = (handlers, self.traced)
        self.runs[key] = self.runs.get(key, 0) + 1
        noise = self.noise if self.runs[key] % 2 else 0

        def fire(i: int) -> None:
            self.now += (self.first if i not in seen else self.steady)[key] + noise
            seen.add(i)
        return [lambda i=i: fire(i) for i in range(4)]

    def tracing(self, handlers: int):
        scripted = self

        class Tracing:
            def __enter__(self):
                scripted.traced = True

            def __exit__(self, *exc):
                scripted.traced = False
        return Tracing()


def test_measure_takes_each_part_from_the_fastest_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    steady = {(0, False): 10_000, (0, True): 13_000, (2, False): 20_000, (2, True): 25_000}
    first = {(0, False): 10_000, (0, True): 23_000, (2, False): 20_000, (2, True): 85_000}
    scripted = Scripted(monkeypatch, steady, first, noise=7_000)
    found = measure(scripted.events, scripted.tracing, handlers=2, rounds=4, batches=5)
    assert found["per_firing_ns"] == 3_000  # 13 - 10 µs
    assert found["per_call_ns"] == 1_000  # (25 - 20 - 3) / 2
    assert found["per_event_ns"] == 10_000  # (23 - 10) - 3
    assert found["per_handler_ns"] == 25_000  # ((85 - 20) - 3 - 10) / 2 - 1
    assert (found["batches"], found["rounds"]) == (5, 4)


def test_measure_never_goes_below_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    steady = {(0, False): 10_000, (0, True): 9_000, (2, False): 20_000, (2, True): 19_000}
    scripted = Scripted(monkeypatch, steady, steady)
    found = measure(scripted.events, scripted.tracing, handlers=2, rounds=2, batches=3)
    assert all(found[key] == 0 for key in ("per_firing_ns", "per_call_ns", "per_event_ns", "per_handler_ns"))


def test_what_to_json_gives_is_the_callers(traced: Trace) -> None:
    data = traced.to_json()
    data["meta"][COST_KEY] = {"unmeasured": "changed by the caller"}
    data["events"].append("not an event")
    assert traced.meta[COST_KEY] != data["meta"][COST_KEY] and "not an event" not in traced.events
