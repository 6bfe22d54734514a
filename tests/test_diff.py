"""Loop diffs (added, removed, moved callbacks in every view) and trace diffs (regressions first)."""
from __future__ import annotations

import shutil
import time

import pytest
from fastai.callback.all import GradientAccumulation, MixedPrecision
from fastai.callback.core import Callback

from loopviz import LoopDiagram, LoopvizError, diff, diff_traces, render_mermaid, render_text
from loopviz.renderers.rich_tree import RichLoop
from tests.test_render_rich import render


class Mover(Callback):
    "Moves between orders"
    order = 20

    def after_batch(self):
        "Do something after each batch"


class Sleepy(Callback):
    "Sleeps after each training batch"

    def after_batch(self):
        time.sleep(0.002)


def test_golden_compact_diff(learn, golden):
    view = learn.show_training_loop(diff=[MixedPrecision(), GradientAccumulation()])
    golden("diff_compact.txt", str(view))


def test_added_removed_and_moved_callbacks(learn):
    early, late = Mover(), Mover()
    late.order = 70
    a = learn.loop_spec(cbs=[early, MixedPrecision()])
    b = learn.loop_spec(cbs=[late, GradientAccumulation()])
    d = diff(a, b)
    after_batch = {h.callback.cls: (h.diff, h.was_order) for h in d.event("after_batch", mode="train").handlers}
    assert after_batch["Mover"] == ("moved", 20)
    assert after_batch["Recorder"] == (None, None)  # Mover now runs after it, but Recorder's order is the same
    loss = {h.callback.cls: h.diff for h in d.event("after_loss", mode="train").handlers}
    assert loss == {"GradientAccumulation": "added", "MixedPrecision": "removed"}
    assert "removed MixedPrecision" in d.compared
    text = render_text(d)
    assert " - after_loss     : [-MixedPrecision, +GradientAccumulation]" in text
    assert "~Mover(20->70)" in text
    verbose = render_text(d, verbose=True)
    assert "MixedPrecision (order 10)  REMOVED" in verbose and "Mover (order 70)  MOVED (order was 20)" in verbose
    rich = render(RichLoop(d, verbose=True))
    assert "(removed)" in rich and "(added)" in rich and "(order 20 → 70)" in rich
    assert "(removed)" in render_mermaid(d) and "(added)" in render_mermaid(d)
    source = LoopDiagram(d).source
    assert 'BGCOLOR="#dcfce7"' in source and 'BGCOLOR="#fee2e2"' in source and 'BGCOLOR="#fef9c3"' in source


def test_diff_needs_loops_of_one_kind(learn):
    with pytest.raises(LoopvizError, match="cannot diff a 'fit' loop with a 'get_preds' loop"):
        diff(learn.loop_spec(), learn.loop_spec(loop="get_preds"))


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_diffed_mermaid_chart_still_parses(learn, tmp_path):
    from tests.test_render_mermaid import official_parse

    d = diff(learn.loop_spec(cbs=[MixedPrecision()]), learn.loop_spec(cbs=[GradientAccumulation()]))
    assert "OK " in official_parse(tmp_path, {"diff": render_mermaid(d, verbose=True)})


def traced_with_and_without_sleepy(learn):
    """Two traces of a two-epoch fit each, after a fit that warms the learner up: without, then with a callback that
    sleeps at every batch."""
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
        with learn.trace() as before:
            learn.fit(2)
        with learn.trace() as after:
            learn.fit(2, cbs=Sleepy())
    return before, after


def test_trace_diff_puts_the_biggest_change_first(learn):
    d = diff_traces(*traced_with_and_without_sleepy(learn))
    top = d.callbacks.iloc[0]
    assert (top["callback"], top["event"], top["phase"]) == ("Sleepy", "after_batch", "train")
    assert top["total_ms_before"] == 0 and top["total_ms_after"] >= 2 * 2 * len(learn.dls.train)
    after_batch = d.events[(d.events["name"] == "after_batch") & (d.events["phase"] == "train")].iloc[0]
    assert after_batch["ratio"] > 1
    for table in (d.events, d.callbacks):
        assert table["change_ms"].abs().is_monotonic_decreasing
    assert "Callbacks: before / after" in str(d) and "<pre" in d._repr_html_()


def test_trace_diff_threshold_totals_and_verdicts(learn):
    before, after = traced_with_and_without_sleepy(learn)
    d = diff_traces(before, after)  # the default: under 5% is too small to count
    assert d.threshold == "5%" and (d.min_change_ms, d.min_change_fraction) == (0.0, 0.05)
    sleepy = d.callbacks[d.callbacks["callback"] == "Sleepy"].iloc[0]
    assert (sleepy["verdict"], sleepy["test"], sleepy["note"]) == ("regression", "one side", "only after")
    small = d.events[d.events["change_pct"].abs() < 5]
    assert (small["verdict"] == "").all()
    every = diff_traces(before, after, min_change=0)  # no minimum: the noise alone decides
    assert every.threshold == "none" and "verdicts: any change per occurrence" in every.text()
    judged = every.events[every.events["verdict"] != ""]
    assert judged["beyond_noise"].all() and len(judged)
    none = diff_traces(before, after, min_change=["1000%", "10s"])
    assert set(none.events["verdict"]) == {""} and none.threshold == "1000% and 10000 ms"
    itself = diff_traces(before, before)  # a trace against itself: nothing changed, nothing is beyond the noise
    assert itself.events["verdict"].eq("").all() and not itself.events["beyond_noise"].any()
    totals = d.totals.set_index("total")
    assert list(totals.index) == ["run", "events and work", "callbacks"]
    assert totals.loc["run", "total_ms_before"] == pytest.approx(before.total_ns() / 1e6)
    assert totals.loc["callbacks", "total_ms_after"] == pytest.approx(after.by_callback()["total_ms"].sum())
    assert totals.loc["run", "test"] == totals.loc["events and work", "test"] == "rank test"  # on the step times
    assert totals.loc["callbacks", "verdict"] == ""  # no per-batch distribution: its rows have the verdicts
    text = d.text(limit=2, more="see below")
    assert "2 more rows" not in text and "more rows: see below" in text
    assert "verdicts: a change of at least 5% per occurrence" in text and "Mann-Whitney U p < 0.001" in text
    assert "total" in text and "events and work" in text and "Callbacks: before / after" in str(d)
    assert "verdict" in d._repr_html_()


# -- verdicts users can trust: the biggest change first, beyond the minimum and the noise ------------------------


class SleepsBeforeBatch(Callback):
    "Really sleeps before each batch"

    def before_batch(self):
        time.sleep(0.005)


class SwitchedOff(Callback):
    "Would sleep after each batch, but runs in neither training nor validation: fastai skips every call"
    run_train, run_valid = False, False

    def __init__(self):
        self.ran = 0

    def after_batch(self):
        self.ran += 1
        time.sleep(0.005)


def traced(learn, *fits, epochs=2, **options):
    """One trace per fit of `epochs` (a list of callbacks for each), after a fit that warms the learner up."""
    traces = []
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
        for cbs in fits:
            with learn.trace(**options) as t:
                learn.fit(epochs, cbs=cbs)
            traces.append(t)
    return traces


def row(table, *key):
    """The one row of a diff's table with this key ((kind, name, phase) or (callback, event, phase))."""
    found = table[(table.iloc[:, 0] == key[0]) & (table.iloc[:, 1] == key[1]) & (table.iloc[:, 2] == key[2])]
    assert len(found) == 1, key
    return found.iloc[0]


def test_the_biggest_change_comes_first_whichever_its_sign(learn):
    d = diff_traces(*traced(learn, [SleepsBeforeBatch()], []))  # the sleeping callback taken out
    top = d.events.iloc[0]
    assert (top["kind"], top["name"], top["phase"]) == ("event", "before_batch", "train")
    assert top["change_ms"] < 0 and top["verdict"] == "improvement"
    first = d.callbacks.iloc[0]
    assert (first["callback"], first["event"], first["phase"], first["note"]) == (
        "SleepsBeforeBatch", "before_batch", "train", "only before")
    for table in (d.events, d.callbacks):
        assert table["change_ms"].abs().is_monotonic_decreasing
    text = d.text(limit=3)
    assert text.splitlines()[4].split()[:4] == ["event", "│", "before_batch", "│"]  # the first row of the table
    assert "more rows: see .events / .callbacks" in text


def test_taking_mixup_out_shows_its_cost_and_calls_its_skipped_calls_nothing(learn):
    from fastai.callback.mixup import MixUp

    d = diff_traces(*traced(learn, [MixUp()], []))
    mixup = row(d.callbacks, "MixUp", "before_batch", "train")
    assert (mixup["note"], mixup["calls_after"], mixup["calls_before"]) == ("only before", 0, 2 * len(learn.dls.train))
    skipped = row(d.callbacks, "MixUp", "before_batch", "valid")  # MixUp.run_valid is False: fastai skips them
    assert (skipped["test"], skipped["verdict"], skipped["ran_before"]) == ("skipped", "", 0)
    biggest = d.events["change_ms"].abs().idxmax()
    assert biggest == 0 and "before_batch" in d.text(limit=15)


def jittery_clock(seed: int):
    """An injected host clock whose every reading is a random 0.3-30 µs after the one before (log-normal, seeded):
    two fits traced on two such clocks are the same work timed with independent noise, and always the same noise."""
    import itertools

    import numpy as np

    steps = np.random.default_rng(seed).lognormal(np.log(3_000), 0.8, 2_000_000).astype(np.int64)
    return itertools.accumulate(steps.tolist()).__next__


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6), (7, 8)])
def test_identical_fits_timed_with_independent_noise_give_no_verdicts(seeds):
    """Deterministic: the same fit, each trace on its own seeded noisy clock; nothing changed, so no verdict."""
    from fastai.test_utils import synth_learner

    from loopviz.adapters.fastai.tracer import TraceSession

    traces = []
    for seed in seeds:
        learn = synth_learner(n_trn=160, n_val=32)
        with learn.no_bar(), learn.no_logging(), TraceSession(learn, now=jittery_clock(seed)) as t:
            learn.fit(2)
        traces.append(t)
    d = diff_traces(*traces)
    assert d.tested >= 10  # the batch rows were compared
    for table in (d.events, d.callbacks, d.totals):
        assert table["verdict"].eq("").all(), table[table["verdict"] != ""]
    assert d.regressions().empty and d.warnings == []


def test_a_noisy_clock_still_shows_a_real_change():
    """The same noisy clocks, but one trace's before_batch does 2 ms more work: found, and only there."""
    from fastai.test_utils import synth_learner

    from loopviz.adapters.fastai.tracer import TraceSession

    class Busy(Callback):
        def before_batch(self):
            self.clock_owner.extra += 2_000_000

    traces = []
    for seed, cbs in ((1, []), (2, [Busy()])):
        learn = synth_learner(n_trn=160, n_val=32)
        base = jittery_clock(seed)
        owner = type("Owner", (), {"extra": 0})()
        for cb in cbs:
            cb.clock_owner = owner
        with learn.no_bar(), learn.no_logging(), TraceSession(learn, now=lambda: base() + owner.extra) as t:
            learn.fit(2, cbs=cbs)
        traces.append(t)
    d = diff_traces(*traces)
    assert row(d.events, "event", "before_batch", "train")["verdict"] == "regression"
    flagged = d.events[d.events["verdict"] == "regression"]
    assert set(flagged["name"]) <= {"before_batch"}, flagged


@pytest.mark.wallclock
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_fits_traced_twice_give_no_verdicts(seed):
    from fastai.test_utils import synth_learner
    from fastai.torch_core import set_seed

    set_seed(seed)
    learn = synth_learner()
    for _ in range(3):  # traced again while the machine's load visibly changed between the two: the same work
        before, after = traced(learn, [], [])  # took 20% longer or shorter, which no test of the traces can undo
        if abs(after.total_ns() / before.total_ns() - 1) < 0.2:
            break
    d = diff_traces(before, after)
    assert d.tested >= 10  # the batch rows were compared
    for table in (d.events, d.callbacks, d.totals):
        assert table["verdict"].eq("").all(), table[table["verdict"] != ""]
    assert d.regressions().empty
    assert d.warnings == []


def test_a_callback_that_really_sleeps_is_a_regression_on_its_rows(learn):
    before, after = traced(learn, [], [SleepsBeforeBatch()])
    d = diff_traces(before, after)
    event = row(d.events, "event", "before_batch", "train")
    assert (event["test"], event["verdict"]) == ("rank test", "regression") and event["p"] < 0.001
    assert event["count_before"] == event["count_after"] == 2 * len(learn.dls.train) and event["note"] == ""
    callback = row(d.callbacks, "SleepsBeforeBatch", "before_batch", "train")
    assert (callback["test"], callback["verdict"], callback["note"]) == ("one side", "regression", "only after")
    found = d.regressions(50)
    assert {"event before_batch (train)", "SleepsBeforeBatch.before_batch (train)"} <= set(found["row"])
    assert (found["change_pct"] >= 50).all() and d.regressions(10**9).empty


class SleepsLong(Callback):
    "Sleeps long before each batch: far longer than a step of synth_learner takes, even on a busy machine"

    def before_batch(self):
        time.sleep(0.03)


def test_the_run_is_judged_on_its_batch_step_times(learn):
    d = diff_traces(*traced(learn, [], [SleepsLong()]))
    run = d.totals.set_index("total").loc["run"]
    assert (run["test"], run["verdict"]) == ("rank test", "regression") and run["p"] < 0.001
    assert d.steps == (2 * (len(learn.dls.train) - 1 + len(learn.dls.valid) - 1),) * 2  # per epoch and phase, less one
    assert d.regressions(50).iloc[0]["row"] == "run"
    assert f"the run: its {d.steps[0]} vs {d.steps[1]} batch step times, p < 0.001" in d.text()


def test_a_skipped_call_is_never_a_regression(learn):
    switched_off = SwitchedOff()
    plain, added, both = traced(learn, [], [switched_off], [switched_off])
    assert switched_off.ran == 0  # fastai never ran it: every call was skipped
    for d in (diff_traces(plain, added, min_change=0), diff_traces(added, both, min_change=0)):
        rows = d.callbacks[d.callbacks["callback"] == "SwitchedOff"]
        assert len(rows) and (rows["test"] == "skipped").all() and (rows["verdict"] == "").all()
        assert "SwitchedOff" not in " ".join(d.regressions()["row"])


def test_a_changed_count_is_compared_per_occurrence(learn):
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
        with learn.trace() as one:
            learn.fit(1)
        with learn.trace() as two:
            learn.fit(2)
    d = diff_traces(one, two)
    batch = row(d.events, "event", "before_batch", "train")
    n = len(learn.dls.train)
    assert (batch["count_before"], batch["count_after"], batch["note"]) == (n, 2 * n, f"n {n} -> {2 * n}")
    per_batch = (batch["total_ms_after"] / (2 * n), batch["total_ms_before"] / n)
    assert batch["change_pct"] == pytest.approx(100 * (per_batch[0] / per_batch[1] - 1))  # per batch, not in all
    assert row(d.events, "event", "before_fit", "")["note"] == "too few: 1/1"


def test_rows_past_the_record_cap_are_judged_from_their_aggregates(learn):
    caps = {"max_firings": 30, "max_calls": 30}
    plain, again, sleeping = traced(learn, [], [], [SleepsBeforeBatch()], **caps)
    d = diff_traces(plain, sleeping)
    batch = row(d.events, "event", "before_batch", "train")
    assert (batch["test"], batch["note"], batch["verdict"]) == ("aggregates", "aggregates", "regression")
    assert "Past the record cap without raw records: the ranges median +- (p95 - median) apart" in d.method
    assert (diff_traces(plain, again).events["test"] == "aggregates").any()


@pytest.mark.wallclock  # two real fits' timings: on a loaded 2-core machine their noise can reach a verdict
def test_two_identical_fits_past_the_cap_get_no_verdict(learn):
    plain, again = traced(learn, [], [], max_firings=30, max_calls=30)
    same = diff_traces(plain, again)
    assert (same.events["test"] == "aggregates").any() and same.events["verdict"].eq("").all()


def test_traces_recorded_differently_are_said_so(learn):
    from dataclasses import replace

    from loopviz.trace.trace import Trace

    plain = traced(learn, [])[0]
    with learn.no_bar(), learn.no_logging():
        with learn.trace(changes=True) as changes:
            learn.fit(1)
        with learn.trace(ranges=True) as ranges:
            learn.fit(1)
        with learn.trace() as preds:
            learn.get_preds()
    assert ranges.meta["ranges"] is True and plain.meta["ranges"] is False
    assert diff_traces(plain, changes).warnings == [
        "the traces were recorded with different options (changes=False vs True): their costs differ by that "
        "alone; trace both alike"]
    assert "ranges=False vs True" in diff_traces(plain, ranges).warnings[0]
    assert any("different loops (fit vs get_preds)" in w for w in diff_traces(plain, preds).warnings)
    assert "clock='host' vs 'cuda'" in diff_traces(plain, Trace(replace(plain.data, clock="cuda"))).warnings[0]
    other = Trace(replace(plain.data, framework="fastai 9.9\x1b[31m"))
    d = diff_traces(plain, other)
    assert "different frameworks or versions" in d.warnings[0] and "\x1b" not in d.text()
    assert "warning: the traces are of different frameworks" in d.text()


@pytest.mark.parametrize("value, parsed", [
    (None, (0.0, 0.0)), (0, (0.0, 0.0)), (2, (2.0, 0.0)), ("5%", (0.0, 0.05)), ("0.5ms", (0.5, 0.0)),
    ("200us", (0.2, 0.0)), ("1s", (1000.0, 0.0)), (" 3 ", (3.0, 0.0)), (["5%", "1ms"], (1.0, 0.05)),
])
def test_min_change_parses(value, parsed):
    from loopviz.diff import parse_min_change

    assert parse_min_change(value) == pytest.approx(parsed)


@pytest.mark.parametrize("value", ["fast", "-1ms", "5%%", True, object(), "inf", "nan"])
def test_a_bad_min_change_is_a_clear_error(value):
    from loopviz.diff import parse_min_change

    with pytest.raises(LoopvizError, match="min_change must be a number of ms, or a string such as '5%'"):
        parse_min_change(value)


def test_a_trace_that_cannot_be_compared_is_named(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as done:
            learn.fit(1)
        with learn.trace() as recording:
            with pytest.raises(LoopvizError, match=r"^after: cannot compare this trace"):
                diff_traces(done, recording)


def test_the_durations_a_diff_tests_are_those_of_the_summary_rows(learn):
    from loopviz.trace.reports import row_durations
    from tests.spy import spy

    with learn.no_bar(), learn.no_logging():
        with spy(learn) as seen, learn.trace() as t:
            learn.fit(1)
    durations = row_durations(t.data)
    summary, by_cb = t.summary(), t.by_callback()
    assert set(durations.summary) == set(zip(summary["kind"], summary["name"], summary["phase"]))
    assert set(durations.by_callback) == set(zip(by_cb["callback"], by_cb["event"], by_cb["phase"]))
    fired = seen.firing_counts()
    for (kind, name, phase), values in durations.summary.items():
        if kind == "event":
            assert len(values) == fired[(name, phase)], (name, phase)
    for key, n in seen.callback_counts().items():
        if n["handler_calls"]:  # calls of a callback without a handler for the event are counted, not timed
            assert len(durations.by_callback[key]) == n["handler_calls"], key
    batches = [(e, p) for e, p in fired if e == "before_batch"]
    assert len(durations.steps) == sum(fired[key] - 1 for key in batches)  # each batch but the last of its phase
    assert all(values.dtype.kind == "i" and (values >= 0).all() for values in durations.by_callback.values())


@pytest.mark.parametrize("old, new", [
    ([5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20]),  # apart: the smallest p for 8 against 8
    ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6]),  # ties, mixed
    ([7] * 9, [7] * 9 + [8]),
    (list(range(100)), list(range(50, 150))),
])
def test_the_rank_test_agrees_with_scipy(old, new):
    from scipy.stats import mannwhitneyu

    from loopviz.trace.compare import rank_test

    p, direction = rank_test(old, new)
    expected = mannwhitneyu(new, old, alternative="two-sided", method="asymptotic")
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    assert direction == (1 if expected.statistic > len(old) * len(new) / 2 else -1)
    assert rank_test([4] * 8, [4] * 8) == (1.0, 0)


class SpendsClockTime(Callback):
    "Spends 20 readings of the injected clock (20 µs on it) before each batch"

    def __init__(self, tick):
        self.tick = tick

    def before_batch(self):
        for _ in range(20):
            self.tick()


def test_the_diff_text_is_pinned(golden):
    """Two real fits of 20 training batches traced on an injected clock (1 µs per reading), the second with a
    callback that spends 20 µs of it before each batch: every figure and verdict is the same on every run. The
    diff's text, every row, is a golden file."""
    import itertools

    from fastai.test_utils import synth_learner

    from loopviz.adapters.fastai.tracer import TraceSession

    traces = []
    for spends in (False, True):
        learn = synth_learner(n_trn=20)
        clock = itertools.count(0, 1_000)
        with learn.no_bar(), learn.no_logging(), TraceSession(learn, now=clock.__next__) as t:
            learn.fit(1, cbs=[SpendsClockTime(clock.__next__)] if spends else [])
        traces.append(t)
    d = diff_traces(*traces)
    assert row(d.callbacks, "SpendsClockTime", "before_batch", "train")["verdict"] == "regression"
    assert row(d.events, "event", "before_batch", "train")["verdict"] == "regression"
    assert row(d.events, "work", "draw", "train")["verdict"] == ""  # the same readings: no change at all
    golden("trace_diff.txt", d.text(limit=None))
